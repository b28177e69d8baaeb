"""Train one gedi_core run: the toy and image recipes over the one loop (:func:`gedi_core.loop.fit`).

Read top to bottom: the step (what one batch costs), the two batch sources (toy data: random
batches by iterations; image data: a seeded permutation per epoch, shared across DDP ranks),
then :func:`train`, which builds everything from a :class:`TrainConfig`, runs the loop,
evaluates, and writes the run folder.

DDP: under ``torchrun`` rank ``r`` takes ``perm[r::world]`` of each epoch (its batch is
``batch_size`` images, so the global batch is ``world * batch_size``), keeps its own replay
buffer and augmentation stream (seeded by rank), and gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`. With ``amp`` on CUDA the step runs under
bfloat16 autocast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from gedi_core.config import TrainConfig, to_dict
from gedi_core.data import load_dataset
from gedi_core.data.vision import is_image_dataset
from gedi_core.devices import mixed_precision
from gedi_core.distributed import DistInfo, barrier, cleanup, init_distributed
from gedi_core.errors import GediError
from gedi_core.evaluation.clusters import evaluate_clustering
from gedi_core.loop import FitOptions, StepOutput, fit
from gedi_core.methods import Method, build_method
from gedi_core.monitor import FailureMonitor, collapse_indicators
from gedi_core.rng import seed_everything
from gedi_core.runfolder import RunFolder


# ----------------------------------------------------------------------------- the step
class _Forward(nn.Module):
    """The method's training step as ``forward`` (what DDP wraps); keeps the terms' values."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method
        self.terms: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        loss, self.terms = self.method.training_step(x)
        return loss


class MethodStep:
    """One batch of a gedi_core method (optionally under DDP and mixed precision)."""

    def __init__(self, method: Method, device: torch.device, amp: bool = False, ddp: bool = False) -> None:
        self.method = method
        self.device = device
        self.amp = amp
        self.inner = _Forward(method)
        self.forward: nn.Module = self.inner
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward = DDP(self.inner, device_ids=[device.index] if device.type == "cuda" else None,
                               find_unused_parameters=not method.uses_cluster_head)

    def __call__(self, x: Tensor) -> StepOutput:
        with mixed_precision(self.amp, self.device):
            loss = self.forward(x)
        return StepOutput(loss, self.inner.terms, x.shape[0])

    def diagnose(self, x: Tensor) -> dict[str, float]:
        with mixed_precision(self.amp, self.device):
            diag = collapse_indicators(self.method.model, x, self.method.augment(x, None))
        buffer = self.method.replay_buffer()
        if buffer is not None:
            diag["sgld_max_abs"] = float(buffer.abs().max())
        return diag

    def train(self, mode: bool = True) -> None:
        self.method.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.method.model.state_dict(),
                "local": {"extra": self.method.extra_state(), "aug_gen": self.method.generator.get_state()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "model" in state:
            self.method.model.load_state_dict(state["model"])
        self.method.load_extra_state(state["local"]["extra"])
        self.method.generator.set_state(state["local"]["aug_gen"])


# ----------------------------------------------------------------------------- batch sources
class SampledBatches:
    """Toy data: ``steps`` batches drawn with replacement from a seeded generator (one epoch)."""

    def __init__(self, x: Tensor, batch_size: int, steps: int, seed: int) -> None:
        self.x = x
        self.batch_size = min(batch_size, x.shape[0])
        self.steps_per_epoch = steps
        self.generator = torch.Generator().manual_seed(seed)

    def epoch(self, epoch: int, start: int) -> Iterator[Tensor]:
        for _ in range(start, self.steps_per_epoch):
            idx = torch.randint(self.x.shape[0], (self.batch_size,), generator=self.generator)
            yield self.x[idx.to(self.x.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class EpochBatches:
    """Image data: each epoch one pass over a permutation seeded by (seed, epoch); rank ``r`` of
    ``world`` takes ``perm[r::world]``, cut into batches of ``batch_size``."""

    def __init__(self, x: Tensor, batch_size: int, seed: int, dist: DistInfo) -> None:
        n = x.shape[0]
        per_rank = n // dist.world_size
        self.batch_size = min(batch_size, per_rank)
        if self.batch_size < 1:
            raise GediError(f"{n} training images cannot be split over {dist.world_size} processes")
        self.x, self.seed, self.dist = x, seed, dist
        self.steps_per_epoch = per_rank // self.batch_size

    def epoch(self, epoch: int, start: int) -> Iterator[Tensor]:
        n, bs = self.x.shape[0], self.batch_size
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        shard = perm[self.dist.rank::self.dist.world_size][: self.steps_per_epoch * bs].to(self.x.device)
        for i in range(start, self.steps_per_epoch):
            yield self.x[shard[i * bs:(i + 1) * bs]]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def reseed_for_rank(method: Method, seed: int, rank: int) -> None:
    """Give rank ``rank`` its own augmentation stream and replay buffer (rank 0 keeps the seeds)."""
    if rank == 0:
        return
    method.generator.manual_seed(seed + 1 + 7919 * rank)
    objective = getattr(method, "objective", None)
    if objective is not None:
        objective.seed = seed + 2 + 7919 * rank


# ----------------------------------------------------------------------------- the recipe
def train(cfg: TrainConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run and return its final metrics (also written to ``out/metrics.json``).

    Toy data sets train by iterations (``iters``), image data sets (or any config with
    ``epochs > 0``) by epochs. The run folder receives ``config.yaml``, ``log.csv`` (every
    ``log_every`` iterations: the loss terms, the gaps to their optima and the collapse
    indicators), ``epochs.csv``, ``checkpoint.pt``, ``metrics.json`` and figures. With
    ``resume=True`` the run's checkpoint is continued where it stopped (same config only).
    Under torchrun only rank 0 returns metrics (other ranks return ``{}``).
    """
    cfg.validate()
    by_epochs = cfg.epochs > 0 or is_image_dataset(cfg.data.name)
    if by_epochs and cfg.epochs <= 0:
        raise GediError(f"dataset '{cfg.data.name}' trains by epochs: set epochs > 0 (--epochs N)")
    info, device = init_distributed(cfg.device)
    run = None
    try:
        run = (RunFolder(out, to_dict(cfg), resume, info.is_main, defaults=to_dict(TrainConfig())).open()
               if out is not None else None)
        barrier(info)
        return _train(cfg, info, device, run, by_epochs, progress)
    finally:
        if run is not None:
            run.unlock()
        cleanup(info)


def _train(cfg: TrainConfig, info: DistInfo, device: torch.device, run: RunFolder | None, by_epochs: bool,
           progress: bool) -> dict[str, Any]:
    seed_everything(cfg.seed + 7919 * info.rank)
    data = load_dataset(cfg.data, cfg.seed)
    method = build_method(cfg, data.input_shape, data.augment).to(device)
    reseed_for_rank(method, cfg.seed, info.rank)
    step = MethodStep(method, device, amp=cfg.amp, ddp=info.enabled)
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_x = data.train_x.to(device)
    if by_epochs:
        batches: SampledBatches | EpochBatches = EpochBatches(train_x, cfg.batch_size, cfg.seed, info)
        epochs = cfg.epochs
    else:
        batches, epochs = SampledBatches(train_x, cfg.batch_size, cfg.iters, cfg.seed + 3), 1
    monitor = FailureMonitor(cfg.model.num_clusters, sgld_range=100 * max(abs(cfg.sgld.init_low),
                                                                          abs(cfg.sgld.init_high), 1.0))

    def on_epoch_end(epoch: int, is_last: bool) -> dict[str, Any]:
        if by_epochs and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and not is_last:
            prefix = "val" if data.evaluated_on == "validation" else "test"
            return {f"{prefix}_{k}": round(v, 4) for k, v in evaluate_clustering(method, data).items()}
        return {}

    options = FitOptions(epochs=epochs, log_every=cfg.log_every, ckpt_every=0 if by_epochs else cfg.ckpt_every,
                         desc=f"{cfg.method}/{cfg.data.name}", progress=progress,
                         label=f"{cfg.method}/{cfg.data.name} seed {cfg.seed}", head_modes=method.uses_cluster_head)
    result = fit(step, batches, optimizer, options, run=run, monitor=monitor, on_epoch_end=on_epoch_end,
                 dist=info, device=device)
    if not info.is_main:
        barrier(info)
        return {}
    metrics: dict[str, Any] = {
        **evaluate_clustering(method, data),
        "evaluated_on": data.evaluated_on,  # test, or validation (data.validation: the test split is not read)
        "method": cfg.method,
        "dataset": cfg.data.name,
        "seed": cfg.seed,
        "iters": result.steps,
        "seconds": round(result.seconds, 2),
        "warnings": result.warnings,
    }
    if by_epochs:
        metrics.update(epochs=cfg.epochs, train_images=data.train_x.shape[0], world_size=info.world_size,
                       seconds_per_epoch=round(result.seconds / max(cfg.epochs, 1), 3),
                       images_per_s=result.items_per_s and round(result.items_per_s * info.world_size, 1))
    metrics.update(result.final_diagnostics())
    if run is not None:
        from gedi_core.figures import write_figures

        write_figures(method, data, result, run)
        run.finish(metrics)
    barrier(info)
    return metrics
