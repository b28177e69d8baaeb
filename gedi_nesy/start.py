"""What one start of :func:`gedi_nesy.train.train_nesy` trains with, built from its checked config.

:func:`build_start` gives a :class:`Start`: the start's inputs (config, model, queries, pools,
the networks' domains, the processes) and what :func:`gedi_core.loop.fit` runs on them: the
batch source (:class:`QueryBatches`, the training queries shuffled per epoch), the objective
each GEDI network gets (:func:`nesy_objective`), the NeSy step, the optimizer, the failure
monitor and the renaming hook (:func:`renaming_hook`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from gedi_core.distributed import DistInfo
from gedi_core.monitor import FailureMonitor
from gedi_nesy.config import NesyConfig
from gedi_nesy.engine import is_batched
from gedi_nesy.plugin import GEDILoss
from gedi_nesy.prior import program_prior
from gedi_nesy.renaming import Renamer, apply_renaming
from gedi_nesy.restarts import StartCut, nesy_means
from gedi_nesy.step import NesyStep, TrainShift, gedi_networks


class QueryBatches:
    """Each epoch, the training queries in a new seeded order, cut into batches; under torchrun
    rank ``r`` of ``world`` takes ``batch[r::world]`` of each (global) batch."""

    def __init__(self, queries: Sequence, batch_size: int, seed: int, dist: DistInfo | None = None) -> None:
        self.queries = list(queries)
        self.batch_size = batch_size
        self.dist = dist or DistInfo()
        self.steps_per_epoch = math.ceil(len(self.queries) / batch_size)
        self.shuffler = random.Random(seed)
        self.order: list[int] = []
        self.order_epoch = -1

    def epoch(self, epoch: int, start: int) -> Iterator[list]:
        if self.order_epoch != epoch:
            self.order = list(range(len(self.queries)))
            self.shuffler.shuffle(self.order)
            self.order_epoch = epoch
        bs, rank, world = self.batch_size, self.dist.rank, self.dist.world_size
        for b in range(start, self.steps_per_epoch):
            yield [self.queries[i] for i in self.order[b * bs:(b + 1) * bs][rank::world]]

    def state_dict(self) -> dict[str, Any]:
        return {"shuffler": self.shuffler.getstate(), "order": self.order, "order_epoch": self.order_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shuffler.setstate(state["shuffler"])
        self.order, self.order_epoch = list(state["order"]), state["order_epoch"]


def nesy_objective(cfg: NesyConfig, seed: int) -> GEDILoss:
    """The GEDI terms of one network under ``cfg`` (the arm's mask applied to the weights)."""
    w = cfg.active_weights()
    return GEDILoss(w["gen"], w["inv"], w["prior"], prior_form=cfg.prior, sgld=cfg.sgld, prior_window=cfg.prior_window,
                    aug_noise=cfg.data.aug_noise, seed=seed)


@dataclass
class Start:
    """One start: its checked inputs and what the loop trains with (see :func:`build_start`)."""

    cfg: NesyConfig
    model: Any
    train_queries: Sequence
    pools: Any
    test_queries: Sequence | None
    domains: dict[str, list]
    dist: DistInfo
    nets: dict[str, Any]  # the GEDI networks, in registration order
    weights: dict[str, float]  # the arm's active loss weights
    optimizer: torch.optim.Optimizer
    objectives: dict[str, GEDILoss]  # network name -> its GEDI terms
    priors: dict[str, Tensor]  # network name -> the program's class prior (empty: uniform)
    step: NesyStep
    batches: QueryBatches
    monitor: FailureMonitor
    after_epoch: Callable[[int, bool], dict[str, Any]] | None  # the renaming and plateau hooks


def build_start(cfg: NesyConfig, model, train_queries: Sequence, pools, test_queries: Sequence | None,
                domains: dict[str, list], dist: DistInfo, may_cut: bool = False) -> Start:
    """The objectives (with the program's prior where configured), the Adam optimizer over every
    network's parameters, the NeSy step, the batch source, the monitor and the renaming hook of a
    start under the checked ``cfg`` (and the plateau hook where the start ``may_cut``). Under
    torchrun every rank draws its own replay buffer, shifts and SGLD noise."""
    nets = gedi_networks(model)
    weights = cfg.active_weights()
    params = [p for net in model.networks.values() for p in net.network_module.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rank_seed = 7919 * dist.rank  # every rank its own replay buffer, shifts and SGLD noise
    if dist.rank:
        torch.manual_seed(cfg.seed + rank_seed)
    objectives = {name: nesy_objective(cfg, cfg.seed + 10 + 7 * i + rank_seed) for i, name in enumerate(nets)}
    with_program_prior = cfg.prior_target == "program" and weights["prior"] > 0
    priors = program_prior(model, train_queries, cfg.batch_size) if with_program_prior else {}
    for name, prior in priors.items():
        objectives[name].set_prior(prior)
    shift = TrainShift(cfg.data.train_shift, cfg.seed + 5 + rank_seed) if cfg.data.train_shift > 0 else None
    step = NesyStep(model, objectives, weights["nesy"], shift, amp=cfg.amp)
    step.input_shapes = {name: list(pools.input_shape) for name in nets}
    batches = QueryBatches(train_queries, cfg.batch_size, cfg.seed + 3, dist)
    first = next(iter(nets.values())).network_module
    monitor = FailureMonitor(first.num_clusters, sgld_range=100 * max(abs(cfg.sgld.init_low), abs(cfg.sgld.init_high)))
    hooks = [renaming_hook(cfg, model, train_queries, optimizer, objectives)] if weights["nesy"] > 0 else []
    if cfg.rename_neighbours and weights["nesy"] > 0:
        hooks.append(neighbour_renaming_hook(cfg, model, train_queries, pools, optimizer, objectives))
    if may_cut and weights["nesy"] > 0:
        hooks.append(plateau_hook(cfg, model, train_queries))
    hooks.append(prior_ramp_hook(cfg, weights["prior"], objectives))
    after_epoch = chained([h for h in hooks if h is not None])
    return Start(cfg, model, train_queries, pools, test_queries, domains, dist, nets, weights, optimizer, objectives,
                 priors, step, batches, monitor, after_epoch)


def neighbour_renaming_hook(cfg: NesyConfig, model, train_queries: Sequence, pools, optimizer, objectives):
    """``fit``'s ``after_epoch``: after the last epoch, rename each GEDI network's classes where
    that makes more training queries true with every training image read as its nearest pool
    images outside the queries (:func:`gedi_nesy.neighbour_renaming.search_neighbour_renaming`);
    the row gets ``neighbour_false`` (the share of those queries false after the search) and
    ``renamed_neighbours`` where it changed a network."""
    from gedi_nesy.neighbour_renaming import search_neighbour_renaming

    def after_epoch(epoch: int, is_last: bool) -> dict[str, Any]:
        if not is_last:
            return {}
        found = search_neighbour_renaming(model, train_queries, pools.train_x)
        row: dict[str, Any] = {"neighbour_false": round(found[-1].after, 6)} if found else {}
        changed = [r for r in found if r.changed]
        for r in changed:
            apply_renaming(model, r, [optimizer], objectives.get(r.network))
        if changed:
            row["renamed_neighbours"] = "; ".join(r.describe() for r in changed)
            tqdm.write(f"[{cfg.arm} seed {cfg.seed}] epoch {epoch + 1}: {row['renamed_neighbours']}")
        return row

    return after_epoch


def renaming_hook(cfg: NesyConfig, model, train_queries: Sequence, optimizer, objectives):
    """``fit``'s ``after_epoch``: every ``cfg.rename_every`` epochs and after the last, rename
    each GEDI network's classes where that lowers ``L_NESY`` on a fixed subset of the training
    queries (:mod:`gedi_nesy.renaming`); the epoch's row gets ``rename_nesy`` (the subset's loss
    after the search) and ``renamed`` (what changed). None when ``rename_every`` is 0."""
    if cfg.rename_every <= 0:
        return None
    if not is_batched(model):
        tqdm.write(f"warning: --rename-every {cfg.rename_every} with the exact engine: each search scores a few "
                   f"hundred namings of {min(cfg.rename_queries, len(train_queries))} queries with DeepProbLog's "
                   "solver (seconds each); --rename-queries 16 or --rename-every 0 make it cheap")
    renamer = Renamer(model, train_queries, cfg.rename_queries, seed=cfg.seed + 11)

    def after_epoch(epoch: int, is_last: bool) -> dict[str, Any]:
        if (epoch + 1) % cfg.rename_every and not is_last:
            return {}
        found = renamer([optimizer], objectives)
        row: dict[str, Any] = {"rename_nesy": round(renamer.last_loss, 6)}
        if found:
            row["renamed"] = "; ".join(r.describe() for r in found)
            tqdm.write(f"[{cfg.arm} seed {cfg.seed}] epoch {epoch + 1}: {row['renamed']}")
        return row

    return after_epoch


def plateau_hook(cfg: NesyConfig, model, train_queries: Sequence):
    """``fit``'s ``after_epoch`` that cuts a start on the plateau: after ``cfg.restart_plateau``
    epochs (before the last), a training ``L_NESY`` still at ``cfg.plateau_share`` of the uniform
    predictions' or above (both from :func:`~gedi_nesy.restarts.nesy_means`) raises
    :class:`StartCut`. None when ``restart_plateau`` is 0."""
    if cfg.restart_plateau <= 0:
        return None

    def after_epoch(epoch: int, is_last: bool) -> dict[str, Any]:
        if epoch + 1 != cfg.restart_plateau or is_last:
            return {}
        loss, uniform = nesy_means(model, train_queries, uniform=True)
        if loss >= cfg.plateau_share * uniform:
            raise StartCut(epoch + 1, loss, uniform)
        return {"plateau_nesy": round(loss, 6)}

    return after_epoch


def ramped_weight(final: float, first: float, ramp: int, epoch: int) -> float:
    """The weight in epoch ``epoch`` (0-based) of a ramp of ``ramp`` epochs: ``first + (final -
    first) min(1, epoch / ramp)`` (``final`` from epoch ``ramp`` on; ``ramp = 0``: ``final``)."""
    if ramp <= 0:
        return final
    return first + (final - first) * min(1.0, epoch / ramp)


def prior_ramp_hook(cfg: NesyConfig, final: float, objectives: dict[str, GEDILoss]):
    """``fit``'s ``after_epoch`` that ramps ``L_PRIOR``'s weight: sets every objective's prior
    weight to :func:`ramped_weight` of epoch 0 now and of the next epoch after each epoch (the
    weight is in :class:`~gedi_nesy.step.NesyStep`'s checkpoint, so a resumed start goes on from
    it); the row gets ``w_prior``, the weight the epoch trained with. None without a ramp or a
    prior."""
    if cfg.prior_ramp <= 0 or final <= 0:
        return None

    def set_weight(epoch: int) -> None:
        for objective in objectives.values():
            objective.weights["prior"] = ramped_weight(final, cfg.prior_ramp_from, cfg.prior_ramp, epoch)

    set_weight(0)

    def after_epoch(epoch: int, is_last: bool) -> dict[str, Any]:
        used = next(iter(objectives.values())).weights["prior"]
        set_weight(epoch + 1)
        return {"w_prior": round(used, 6)}

    return after_epoch


def chained(hooks: Sequence[Callable[[int, bool], dict[str, Any]]]) -> Callable[[int, bool], dict[str, Any]] | None:
    """One ``after_epoch`` running ``hooks`` in order, their rows merged (None for no hook)."""
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def after_epoch(epoch: int, is_last: bool) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for hook in hooks:
            row.update(hook(epoch, is_last))
        return row

    return after_epoch
