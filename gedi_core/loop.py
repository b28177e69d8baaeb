"""The one training loop: ``fit(step, batches, optimizer, ...)``.

What one batch costs is the *step*'s business (toy, image and NeSy steps differ); everything
around it is written here once: zero-grad / backward / optimizer step, the progress bar, a
log row every ``log_every`` steps with the failure monitor's indicators, a row per epoch,
NaN/inf detection, checkpoints (every epoch and every ``ckpt_every`` steps) and bit-exact
resume from them, and DDP's bookkeeping (rank 0 logs and writes; each rank keeps its own
random state). Where the loop stands is one :class:`~gedi_core.loop_state.LoopState`, which
the checkpoint's loop section is written from and read back into.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gedi_core import loop_state
from gedi_core.distributed import DistInfo, all_reduce_mean
from gedi_core.errors import NonFiniteError
from gedi_core.loop_state import LoopState
from gedi_core.monitor import FailureMonitor
from gedi_core.runfolder import RunFolder


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


class _Fit:
    """One call of :func:`fit`: its collaborators, and the epoch, step, log and checkpoint
    pieces of the loop, each moving the one :class:`~gedi_core.loop_state.LoopState`."""

    def __init__(self, step: Step, batches: Batches, optimizer: torch.optim.Optimizer, options: FitOptions,
                 run: RunFolder | None, monitor: FailureMonitor | None,
                 on_epoch_end: Callable[[int, bool], dict[str, Any]] | None, dist: DistInfo,
                 device: torch.device | None, grad_sync: Callable[[list[Tensor]], None] | None,
                 after_epoch: Callable[[int, bool], dict[str, Any]] | None) -> None:
        self.step, self.batches, self.optimizer, self.options = step, batches, optimizer, options
        self.run, self.monitor, self.dist, self.device, self.grad_sync = run, monitor, dist, device, grad_sync
        self.on_epoch_end, self.after_epoch = on_epoch_end, after_epoch
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.warmup = max(options.epochs * batches.steps_per_epoch // 5, 1)

    def __call__(self) -> FitResult:
        """Resume or start, train every epoch left, and return the log."""
        state = loop_state.restore(self.run, self.dist, self.step, self.optimizer, self.batches)
        resumed = state is not None
        state = state or LoopState(world_size=self.dist.world_size)
        resumed_seconds = state.seconds
        if self.monitor is not None:
            self.monitor.seen = set(state.monitor_seen)
        n = self.batches.steps_per_epoch
        self.bar = tqdm(total=self.options.epochs * n, initial=state.epoch * n + state.pos,
                        disable=not (self.options.progress and self.dist.is_main), desc=self.options.desc,
                        dynamic_ncols=True)
        self.step.train()
        while state.epoch < self.options.epochs:
            self.epoch(state)
        self.bar.close()
        return FitResult(rows=state.rows, epoch_rows=state.epoch_rows, warnings=state.warnings,
                         seconds=state.seconds, steps=state.steps, items=state.items, resumed=resumed,
                         resumed_seconds=resumed_seconds)

    def epoch(self, state: LoopState) -> None:
        """The rest of epoch ``state.epoch`` (from step ``state.pos``), its row and checkpoint."""
        n = self.batches.steps_per_epoch
        t_seg = time.time()
        for pos, batch in enumerate(self.batches.epoch(state.epoch, state.pos), start=state.pos):
            out, loss_value = self.train_batch(batch, f"epoch {state.epoch + 1} step {state.steps + 1}")
            state.steps += 1
            state.items += out.size
            state.tally.add(loss_value, out.terms, out.size)
            state.pos = pos + 1
            self.bar.update(1)
            last_of_epoch = pos == n - 1
            if self.dist.is_main and (state.steps % self.options.log_every == 0 or last_of_epoch):
                self.log(state, batch, out, loss_value, t_seg)
            if self.options.ckpt_every and state.steps % self.options.ckpt_every == 0 and not last_of_epoch:
                self.add_seconds(state, t_seg)
                self.checkpoint(state)
                t_seg = time.time()
        self.end_epoch(state, t_seg)

    def train_batch(self, batch: Any, where: str) -> tuple[StepOutput, float]:
        """One step on ``batch`` (forward, backward, gradient sync, optimizer step) and its loss;
        NaN/inf in it is one :class:`NonFiniteError` saying ``where``."""
        try:
            out = self.step(batch)
        except NonFiniteError as exc:  # NaN/inf logits or SGLD samples: say where, as for the loss
            raise NonFiniteError(f"{where}: {exc}; the last good checkpoint is kept") from None
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        if out.loss is not None:
            loss_value = float(out.loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteError(f"{where}: the loss is not finite ({_non_finite_terms(out)}); "
                                     "the last good checkpoint is kept")
            out.loss.backward()
        if self.grad_sync is not None:  # every rank, every step: the ranks stay in step
            self.grad_sync(self.params)
        if out.loss is not None or self.grad_sync is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, float("inf")))
            if not math.isfinite(grad_norm):
                raise NonFiniteError(f"{where}: the gradients are not finite (gradient norm {grad_norm}); "
                                     "the last good checkpoint is kept")
            self.optimizer.step()
        return out, loss_value

    def log(self, state: LoopState, batch: Any, out: StepOutput, loss_value: float, t_seg: float) -> None:
        """A row of ``log.csv`` with the monitor's indicators on ``batch``; its warnings; the bar."""
        diag = self.step.diagnose(batch)
        row = {"epoch": state.epoch + 1, "iter": state.steps, "loss": loss_value, **out.terms, **diag,
               "seconds": round(state.seconds + time.time() - t_seg, 3)}
        state.rows.append(row)
        if self.monitor is not None and state.steps >= self.warmup:
            where = f"epoch {state.epoch + 1} iter {state.steps}" if self.options.epochs > 1 else f"iter {state.steps}"
            for message in self.monitor.check(diag, head_modes=self.options.head_modes):
                state.warnings.append(f"{where}: {message}")
                tqdm.write(f"warning [{self.options.label}] {where}: {message}")
        self.bar.set_postfix({label: f"{row[k]:.3f}" for label, k in self.options.bar_fields.items() if k in row})

    def end_epoch(self, state: LoopState, t_seg: float) -> None:
        """After the epoch's last step: the ``after_epoch`` hook, the epoch's row (with
        ``on_epoch_end``'s columns), then the checkpoint at the next epoch's start."""
        epoch, is_last = state.epoch, state.epoch + 1 == self.options.epochs
        hook_row = self.after_epoch(epoch, is_last) if self.after_epoch is not None else {}
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.add_seconds(state, t_seg)
        tally = state.tally
        count = max(tally.count, 1)
        mean_loss = all_reduce_mean(tally.sums.get("loss", 0.0) / count, self.dist, self.device or torch.device("cpu"))
        erow: dict[str, Any] = {"epoch": epoch + 1, "iter": state.steps, "loss": round(mean_loss, 6),
                                **{k: v / count for k, v in tally.sums.items() if k != "loss"},
                                "seconds": round(tally.seconds, 3),
                                f"{self.options.item_name}_per_s": round(tally.items * self.dist.world_size
                                                                         / max(tally.seconds, 1e-9), 1),
                                **hook_row}
        if self.on_epoch_end is not None and self.dist.is_main:
            erow.update(self.on_epoch_end(epoch, is_last))
            self.step.train()
        state.epoch_rows.append(erow)
        state.next_epoch()
        self.checkpoint(state)

    @staticmethod
    def add_seconds(state: LoopState, t_seg: float) -> None:
        """Count the training time since ``t_seg`` (the segment ends: a checkpoint or the epoch's end)."""
        dt = time.time() - t_seg
        state.seconds += dt
        state.tally.seconds += dt

    def checkpoint(self, state: LoopState) -> None:
        """With a run folder: the checkpoint of ``state`` (refused when the parameters are no
        longer finite, so that the last good one is kept)."""
        if self.run is None:
            return
        check_finite_parameters(self.params, f"epoch {state.epoch + 1} step {state.steps}")
        state.monitor_seen = sorted(self.monitor.seen) if self.monitor is not None else []
        loop_state.save(self.run, self.dist, state, self.step, self.optimizer, self.batches)


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
    return _Fit(step, batches, optimizer, options, run, monitor, on_epoch_end, dist or DistInfo(), device,
                grad_sync, after_epoch)()
