"""The one training loop: ``fit(step, batches, optimizer, ...)``.

What one batch costs is the *step*'s business (toy, image and NeSy steps differ); everything
around it is written here once: zero-grad / backward / optimizer step, the progress bar, a
log row every ``log_every`` steps with the failure monitor's indicators, a row per epoch,
NaN/inf detection, checkpoints (every epoch and every ``ckpt_every`` steps) and bit-exact
resume from them, and DDP's bookkeeping (rank 0 logs and writes; each rank keeps its own
random state).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gedi_core import checkpoint as ckpt
from gedi_core.distributed import DistInfo, all_reduce_mean, barrier
from gedi_core.errors import GediError
from gedi_core.monitor import FailureMonitor
from gedi_core.errors import NonFiniteError
from gedi_core.rng import rng_state, set_rng_state
from gedi_core.runfolder import RunFolder, resume_errors


@dataclass
class StepOutput:
    """What one training step gives the loop: the loss to minimise (None: nothing to learn
    from this batch), the values of its terms and the number of items in the batch."""

    loss: Tensor | None
    terms: dict[str, float]
    size: int


class Step(Protocol):
    """One batch: ``step(batch) -> StepOutput``; ``diagnose(batch)``: the monitor's indicators
    on that batch; ``state_dict()`` -> ``{"model": shared state, "local": this rank's state}``."""

    def __call__(self, batch: Any) -> StepOutput: ...
    def diagnose(self, batch: Any) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def train(self, mode: bool = True) -> Any: ...


class Batches(Protocol):
    """The batches of each epoch: ``epoch(e, start)`` yields batches ``start..steps_per_epoch-1``."""

    steps_per_epoch: int

    def epoch(self, epoch: int, start: int) -> Iterable[Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitOptions:
    epochs: int
    log_every: int = 100
    ckpt_every: int = 0  # also checkpoint every N steps inside an epoch (0: at epoch ends only)
    desc: str = ""
    progress: bool = True
    label: str = ""  # prefix of the monitor's warnings, e.g. "gedi/moons seed 3"
    item_name: str = "images"  # epochs.csv reports <item_name>_per_s
    head_modes: bool = True  # whether the monitor checks cluster collapse / label inconsistency
    # the progress bar's fields: label shown -> key of the log row (those the row has are shown)
    bar_fields: dict[str, str] = field(default_factory=lambda: {"loss": "loss", "prior_gap": "prior_gap",
                                                                "inv_gap": "inv_gap"})


@dataclass
class FitResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # training time (evaluations and checkpoints excluded)
    steps: int = 0
    items: int = 0
    resumed: bool = False
    resumed_seconds: float = 0.0  # training time of the run before it was resumed

    @property
    def items_per_s(self) -> float | None:
        return round(self.items / self.seconds, 2) if self.seconds > 0 else None

    def final_diagnostics(self, keys: Iterable[str] = ("prior_gap", "inv_gap", "max_cluster_share",
                                                       "embedding_var")) -> dict[str, Any]:
        """The monitor's last indicators, as ``final_*`` metrics."""
        last = self.rows[-1] if self.rows else {}
        return {f"final_{k}": last[k] for k in keys if k in last}


def _non_finite_terms(out: StepOutput) -> str:
    bad = [f"{k} = {v}" for k, v in out.terms.items() if not math.isfinite(v)]
    return ", ".join(bad) if bad else f"loss = {float(out.loss.detach()) if out.loss is not None else 'n/a'}"


def check_finite_parameters(params: list[Tensor], where: str) -> None:
    for p in params:
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(f"{where}: the parameters are no longer finite (learning rate too large?); "
                                 "the last good checkpoint is kept")


def fit(
    step: Step,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    options: FitOptions,
    run: RunFolder | None = None,
    monitor: FailureMonitor | None = None,
    on_epoch_end: Callable[[int, bool], dict[str, Any]] | None = None,
    dist: DistInfo | None = None,
    device: torch.device | None = None,
    grad_sync: Callable[[list[Tensor]], None] | None = None,
    after_epoch: Callable[[int, bool], dict[str, Any]] | None = None,
) -> FitResult:
    """Train ``options.epochs`` epochs of ``batches`` with ``step`` and return the log.

    ``on_epoch_end(epoch, is_last)`` (rank 0) may return extra columns for that epoch's row
    (e.g. test metrics). ``after_epoch(epoch, is_last)`` runs on every rank right after the
    epoch's last step, as part of training (its time counts, the checkpoint that follows holds
    what it changed; e.g. renaming a network's classes); rank 0's columns join the row.
    ``grad_sync(params)`` runs on every rank after every backward pass (e.g.
    :func:`gedi_core.distributed.average_gradients` for a step that DDP does not wrap). With
    ``run`` the loop resumes from its checkpoint when the run folder was opened with ``resume``
    and writes ``log.csv``, ``epochs.csv`` and checkpoints.
    """
    dist = dist or DistInfo()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    res = FitResult()
    start_epoch, start_pos, elapsed = 0, 0, 0.0
    seen: list[str] = []
    state = run.resume_state(dist.rank) if run is not None else None
    if state is not None:
        with resume_errors(run.checkpoint_path):
            step.load_state_dict(ckpt.step_state(state))
            optimizer.load_state_dict(ckpt.optimizer_state(state))
            batches.load_state_dict(ckpt.batches_state(state))
            set_rng_state(ckpt.random_state(state))
        loop = ckpt.loop_state(state)
        if loop.get("world_size", 1) != dist.world_size:
            raise GediError(f"--resume: the checkpoint was written by {loop.get('world_size', 1)} process(es), "
                            f"resumed with {dist.world_size}; resume with the same --nproc_per_node")
        res.rows, res.epoch_rows, res.warnings = loop["rows"], loop["epoch_rows"], loop["warnings"]
        res.steps, res.items, elapsed = loop["steps"], loop["items"], loop["seconds"]
        start_epoch, start_pos, seen = loop["epoch"], loop["pos"], loop["monitor_seen"]
        res.resumed, res.resumed_seconds = True, elapsed
    if monitor is not None:
        monitor.seen = set(seen)

    def checkpoint(epoch: int, pos: int, epoch_acc: dict[str, Any] | None) -> None:
        if run is None:
            return
        check_finite_parameters(params, f"epoch {epoch + 1} step {res.steps}")
        step_state = step.state_dict()  # once: it copies the replay buffer
        rng = rng_state()
        if dist.is_main:
            loop = ckpt.loop_section(dist.world_size, epoch, pos, res.steps, res.items, elapsed, epoch_acc, res.rows,
                                     res.epoch_rows, res.warnings, sorted(monitor.seen) if monitor is not None else [])
            run.save(ckpt.training_state(step_state, optimizer.state_dict(), batches.state_dict(), rng, loop))
            run.write_rows("log.csv", res.rows)
            run.write_rows("epochs.csv", res.epoch_rows)
        else:
            run.save(ckpt.rank_state(step_state, rng), dist.rank)
        barrier(dist)

    n = batches.steps_per_epoch
    total = options.epochs * n
    warmup = max(total // 5, 1)
    bar = tqdm(total=total, initial=start_epoch * n + start_pos, disable=not (options.progress and dist.is_main),
               desc=options.desc, dynamic_ncols=True)
    step.train()
    for epoch in range(start_epoch, options.epochs):
        resumed_here = state is not None and epoch == start_epoch
        pos0 = start_pos if resumed_here else 0
        # the epoch's running sums (restored when resuming inside an epoch)
        acc = (dict(ckpt.loop_state(state)["epoch_acc"]) if resumed_here and start_pos
               else {"sums": {}, "count": 0, "items": 0, "seconds": 0.0})
        sums: dict[str, float] = dict(acc["sums"])
        t_seg = time.time()
        for pos, batch in enumerate(batches.epoch(epoch, pos0), start=pos0):
            try:
                out = step(batch)
            except NonFiniteError as exc:  # NaN/inf logits or SGLD samples: say where, as for the loss
                raise NonFiniteError(f"epoch {epoch + 1} step {res.steps + 1}: {exc}; the last good checkpoint "
                                     "is kept") from None
            optimizer.zero_grad(set_to_none=True)
            if out.loss is not None:
                loss_value = float(out.loss.detach())
                if not math.isfinite(loss_value):
                    raise NonFiniteError(f"epoch {epoch + 1} step {res.steps + 1}: the loss is not finite "
                                         f"({_non_finite_terms(out)}); the last good checkpoint is kept")
                out.loss.backward()
            else:
                loss_value = 0.0
            if grad_sync is not None:  # every rank, every step: the ranks stay in step
                grad_sync(params)
            if out.loss is not None or grad_sync is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
                if not math.isfinite(grad_norm):
                    raise NonFiniteError(f"epoch {epoch + 1} step {res.steps + 1}: the gradients are not finite "
                                         f"(gradient norm {grad_norm}); the last good checkpoint is kept")
                optimizer.step()
            res.steps += 1
            res.items += out.size
            acc["items"] += out.size
            acc["count"] += 1
            sums["loss"] = sums.get("loss", 0.0) + loss_value
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            last_of_epoch = pos == n - 1
            if dist.is_main and (res.steps % options.log_every == 0 or last_of_epoch):
                diag = step.diagnose(batch)
                row = {"epoch": epoch + 1, "iter": res.steps, "loss": loss_value, **out.terms, **diag,
                       "seconds": round(elapsed + time.time() - t_seg, 3)}
                res.rows.append(row)
                if monitor is not None and res.steps >= warmup:
                    where = f"epoch {epoch + 1} iter {res.steps}" if options.epochs > 1 else f"iter {res.steps}"
                    for message in monitor.check(diag, head_modes=options.head_modes):
                        res.warnings.append(f"{where}: {message}")
                        tqdm.write(f"warning [{options.label}] {where}: {message}")
                bar.set_postfix({label: f"{row[k]:.3f}" for label, k in options.bar_fields.items() if k in row})
            if options.ckpt_every and res.steps % options.ckpt_every == 0 and not last_of_epoch:
                dt = time.time() - t_seg
                elapsed += dt
                acc["seconds"] += dt
                acc["sums"] = dict(sums)
                checkpoint(epoch, pos + 1, acc)
                t_seg = time.time()
        hook_row = after_epoch(epoch, epoch + 1 == options.epochs) if after_epoch is not None else {}
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.time() - t_seg
        elapsed += dt
        acc["seconds"] += dt
        res.seconds = elapsed
        count = max(acc["count"], 1)
        mean_loss = all_reduce_mean(sums.get("loss", 0.0) / count, dist, device or torch.device("cpu"))
        erow: dict[str, Any] = {"epoch": epoch + 1, "iter": res.steps, "loss": round(mean_loss, 6),
                                **{k: v / count for k, v in sums.items() if k != "loss"},
                                "seconds": round(acc["seconds"], 3),
                                f"{options.item_name}_per_s": round(acc["items"] * dist.world_size
                                                                    / max(acc["seconds"], 1e-9), 1),
                                **hook_row}
        if on_epoch_end is not None and dist.is_main:
            erow.update(on_epoch_end(epoch, epoch + 1 == options.epochs))
            step.train()
        res.epoch_rows.append(erow)
        checkpoint(epoch + 1, 0, None)
    bar.close()
    res.seconds = elapsed
    return res
