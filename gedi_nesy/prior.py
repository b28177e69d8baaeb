"""The class prior a program implies: what the training queries say about each digit's frequency.

A GEDI network's ``L_PRIOR`` pulls the batch mean of ``p(y|x)`` towards a prior ``pi``. The paper
takes ``pi`` uniform and lists "the class prior is assumed known" as a limitation. In a NeSy task
the program and the queries carry that prior: in MNIST addition with three images (``a + b = c``,
``c <= 9``) digit ``d`` appears with frequency ``(21 - d) / 165``, not ``1/10``.

:func:`program_prior` reads it off the circuits, for any program: with every neural predicate
uninformative (uniform ``p(y|x)``), the posterior of image ``i``'s class given its query's
observed value is ``p(y_i = k | q) = d log p(q) / d log p_ik`` (``p(q)`` is multilinear in the
``p_ik`` of each image), one backward pass of ``L_NESY`` per batch. The prior is the mean of these
posteriors over the images of the training queries (each image once per batch, as ``p_bar``
counts it); for the addition task it is the counted ``(21 - d) / 165`` (up to the sample of queries).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from gedi_core.errors import GediError
from gedi_nesy.engine import is_batched
from gedi_nesy.step import batch_inputs, clear_caches, gedi_networks, nesy_loss_of_log_probs


def program_prior(model, queries: Sequence, batch_size: int = 60, floor: float = 1e-3) -> dict[str, Tensor]:
    """Per GEDI network of ``model``, the class marginal its training ``queries`` imply under
    uninformative networks (module docstring); classes below ``floor`` are raised to it (a
    class the queries never support keeps a little mass) and the prior renormalised."""
    nets = gedi_networks(model)
    if not nets:
        raise GediError("program_prior: the model has no GEDI network (its networks are not built with "
                        "gedi_nesy.gedi_network), so there is no class prior to give")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GediError(f"program_prior: batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(floor, (int, float)) and 0 <= floor < 1):
        raise GediError(f"program_prior: floor must lie in [0, 1), got {floor!r}")
    if not len(queries):
        raise GediError("program_prior: no queries")
    totals: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(queries), batch_size):
        batch = list(queries[start:start + batch_size])
        per_net = {n: inputs for n, inputs in batch_inputs(model, batch).items() if n in nets}
        logp = {n: torch.full((len(inputs), nets[n].network_module.num_clusters),
                              -math.log(nets[n].network_module.num_clusters), requires_grad=True)
                for n, inputs in per_net.items()}
        if not is_batched(model):  # DeepProbLog's engines read the networks' caches
            for n, lp in logp.items():
                for j, term in enumerate(per_net[n]):
                    nets[n].cache[term] = lp[j].exp()
        loss, _ = nesy_loss_of_log_probs(model, batch, per_net, logp)
        clear_caches(model)
        if loss is None:
            continue
        grads = torch.autograd.grad(loss, list(logp.values()), allow_unused=True)
        for n, g in zip(logp, grads):
            if g is None:
                continue
            post = -g  # sum over this batch's queries of each image's posterior (times 1/len(batch))
            mass = post.sum(-1, keepdim=True)
            keep = mass.squeeze(-1) > 1e-12
            rows = post[keep] / mass[keep]
            totals[n] = totals.get(n, 0) + rows.sum(0)
            counts[n] = counts.get(n, 0) + int(keep.sum())
    missing = [n for n in nets if counts.get(n, 0) == 0]
    if missing:
        raise GediError(f"prior_target program: no training query depends on network(s) {', '.join(missing)}")
    priors = {}
    for n in nets:
        prior = (totals[n] / counts[n]).clamp_min(floor)
        priors[n] = (prior / prior.sum()).detach()
    return priors
