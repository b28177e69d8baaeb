"""Where the training loop stands, and the checkpoint it is saved in and resumed from.

:class:`LoopState` is the ``loop`` section of the checkpoint as an object (epoch and position
inside it, the counters, the running sums of the epoch under way, the log so far);
:func:`restore` reads a run folder's checkpoint back into the step, the optimizer, the batch
source, the random generators and a :class:`LoopState`, and :func:`save` writes them. The keys
of the file are :mod:`gedi_core.checkpoint`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from gedi_core import checkpoint as ckpt
from gedi_core.distributed import DistInfo, barrier
from gedi_core.errors import GediError
from gedi_core.rng import rng_state, set_rng_state
from gedi_core.runfolder import RunFolder, resume_errors


class Stateful(Protocol):
    """What the loop saves of its step, optimizer and batch source."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class EpochTally:
    """The running sums of the epoch under way (the loop section's ``epoch_acc``): the summed
    loss and terms, the steps and items counted, and the training seconds spent in it."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    items: int = 0
    seconds: float = 0.0

    def add(self, loss: float, terms: Mapping[str, float], size: int) -> None:
        """Count one step: its loss, its terms and its ``size`` items."""
        self.items += size
        self.count += 1
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def to_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count, "items": self.items, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, acc: Mapping[str, Any]) -> "EpochTally":
        return cls(dict(acc["sums"]), acc["count"], acc["items"], acc["seconds"])


@dataclass
class LoopState:
    """Where the loop stands: at step ``pos`` of epoch ``epoch`` (``pos`` 0: at its start), after
    ``steps`` steps over ``items`` items in ``seconds`` of training (the segment under way not
    yet added), with the epoch's ``tally``, the log rows, the warnings and the failure modes the
    monitor has reported (``monitor_seen``)."""

    world_size: int = 1
    epoch: int = 0
    pos: int = 0
    steps: int = 0
    items: int = 0
    seconds: float = 0.0
    tally: EpochTally = field(default_factory=EpochTally)
    rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    monitor_seen: list[str] = field(default_factory=list)

    def next_epoch(self) -> None:
        """Stand at the start of the next epoch, with fresh sums."""
        self.epoch, self.pos, self.tally = self.epoch + 1, 0, EpochTally()

    def section(self) -> dict[str, Any]:
        """The checkpoint's ``loop`` section (the running sums only inside an epoch)."""
        return ckpt.loop_section(self.world_size, self.epoch, self.pos, self.steps, self.items, self.seconds,
                                 self.tally.to_dict() if self.pos else None, self.rows, self.epoch_rows,
                                 self.warnings, self.monitor_seen)

    @classmethod
    def from_section(cls, loop: Mapping[str, Any]) -> "LoopState":
        """The state a checkpoint's ``loop`` section holds."""
        tally = EpochTally.from_dict(loop["epoch_acc"]) if loop["pos"] else EpochTally()
        return cls(loop.get("world_size", 1), loop["epoch"], loop["pos"], loop["steps"], loop["items"],
                   loop["seconds"], tally, loop["rows"], loop["epoch_rows"], loop["warnings"], loop["monitor_seen"])


def restore(run: RunFolder | None, dist: DistInfo, step: Stateful, optimizer: Stateful,
            batches: Stateful) -> LoopState | None:
    """Load ``run``'s checkpoint into ``step``, ``optimizer``, ``batches`` and the random
    generators when the run folder was opened with ``resume``, and return where the loop stood
    (None for a fresh run). A checkpoint of another number of processes is refused."""
    state = run.resume_state(dist.rank) if run is not None else None
    if state is None:
        return None
    with resume_errors(run.checkpoint_path):
        step.load_state_dict(ckpt.step_state(state))
        optimizer.load_state_dict(ckpt.optimizer_state(state))
        batches.load_state_dict(ckpt.batches_state(state))
        set_rng_state(ckpt.random_state(state))
    loop = LoopState.from_section(ckpt.loop_state(state))
    if loop.world_size != dist.world_size:
        raise GediError(f"--resume: the checkpoint was written by {loop.world_size} process(es), "
                        f"resumed with {dist.world_size}; resume with the same --nproc_per_node")
    return loop


def save(run: RunFolder, dist: DistInfo, loop: LoopState, step: Stateful, optimizer: Stateful,
         batches: Stateful) -> None:
    """Write the checkpoint of ``loop`` with the step's, optimizer's, batch source's and random
    state (rank 0, with ``log.csv`` and ``epochs.csv``; another rank its own state), then wait
    for every rank."""
    step_state = step.state_dict()  # once: it copies the replay buffer
    rng = rng_state()
    if dist.is_main:
        run.save(ckpt.training_state(step_state, optimizer.state_dict(), batches.state_dict(), rng, loop.section()))
        run.write_rows("log.csv", loop.rows)
        run.write_rows("epochs.csv", loop.epoch_rows)
    else:
        run.save(ckpt.rank_state(step_state, rng), dist.rank)
    barrier(dist)
