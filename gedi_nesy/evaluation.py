"""How well a trained NeSy model names the digits and answers the queries, on the test pool, or on
the validation pool for a run with ``data.validation`` (``evaluated_on`` says which).

- ``digit_acc``: the network's output read through the program's domain, without any matching
  (what the program needs); ``nmi`` and ``cluster_acc`` (Hungarian-matched) of its clusters;
- ``query_acc``: the share of evaluation queries (test, or validation with ``data.validation``) whose probability is on the same side of 0.5 as their
  target. Read it beside ``digit_acc``, never alone: the MNIST-addition queries are all positive
  (``a + b = c``, target 1), and a collapsed network that names every image 0 makes each of them
  true (``0 + 0 = 0``), so it scores ``query_acc`` 1.0 with ``digit_acc`` near 0.1.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from gedi_core.metrics import clustering_report
from gedi_core.models import evaluating
from gedi_nesy.engine import is_batched
from gedi_nesy.network import GEDINetwork
from gedi_nesy.step import batch_inputs, clear_caches, forward_batch, gedi_networks, query_probabilities


def domain_values(domain: Sequence) -> Tensor:
    """The domain's values as integers (their indices when the domain is not integer)."""
    try:
        return torch.tensor([int(str(v)) for v in domain])
    except ValueError:
        return torch.arange(len(domain))


@torch.no_grad()
def digit_metrics(module: GEDINetwork, images: Tensor, labels: Tensor, domain: Sequence) -> dict[str, float]:
    """Digit accuracy through the domain, NMI, matched cluster accuracy and the largest class share."""
    with evaluating(module):
        preds = torch.cat([module.logits(c).argmax(-1).cpu() for c in images.split(1000)])
    named = domain_values(domain)[preds]
    rep = clustering_report(labels, preds)
    counts = torch.bincount(preds, minlength=len(domain)).float()
    return {
        "digit_acc": float((named == labels.cpu()).double().mean()),
        "nmi": rep["nmi"],
        "cluster_acc": rep["acc"],
        "max_cluster_share": float(counts.max()) / max(len(preds), 1),
    }


@torch.no_grad()
def query_accuracy(model, queries: Sequence, batch_size: int = 100) -> float:
    """Share of queries whose probability is on the same side of 0.5 as their target."""
    if not queries:
        return float("nan")
    modules = [net.network_module for net in model.networks.values()]
    correct = 0
    with evaluating(*modules):
        for start in range(0, len(queries), batch_size):
            batch = queries[start : start + batch_size]
            if not is_batched(model):  # the batched engine runs the networks itself, once per batch
                forward_batch(model, batch_inputs(model, batch))
            for p, q in zip(query_probabilities(model, batch), batch):
                value = 0.0 if p is None else float(p)
                correct += int((value >= 0.5) == (float(q.p) >= 0.5))
            clear_caches(model)
    return correct / len(queries)


def evaluate_nesy(model, pools, domains: Mapping[str, Sequence], test_queries: Sequence | None = None,
                  with_queries: bool = True) -> dict[str, Any]:
    """Digit accuracy / NMI of each GEDI network on the evaluation images (the first network's at
    the top level, every network's under ``networks``) and the query accuracy on ``test_queries``.

    The evaluation images are the pools' validation pool when they have one, else the test pool:
    ``evaluated_on`` says which (``validation`` | ``test``); with a validation pool, the test pool
    is not part of the pools at all.
    ``domains``: each network's ``nn`` domain (:func:`gedi_nesy.program.network_domains`)."""
    per_net: dict[str, dict[str, float]] = {}
    for name, net in gedi_networks(model).items():
        if name in domains:
            per_net[name] = digit_metrics(net.network_module, pools.eval_x, pools.eval_y, domains[name])
    metrics: dict[str, Any] = dict(next(iter(per_net.values()))) if per_net else {}
    metrics["evaluated_on"] = pools.evaluated_on
    if len(per_net) > 1:
        metrics["networks"] = per_net
    if with_queries and test_queries is not None:
        metrics["query_acc"] = query_accuracy(model, test_queries)
    return metrics
