"""Restarts judged by the training ``L_NESY``: the label-free score of a start, and a fresh draw.

A start that names the digits wrongly (digits 4-9 read as 3-8 and two digits in one cluster, a
local optimum renaming cannot leave) ends with a training ``L_NESY`` far above a healthy one's
(0.65-0.71 against 0.1-0.25 on MNIST addition): no label is needed to see it. The CLI
(:func:`gedi_nesy.train.train_nesy`, ``--restarts``) and the plugin (``train_model(restarts=...)``)
draw such a start afresh and keep the start with the lowest training ``L_NESY``.

A start can also sit on a plateau at the loss of uniform predictions (:func:`uniform_nesy`) for
most of its epochs: with 100 MNIST-addition queries (two optimizer steps an epoch) 6 of 12 starts
were still there after 100 of their 500 epochs, and 4 of those 6 ended wrongly named or unlearnt.
``--restart-plateau E`` cuts a start still on it after ``E`` epochs (:class:`StartCut`) and
draws the next one there, instead of after the whole run; ``--plateau-cuts C`` lets ``C`` such
cuts not count as restarts (:class:`StartBudget`).

With 100 queries a start can fit its 200 images one by one under the right sums while naming
every other image wrongly: its training ``L_NESY`` looks healthy. ``--restart-judge neighbours``
judges it by :func:`neighbour_nesy` instead, the training queries scored through each image's
nearest pool images that no query shows. A start can also name its clusters wrongly in a way
that satisfies its queries, through the neighbours too, as well as a healthy start does; but it
reads the pool's other images as no healthy start does. ``--restart-agree A`` keeps a start only
where two finished starts read those images alike (:func:`agreement`, Cohen's kappa ``A`` or more);
``--restart-quorum Q``, where ``Q`` starts do, every two of them (:class:`StartReadings`): two starts
of one seed share their queries, and can share a wrong scheme.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from gedi_core.errors import GediError
from gedi_core.models import evaluating
from gedi_nesy.renaming import network_log_probs, subset_loss, subset_query_probs
from gedi_nesy.step import batch_inputs, gedi_networks

MAX_CHUNK = 512  # queries scored at once
NEIGHBOURS = 5  # pool images whose predictions stand in for a training image's (neighbour_nesy)
POOL_IMAGE = re.compile(r"\[?tensor\(train\((\d+)\)\)\]?")  # a network's input: training-pool image I
CHUNK_EDGES = 2e7  # circuit edges scored at once (about 160 MB a float64 tensor over them)
HARD_EPS = 1e-6  # the probability a hardened reading leaves each other class (hardened)


def training_nesy(model, queries: Sequence, chunk: int | None = None) -> float:
    """``L_NESY`` of the networks as they are (evaluation mode, no shifts) over the training
    queries: the label-free score by which restarts are judged."""
    return nesy_means(model, queries, chunk)[0]


def uniform_nesy(model, queries: Sequence, chunk: int | None = None) -> float:
    """:func:`training_nesy` of networks that predict every class alike: the loss of a start
    that has learnt nothing, against which a plateau is judged."""
    return nesy_means(model, queries, chunk, uniform=True)[1]


def score_chunk(model, most: int = MAX_CHUNK) -> int:
    """Queries scored at once: at most ``most``, and few enough that a chunk's circuits hold at
    most ``CHUNK_EDGES`` edges (the batched engine's circuits as compiled so far; at N = 100 of
    long addition, 1.1M edges a query, a chunk of 512 took 18 GB)."""
    stats = getattr(model.solver, "stats", None)
    if not isinstance(stats, dict) or not stats.get("shapes"):
        return most
    per_query = max(1.0, stats.get("circuit_nodes", 0) / stats["shapes"])
    return max(1, min(most, int(CHUNK_EDGES // per_query)))


def neighbour_nesy(model, queries: Sequence, pool: Tensor, k: int = NEIGHBOURS, chunk: int | None = None) -> float:
    """:func:`training_nesy` with each training image's ``p(y|x)`` replaced by the mean ``p(y|x)``
    of its ``k`` nearest images of ``pool`` (the training pool's images, ``tensor(train(I))``)
    that no query shows, nearest by the cosine of their pixels (:class:`NeighbourPredictions`).

    What the networks' reading of other images says of the training queries: with 100
    MNIST-addition queries a start can fit its 200 images one by one under the right sums while
    it names every other image wrongly (training ``L_NESY`` 0.10-0.28 at digit accuracy 0.37-0.49,
    as low as healthy starts), and this loss sees it (docs/trials/nesy.md, "2026-12-02"). The
    pool's other images are read without labels, and only to judge."""
    return nesy_means(model, queries, chunk, transform=NeighbourPredictions(model, queries, pool, k))[0]


def neighbour_errors(model, queries: Sequence, pool: Tensor, k: int = NEIGHBOURS, hard: bool = True,
                     chunk: int | None = None) -> float:
    """The mean of ``|t - p(q)|`` over ``queries`` (``t``: a query's target probability) when each
    training image is read through its ``k`` nearest pool images as in :func:`neighbour_nesy`:
    with ``hard``, as the most probable class of their mean ``p(y|x)`` (:func:`hardened`), so that
    it is the share of queries false under that reading; else as the mean itself, the share
    expected false. Queries without a proof are left out.

    Unlike :func:`neighbour_nesy`, a loss, it is bounded: a query read confidently wrong counts
    once, not by how sure the networks are of it. At 100 MNIST-addition queries the loss put
    wrongly named starts (digit accuracy 0.35-0.44) at 0.78-0.83 and a healthy one at 0.84
    (docs/trials/nesy.md, "2026-12-02")."""
    chunk = chunk or score_chunk(model)
    read = NeighbourPredictions(model, queries, pool, k, hard=hard)
    nets = list(gedi_networks(model))
    pairs: list[tuple[Any, float | None]] = []
    for i in range(0, len(queries), chunk):
        part = list(queries[i:i + chunk])
        per_net, log_probs = network_log_probs(model, part, nets)
        pairs += zip(part, subset_query_probs(model, part, per_net, read(per_net, log_probs)))
    return false_share(pairs)


def false_share(pairs: Iterable[tuple[Any, float | None]]) -> float:
    """The mean ``|t - p(q)|`` over ``(query, p(q))`` pairs (``t``: the query's target
    probability), those without a proof (``p`` None) left out; NaN where none has one."""
    errors = [abs(float(q.p) - p) for q, p in pairs if p is not None]
    return sum(errors) / len(errors) if errors else float("nan")


def hardened(log_probs: Tensor, eps: float = HARD_EPS) -> Tensor:
    """Each row of ``log_probs`` as its most probable class: ``log(1 - (C-1) eps)`` there and
    ``log eps`` elsewhere (finite, so that the engines' log-space sums stay defined)."""
    classes = log_probs.shape[1]
    out = torch.full_like(log_probs, math.log(eps))
    return out.scatter_(1, log_probs.argmax(1, keepdim=True), math.log1p(-(classes - 1) * eps))


class NeighbourPredictions:
    """``(per_net, log_probs) -> log_probs`` with the row of each input ``tensor(train(I))``
    replaced by the log of the mean prediction over ``I``'s ``k`` nearest pool images outside
    ``queries``; inputs of other sources keep their own row. With ``hard`` every row is then
    :func:`hardened`. The networks read the pool once, in evaluation mode."""

    def __init__(self, model, queries: Sequence, pool: Tensor, k: int, hard: bool = False) -> None:
        self.model, self.pool, self.k, self.hard = model, pool, k, hard
        self.others = outside_queries(model, queries, len(pool), k)
        self.unit = torch.nn.functional.normalize(pool.flatten(1).float(), dim=1)
        self.others_unit = self.unit[self.others]  # the candidates, indexed once
        self.probs: dict[str, Tensor] = {}

    def pool_probs(self, name: str) -> Tensor:
        if name not in self.probs:
            self.probs[name] = image_probs(gedi_networks(self.model)[name].network_module, self.pool[self.others])
        return self.probs[name]

    def __call__(self, per_net: Mapping[str, list], log_probs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = dict(log_probs)
        for name, lp in log_probs.items():
            rows = [(j, i) for j, i in enumerate(map(pool_index, per_net[name])) if i is not None]
            if not rows:
                continue
            at, idx = (torch.tensor(v) for v in zip(*rows))
            near = (self.unit[idx] @ self.others_unit.T).topk(self.k, dim=1).indices
            out[name] = lp.clone()
            out[name][at] = self.pool_probs(name)[near].mean(1).clamp_min(1e-12).log().to(lp.dtype)
        return {name: hardened(lp) for name, lp in out.items()} if self.hard else out


def image_probs(module, images: Tensor) -> Tensor:
    """``p(y|x)`` of a GEDI network's module on ``images`` (evaluation mode, no gradient, in
    chunks of 1000)."""
    with evaluating(module), torch.no_grad():
        return torch.cat([torch.softmax(module.logits(x).float(), -1) for x in images.split(1000)])


def pool_readings(model, queries: Sequence, pool: Tensor) -> Tensor:
    """The most probable class each GEDI network gives every image of ``pool`` (the training
    pool's images) that no query shows (:func:`outside_queries`), the networks' readings one
    after the other: what :func:`agreement` compares between starts (:class:`StartReadings`)."""
    return network_readings(model, pool[outside_queries(model, queries, len(pool), 1)])


def network_readings(model, images: Tensor) -> Tensor:
    """The most probable class each GEDI network of ``model`` gives ``images``, one network's
    readings after another's."""
    return torch.cat([image_probs(net.network_module, images).argmax(1) for net in gedi_networks(model).values()])


def agreement(a: Tensor, b: Tensor) -> float:
    """How alike two starts' :func:`pool_readings` are beyond chance: Cohen's kappa, ``(p_o - p_e)
    / (1 - p_e)`` with ``p_o`` the share of images read alike and ``p_e`` the share expected from
    each start's class frequencies alone; 0 where that is undefined (both read every image alike),
    so that two collapsed starts do not agree.

    A label-free judge of a start against another: with 100 MNIST-addition queries a wrongly
    named start (digit accuracy 0.32) satisfies as many of its queries as a healthy one, through
    the pool's neighbours too, but reads the validation images as the healthy starts of seven
    other seeds do at kappa 0.22-0.25, while those agree among themselves at 0.76-0.91
    (docs/trials/nesy.md, "2026-12-02: a judge from the queries cannot tell")."""
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():  # sklearn warns where kappa is 0/0 (one class only)
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(a.numpy(), b.numpy())
    return float(kappa) if math.isfinite(kappa) else 0.0


class StartReadings:
    """Each finished start's :func:`pool_readings`, by start, and the kappa of every two of them
    (:func:`agreement`, each computed once): the groups of starts that read the pool alike."""

    def __init__(self, readings: Mapping[int, Tensor] | None = None) -> None:
        self.readings: dict[int, Tensor] = dict(readings or {})
        self.kappas: dict[tuple[int, int], float] = {}

    def add(self, k: int, readings: Tensor) -> None:
        """Start ``k``'s readings."""
        self.readings[k] = readings

    def kappa(self, i: int, j: int) -> float:
        """:func:`agreement` of starts ``i`` and ``j``."""
        if (i, j) not in self.kappas:
            self.kappas[i, j] = self.kappas[j, i] = agreement(self.readings[i], self.readings[j])
        return self.kappas[i, j]

    def most_alike(self, k: int) -> float:
        """The largest kappa between start ``k`` and another start (0 where there is none)."""
        return max((self.kappa(k, j) for j in self.readings if j != k), default=0.0)

    def group(self, k: int, bound: float) -> list[int]:
        """The largest group of starts that holds start ``k`` and whose every two agree at
        ``bound`` or more, in start order; of groups alike in size, the one whose least agreeing
        two agree most, then the earliest. ``[k]`` where no other start agrees with ``k``."""
        near = [j for j in sorted(self.readings) if j != k and self.kappa(k, j) >= bound]
        for size in range(len(near), 0, -1):
            groups = [g for g in itertools.combinations(near, size)
                      if all(self.kappa(i, j) >= bound for i, j in itertools.combinations(g, 2))]
            if groups:
                least = lambda g: min(self.kappa(i, j) for i, j in itertools.combinations((k, *g), 2))  # noqa: E731
                return sorted((k, *max(groups, key=lambda g: (least(g), [-i for i in g]))))
        return [k]

    def largest_groups(self, bound: float, admit: Callable[[list[int]], bool] = lambda group: True) -> list[int]:
        """The starts in the largest of the groups that :meth:`group` gives for each start and that
        ``admit`` lets in (a start that agrees with none is a group of one), in start order; ``[]``
        where ``admit`` lets none in."""
        groups = [g for g in (self.group(k, bound) for k in self.readings) if admit(g)]
        size = max(map(len, groups), default=0)
        return sorted({k for g in groups if len(g) == size for k in g})


def outside_queries(model, queries: Sequence, pool_size: int, k: int) -> Tensor:
    """The indices of the training-pool images no query shows, the candidates of
    :class:`NeighbourPredictions`; queries that show no pool image, or fewer than ``k``
    candidates, are a :class:`GediError` (before training, from :func:`gedi_nesy.train.train_nesy`)."""
    shown = {pool_index(t) for inputs in batch_inputs(model, queries).values() for t in inputs} - {None}
    if not shown:
        raise GediError("restart judge 'neighbours': the training queries show no training-pool image "
                        "(tensor(train(I))); judge by the training L_NESY (--restart-judge train)")
    others = torch.tensor([i for i in range(pool_size) if i not in shown], dtype=torch.long)
    if len(others) < k:
        raise GediError(f"restart judge 'neighbours': {len(others)} training-pool images outside the queries, "
                        f"fewer than the {k} neighbours it needs; judge by the training L_NESY "
                        "(--restart-judge train)")
    return others


def pool_index(term) -> int | None:
    """``I`` of the input term ``tensor(train(I))`` (or ``[tensor(train(I))]``), else None."""
    found = POOL_IMAGE.fullmatch(str(term))
    return int(found.group(1)) if found else None


def nesy_means(model, queries: Sequence, chunk: int | None = None, uniform: bool = False,
               transform: Callable[[Mapping[str, list], Mapping[str, Tensor]], Mapping[str, Tensor]] | None = None,
               ) -> tuple[float, float]:
    """The mean ``L_NESY`` over ``queries``, in chunks of ``chunk`` (default :func:`score_chunk`),
    of the networks as they are (evaluation mode, no shifts; ``transform`` maps the chunk's
    inputs and log-probabilities to the ones scored) and, with ``uniform``, of networks that
    predict every class alike (NaN without), from one forward pass per chunk; a chunk whose
    loss is not finite is left out of that mean."""
    chunk = chunk or score_chunk(model)
    nets = list(gedi_networks(model))
    sums = [[0.0, 0], [0.0, 0]]  # (weighted total, queries) of each mean
    for i in range(0, len(queries), chunk):
        part = list(queries[i:i + chunk])
        per_net, log_probs = network_log_probs(model, part, nets)
        kinds = [log_probs if transform is None else transform(per_net, log_probs)]
        if uniform:
            kinds.append({name: torch.full_like(lp, -math.log(lp.shape[1])) for name, lp in log_probs.items()})
        for acc, lps in zip(sums, kinds):
            loss = subset_loss(model, part, per_net, lps)
            if math.isfinite(loss):
                acc[0], acc[1] = acc[0] + loss * len(part), acc[1] + len(part)
    trained, flat = (total / n if n else float("nan") for total, n in sums)
    return trained, flat


class StartCut(Exception):
    """A start cut on the plateau (:func:`gedi_nesy.start.plateau_hook`): raised from ``fit``'s
    ``after_epoch`` at epoch ``epoch`` with the training ``L_NESY`` ``loss`` (``uniform``: that
    of uniform predictions)."""

    def __init__(self, epoch: int, loss: float, uniform: float) -> None:
        super().__init__(f"epoch {epoch}: training L_NESY {loss:.4f}, uniform predictions {uniform:.4f}")
        self.epoch, self.loss, self.uniform = epoch, loss, uniform


@dataclass
class StartBudget:
    """The starts a run has left after its first: ``restarts`` for starts that ran to the end
    and were judged above the bound, and ``cuts`` for starts cut on the plateau that do not count
    as restarts (a cut beyond them counts as one). A start may be cut only where another follows."""

    restarts: int
    cuts: int = 0

    def may_cut(self) -> bool:
        """Whether the next start may be cut on the plateau (another start would follow it)."""
        return self.restarts + self.cuts > 0

    def spend(self, cut: bool) -> bool:
        """Count a start that was cut (``cut``) or judged above the bound; whether another follows."""
        if cut and self.cuts:
            self.cuts -= 1
            return True
        if self.restarts:
            self.restarts -= 1
            return True
        return False


def reinitialize(model, seed: int) -> None:
    """Draw every GEDI network's parameters afresh (each layer's own initialisation, seeded)."""
    torch.manual_seed(seed)
    for net in gedi_networks(model).values():
        for layer in net.network_module.modules():
            if layer is not net.network_module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def network_weights(model) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of every network's weights, by network name (what a start ended with)."""
    return {n: {k: v.detach().clone() for k, v in net.network_module.state_dict().items()}
            for n, net in model.networks.items()}


def restore_weights(model, weights: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load :func:`network_weights` (or a checkpoint's networks) back into the model's networks."""
    for name, net in model.networks.items():
        net.network_module.load_state_dict(weights[name])


def lowest(losses: Sequence[float], cut: Sequence[bool] = ()) -> int:
    """The start to keep: the lowest training ``L_NESY`` (the first of equals) among the starts
    not cut on the plateau (``cut[k]``), among all where every start was cut."""
    cut = list(cut) or [False] * len(losses)
    pool = [i for i in range(len(losses)) if not cut[i]] or list(range(len(losses)))
    return min(pool, key=lambda i: (losses[i], i))

