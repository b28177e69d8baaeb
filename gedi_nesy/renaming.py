"""Renaming: a label-free repair of clusters the program has named wrongly.

``L_GEN``, ``L_INV`` and a uniform ``L_PRIOR`` do not change when the classes of a GEDI
network are permuted: they shape the clusters, and only the program (``L_NESY``) says which
cluster is which digit. Gradient descent names the clusters a small step at a time and can settle
with a few digits named wrongly while the clusters themselves are good: training ``L_NESY`` then
stays high (0.71 where healthy runs of MNIST addition reach 0.2), with no label needed to see it.

A permutation ``pi`` of the head's rows renames the clusters without changing them (the new
output ``j`` is the old output ``pi[j]``). :func:`search_renaming` looks for the permutation that
lowers ``L_NESY`` on a fixed subset of the training queries, by greedy local search: each round
evaluates every swap of two classes and every shift of a run of classes by one (:func:`moves`) on
the network's outputs (computed once) and keeps the best, while it lowers the loss by more than
``min_gain`` (relative); :func:`apply_renaming` permutes
the head in place, and with it the optimizer's per-parameter state and the objective's running
class marginal, so training goes on as if the network had been named so from the start. A
correctly named network is left as it is: every move raises its loss.

:class:`Renamer` holds the subset and runs the search between epochs (the CLI,
``--rename-every``) or every few batches of DeepProbLog's ``train_model`` (``rename_every=``).
"""

from __future__ import annotations

import itertools
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from gedi_core.errors import GediError
from gedi_nesy.engine import is_batched
from gedi_nesy.step import (batch_inputs, clear_caches, forward_batch, gedi_networks, nesy_loss_of_log_probs,
                            query_probs_of_log_probs)

# relative drop of the subset's L_NESY a swap must bring to be kept: a swap of two well-named
# clusters raises the loss by far more; the margin keeps float noise and near-ties from
# renaming a network back and forth
DEFAULT_MIN_GAIN = 0.01
DEFAULT_QUERIES = 256


@dataclass
class Renaming:
    """What a search found for one network: the permutation (``perm[j]``: the old class that
    becomes class ``j``), the moves in the order they were kept (:func:`moves`), and the
    subset's ``L_NESY`` before and after."""

    network: str
    perm: list[int]
    before: float
    after: float
    steps: list[tuple] = field(default_factory=list)
    score: str = "training L_NESY"  # what before and after measure

    @property
    def changed(self) -> bool:
        return self.perm != sorted(self.perm)

    def describe(self) -> str:
        mapping = ", ".join(f"{old}->{new}" for new, old in enumerate(self.perm) if old != new)
        return (f"renamed the classes of {self.network} (old->new: {mapping}): {self.score} "
                f"{self.before:.4f} -> {self.after:.4f}")


@contextmanager
def network_caches(model, per_net: Mapping[str, list], log_probs: Mapping[str, Tensor]) -> Iterator[None]:
    """DeepProbLog's engines read the networks' predictions from their caches: filled here from
    each network's ``log p(y|x)`` on its inputs (rows in ``per_net``'s order), emptied after; the
    batched engine is given them directly, and nothing is cached."""
    if not is_batched(model):
        for name, lp in log_probs.items():
            net = model.networks[name]
            for term, p in zip(per_net[name], lp.exp()):
                net.cache[term] = p
    try:
        yield
    finally:
        if not is_batched(model):
            clear_caches(model)


def subset_loss(model, queries: Sequence, per_net: Mapping[str, list], log_probs: Mapping[str, Tensor]) -> float:
    """``L_NESY`` of ``queries`` from each network's ``log p(y|x)`` on its inputs (rows in
    ``per_net``'s order), with the model's engine (:func:`network_caches`)."""
    with network_caches(model, per_net, log_probs):
        loss, _ = nesy_loss_of_log_probs(model, queries, per_net, dict(log_probs))
    return float(loss) if loss is not None else float("nan")


def subset_query_probs(model, queries: Sequence, per_net: Mapping[str, list],
                       log_probs: Mapping[str, Tensor]) -> list[float | None]:
    """``p(q)`` of each of ``queries`` as :func:`subset_loss` reads them (None: no proof, or
    decided without networks)."""
    with network_caches(model, per_net, log_probs):
        return query_probs_of_log_probs(model, queries, per_net, dict(log_probs))


def network_log_probs(model, queries: Sequence, names: Iterable[str]) -> tuple[dict[str, list], dict[str, Tensor]]:
    """The inputs of ``queries`` per network and ``log p(y|x)`` of the GEDI networks ``names``
    on them (evaluation mode, no gradient; each network's mode is restored)."""
    nets = gedi_networks(model)
    per_net = batch_inputs(model, queries)
    modes = {n: nets[n].network_module.training for n in nets}
    try:
        for n in nets:
            nets[n].network_module.eval()
        with torch.no_grad():
            fwd = forward_batch(model, per_net, fill_cache=False)
    finally:
        for n, mode in modes.items():
            nets[n].network_module.train(mode)
    wanted = set(names)
    return per_net, {n: torch.log_softmax(logits.float(), dim=-1) for n, (_, logits) in fwd.items() if n in wanted}


def moves(k: int) -> Iterator[tuple[str, int, int]]:
    """The neighbourhood of a permutation of ``k`` classes: every swap of two positions, and every
    move of one position's class to another position with the classes between shifted by one
    (``("move", a, b)``; the naming errors of arithmetic programs are often such shifts: digits
    4-9 read as 3-8)."""
    for a in range(k):
        for b in range(a + 1, k):
            yield "swap", a, b
    for a in range(k):
        for b in range(k):
            if abs(a - b) > 1:  # next to each other a move is a swap
                yield "move", a, b


def swap_sets(k: int, most: int) -> Iterator[tuple[str, tuple[tuple[int, int], ...]]]:
    """Every product of 2 to ``most`` disjoint swaps of ``k`` positions (``("swaps", pairs)``):
    naming schemes that no single move improves, as 1<->2, 4<->5 and 7<->8 at once, under which
    46 of the 55 sums ``a + b = c <= 9`` still hold."""
    pairs = list(itertools.combinations(range(k), 2))
    for size in range(2, most + 1):
        for group in itertools.combinations(pairs, size):
            if len({i for pair in group for i in pair}) == 2 * size:
                yield "swaps", group


def moved(perm: list[int], move: tuple) -> list[int]:
    kind, *args = move
    out = list(perm)
    if kind == "swap":
        a, b = args
        out[a], out[b] = out[b], out[a]
    elif kind == "swaps":
        for a, b in args[0]:
            out[a], out[b] = out[b], out[a]
    else:
        a, b = args
        out.insert(b, out.pop(a))
    return out


def local_search(k: int, scores: Callable[[Sequence[list[int]]], Sequence[float]],
                 neighbourhood: Callable[[], Iterable[tuple]],
                 improves: Callable[[float, float], bool]) -> tuple[list[int], float, float, list[tuple]]:
    """Greedy local search over permutations of ``k`` classes, from the identity: each round
    scores every move of ``neighbourhood()`` from the current permutation at once (``scores`` of
    a list of permutations: lower is better) and keeps the best (the first of equals) while
    ``improves(its score, the current score)``; at most ``k`` rounds. Returns the permutation,
    its score before and after, and the moves kept."""
    perm = list(range(k))
    [best] = scores([perm])
    before, steps = best, []
    for _ in range(k):
        candidates = list(neighbourhood())
        values = list(scores([moved(perm, move) for move in candidates]))
        if not values:
            break
        at = min(range(len(values)), key=values.__getitem__)
        if not (values[at] < best and improves(values[at], best)):
            break
        perm, best = moved(perm, candidates[at]), values[at]
        steps.append(candidates[at])
    return perm, before, best, steps


def search_renaming(model, queries: Sequence, names: Sequence[str] | None = None,
                    min_gain: float = DEFAULT_MIN_GAIN) -> list[Renaming]:
    """For each GEDI network (``names``, default all), the permutation of its classes that
    lowers ``L_NESY`` on ``queries`` by ``min_gain`` (relative) or more a move, found by
    :func:`local_search` over :func:`moves` (the networks one after another, each with the others
    as renamed so far). Nothing is changed in the model."""
    nets = gedi_networks(model)
    names = list(nets) if names is None else list(names)
    unknown = [n for n in names if n not in nets]
    if unknown:
        raise GediError(f"renaming: no GEDI network named {', '.join(unknown)} (the model has: {', '.join(nets)})")
    per_net, base = network_log_probs(model, queries, names)
    current = dict(base)
    found: list[Renaming] = []
    for name in names:
        if name not in base:  # the network sees no input in these queries
            continue
        k = base[name].shape[1]
        perm, before, after, steps = local_search(
            k, lambda perms: [subset_loss(model, queries, per_net, {**current, name: base[name][:, p]}) for p in perms],
            lambda: moves(k), lambda trial, best: trial < best * (1 - min_gain))
        current[name] = base[name][:, perm]
        found.append(Renaming(name, perm, before, after, steps))
    return found


def permute_head(layer: nn.Linear, perm: Sequence[int], optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
    """Permute the output rows of ``layer`` in place (row ``j`` becomes the old row ``perm[j]``),
    with every optimizer state tensor of the same shape (Adam's moments, momentum buffers)."""
    idx = torch.as_tensor(list(perm), device=layer.weight.device)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            if p is None:
                continue
            p.copy_(p[idx])
            for opt in optimizers:
                for v in opt.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        v.copy_(v[idx])


def apply_renaming(model, renaming: Renaming, optimizers: Iterable[torch.optim.Optimizer] = (),
                   objective: Any = None) -> None:
    """Rename ``renaming.network``'s classes in place: its head, the ``optimizers``' state of the
    head and ``objective``'s class-indexed state (:meth:`GEDILoss.rename_classes`)."""
    if not renaming.changed:
        return
    module = gedi_networks(model)[renaming.network].network_module
    permute_head(module.head_layer, renaming.perm, optimizers)
    if objective is not None:
        objective.rename_classes(renaming.perm)


class Renamer:
    """Renaming searches on a fixed, seeded subset of ``queries`` (``subset`` of them, all when
    fewer), applied to the model as they are found. Calling it runs one search and returns the
    renamings it applied."""

    def __init__(self, model, queries: Sequence, subset: int = DEFAULT_QUERIES, seed: int = 0,
                 min_gain: float = DEFAULT_MIN_GAIN) -> None:
        if not (isinstance(subset, int) and subset > 0):
            raise GediError(f"renaming: the subset of training queries must be a number > 0, got {subset!r}")
        queries = list(queries)
        if not queries:
            raise GediError("renaming: no training queries to rename by")
        pick = random.Random(seed).sample(range(len(queries)), min(subset, len(queries)))
        self.model = model
        self.queries = [queries[i] for i in sorted(pick)]
        self.min_gain = min_gain
        self.last_loss = float("nan")  # the subset's L_NESY after the last search

    def __call__(self, optimizers: Mapping[str, Iterable[torch.optim.Optimizer]] | Iterable[torch.optim.Optimizer] = (),
                 objectives: Mapping[str, Any] | None = None) -> list[Renaming]:
        """Search and apply. ``optimizers``: those whose state to permute (all for every network,
        or per network name); ``objectives``: each network's :class:`GEDILoss`."""
        if not isinstance(optimizers, Mapping):
            optimizers = list(optimizers)
        applied = []
        found = search_renaming(self.model, self.queries, min_gain=self.min_gain)
        self.last_loss = found[-1].after if found else float("nan")
        for r in found:
            if r.changed:
                opts = optimizers.get(r.network, ()) if isinstance(optimizers, Mapping) else optimizers
                apply_renaming(self.model, r, list(opts), (objectives or {}).get(r.network))
                applied.append(r)
        return applied
