"""Renaming judged through the pool's neighbours: the repair of a naming scheme the training
queries cannot see.

With 100 MNIST-addition queries a start can name its clusters by a wrong scheme that keeps most
of the program (1<->2, 4<->5 and 7<->8 at once: 46 of the 55 sums ``a + b = c <= 9`` still
hold) and fit the other queries image by image: its training ``L_NESY`` is as low as a healthy
start's, no single swap lowers it, and renaming by the training loss
(:mod:`gedi_nesy.renaming`) keeps the wrong names. Read through the pool's neighbours instead
(each training image as the most probable class of its ``k`` nearest pool images that no query
shows, :class:`~gedi_nesy.restarts.NeighbourPredictions`), the memorised images no longer count:
the right names make more training queries true than the wrong scheme does.

:func:`search_neighbour_renaming` looks for the permutation of each GEDI network's classes that
makes fewest training queries false under that reading, by :func:`~gedi_nesy.renaming.local_search`
over every swap and shift (:func:`~gedi_nesy.renaming.moves`) and every product of up to three
disjoint swaps (:func:`~gedi_nesy.renaming.swap_sets`), keeping a move only where it makes
``min_gain`` of the queries or more true; the CLI runs it once, after a start's last epoch
(``--rename-neighbours``).
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import torch
from torch import Tensor

from gedi_nesy.renaming import Renaming, local_search, moves, network_log_probs, subset_query_probs, swap_sets
from gedi_nesy.restarts import NEIGHBOURS, NeighbourPredictions, false_share, hardened, pool_index
from gedi_nesy.step import batch_inputs, gedi_networks

MOST_SWAPS = 3  # disjoint swaps one move may make at once
MIN_GAIN = 0.02  # share of the queries a kept move must make true
# hardened readings leave each query's probability within about 1e-5 of 0 or 1 (HARD_EPS), so that a
# move making exactly MIN_GAIN of the queries true can score a hair short of it: shares this close count as equal
SHARE_TOLERANCE = 1e-4


class HardTruth:
    """Whether each of ``queries`` is true when every input of the GEDI networks is read as one
    class: :meth:`false_share` of the classes each network gives its inputs.

    Under such readings a query's truth depends only on its structure and its inputs' classes,
    so it is computed once per (structure, classes) with the model's engine, on a query of that
    structure (:meth:`fill`, as many at once as there are such queries), and looked up after: a
    naming search scores thousands of namings of the same queries (MNIST addition: at most 1000
    truths for all of them). Queries with an input of another network are left out."""

    def __init__(self, model, queries: Sequence, per_net: Mapping[str, list], classes: Mapping[str, int]) -> None:
        self.model, self.classes = model, dict(classes)
        rows = {name: {term: i for i, term in enumerate(per_net[name])} for name in classes}
        self.queries: list = []
        self.alone: list[dict[str, list]] = []  # each query's inputs per network (its own per_net)
        self.inputs: list[list[tuple[str, int]]] = []  # each query's (network, row in per_net), in that order
        self.structure: list[tuple] = []
        self.terms: list[set] = []  # each query's input terms
        self.of_structure: dict[tuple, list[int]] = {}  # the queries of each structure
        for q in queries:
            alone = batch_inputs(model, [q])
            if not alone or any(name not in rows for name in alone):
                continue
            self.queries.append(q)
            self.alone.append(alone)
            terms = [t for ts in alone.values() for t in ts]
            self.inputs.append([(name, rows[name][t]) for name, ts in alone.items() for t in ts])
            masked = tuple((name, "*" if pool_index(t) is not None else str(t)) for name, ts in alone.items() for t in ts)
            repeats = tuple(terms.index(v) if v in terms else -1 for _, v in sorted(q.substitution.items(), key=str))
            self.structure.append((str(q.query), float(q.p), masked, repeats))
            self.terms.append(set(terms))
            self.of_structure.setdefault(self.structure[-1], []).append(len(self.queries) - 1)
        self.truth: dict[tuple, float | None] = {}

    def fill(self, wanted: Sequence[tuple[int, tuple[int, ...]]]) -> None:
        """Compute the truth of every (query, classes) in ``wanted`` not yet known, many in one
        engine call: each on its own query of the same structure, queries that share no input."""
        todo: dict[tuple, None] = {}
        for i, classes in wanted:
            key = (self.structure[i], classes)
            if key not in self.truth:
                todo[key] = None
        while todo:
            batch, used = [], set()
            for key in list(todo):
                free = [i for i in self.of_structure[key[0]] if not used & self.terms[i]]
                if free:
                    batch.append((free[0], key))
                    used |= self.terms[free[0]]
                    del todo[key]
            queries = [self.queries[i] for i, _ in batch]
            per_net = batch_inputs(self.model, queries)
            rows = {name: {t: r for r, t in enumerate(terms)} for name, terms in per_net.items()}
            picked = {name: torch.zeros(len(terms), dtype=torch.long) for name, terms in per_net.items()}
            for i, (_, classes) in batch:
                at = iter(classes)
                for name, terms in self.alone[i].items():
                    for t in terms:
                        picked[name][rows[name][t]] = next(at)
            log_probs = {name: hardened(torch.nn.functional.one_hot(c, self.classes[name]).float())
                         for name, c in picked.items()}
            for (_, key), p in zip(batch, subset_query_probs(self.model, queries, per_net, log_probs)):
                self.truth[key] = p

    def false_shares(self, readings: Sequence[Mapping[str, Sequence[int]]]) -> list[float]:
        """For each of ``readings`` (``readings[name]``: the class of each row of ``per_net[name]``),
        the mean ``|t - p(q)|`` over the queries with a proof: the share of them false."""
        keyed = [[(i, tuple(r[n][row] for n, row in inputs)) for i, inputs in enumerate(self.inputs)] for r in readings]
        self.fill([k for ks in keyed for k in ks])
        return [false_share((self.queries[i], self.truth[self.structure[i], c]) for i, c in ks) for ks in keyed]


def renamed(classes: Sequence[int], perm: Sequence[int]) -> list[int]:
    """``classes`` under the renaming ``perm`` (new class ``j`` is old class ``perm[j]``)."""
    new_of_old = [0] * len(perm)
    for new, old in enumerate(perm):
        new_of_old[old] = new
    return [new_of_old[c] for c in classes]


def gains(trial: float, best: float, min_gain: float) -> bool:
    """Whether the false share ``trial`` is ``min_gain`` or more below ``best``, up to
    :data:`SHARE_TOLERANCE` (what the hardened readings leave of a query's truth)."""
    return trial <= best - min_gain + SHARE_TOLERANCE


def search_neighbour_renaming(model, queries: Sequence, pool: Tensor, k: int = NEIGHBOURS,
                              most_swaps: int = MOST_SWAPS, min_gain: float = MIN_GAIN) -> list[Renaming]:
    """For each GEDI network, the permutation of its classes that makes fewest of ``queries``
    false when every training-pool image (``tensor(train(I))``) is read as the most probable
    class of its ``k`` nearest images of ``pool`` outside the queries (:class:`HardTruth`), each
    move of the search making ``min_gain`` of the queries or more true (the networks one after
    another, each with the others as renamed so far). ``before`` / ``after``: the share of
    queries false. Nothing is changed in the model."""
    per_net, own = network_log_probs(model, queries, gedi_networks(model))
    read = NeighbourPredictions(model, queries, pool, k)(per_net, own)  # its argmax: the hard reading
    current = {name: lp.argmax(1).tolist() for name, lp in read.items()}
    truth = HardTruth(model, queries, per_net, {name: lp.shape[1] for name, lp in read.items()})
    found: list[Renaming] = []
    for name, classes in list(current.items()):
        width = read[name].shape[1]

        def scores(perms: Sequence[list[int]]) -> list[float]:
            return truth.false_shares([{**current, name: renamed(classes, perm)} for perm in perms])

        perm, before, after, steps = local_search(
            width, scores, lambda: itertools.chain(moves(width), swap_sets(width, most_swaps)),
            lambda trial, best: gains(trial, best, min_gain))
        current[name] = renamed(classes, perm)
        found.append(Renaming(name, perm, before, after, steps, score="false share through the neighbours"))
    return found
