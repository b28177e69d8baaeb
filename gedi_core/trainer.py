"""The epoch-based trainer of the image data sets: mixed precision, DDP, a checkpoint every epoch.

One epoch is one pass over a seeded permutation of the training images (``perm(seed, epoch)``),
split across the ranks of ``torchrun`` (rank ``r`` takes ``perm[r::world]``; each rank's batch is
``batch_size`` images, so the global batch is ``world * batch_size``). Every rank keeps its own
replay buffer and augmentation generator (seeded by rank); gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`. With ``amp`` on CUDA the step runs under
bfloat16 autocast.

The run folder gets ``config.yaml``, ``log.csv`` (every ``log_every`` iterations),
``epochs.csv`` (one row per epoch: loss, seconds, images/s, optional test NMI),
``checkpoint.pt`` after every epoch (``checkpoint.rank<r>.pt`` holds the other ranks' buffers),
``metrics.json``, ``losses.png`` and ``buffer.png`` (the replay buffer's first chains).
``resume=True`` continues after the last finished epoch and reproduces an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gedi_core.config import TrainConfig, build_config, to_dict
from gedi_core.data import load_dataset
from gedi_core.distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed
from gedi_core.errors import GediError
from gedi_core.methods import Method, build_method, get_spec
from gedi_core.monitor import FailureMonitor
from gedi_core.training import evaluate, final_diagnostics, report_failures
from gedi_core.runio import (
    CHECKPOINT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_csv,
    write_json,
    write_yaml,
)


class _Step(nn.Module):
    """Wraps a method so that DDP sees its training step as ``forward`` (loss out, terms kept)."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method
        self.terms: dict[str, float] = {}

    def forward(self, x: Tensor) -> Tensor:
        loss, self.terms = self.method.training_step(x)
        return loss


def vision_config(dataset: str, method: str = "gedi", **overrides: Any) -> TrainConfig:
    """A config with the layers the CLI uses: data-set defaults < method defaults < ``overrides``."""
    from gedi_core.data.vision import DATASET_DEFAULTS

    layers = [(f"defaults of dataset '{dataset}'", DATASET_DEFAULTS.get(dataset, {})),
              (f"defaults of method '{method}'", get_spec(method).defaults),
              ("overrides", {"method": method, **overrides, "data": {"name": dataset, **overrides.get("data", {})}})]
    return build_config(TrainConfig, layers).validate()


def reseed_for_rank(method: Method, seed: int, rank: int) -> None:
    """Give rank ``rank`` its own augmentation stream and replay buffer (rank 0 keeps the seeds)."""
    if rank == 0:
        return
    method.generator.manual_seed(seed + 1 + 7919 * rank)
    sampler = getattr(method, "sampler", None)
    if sampler is not None:
        buf = sampler.buffer
        buf.generator.manual_seed(seed + 2 + 7919 * rank)
        buf.data = buf.uniform(len(buf))


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epochs(cfg: TrainConfig, out: str | Path | None = None, resume: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.epochs`` epochs; returns the final metrics (rank 0; other ranks get ``{}``)."""
    cfg.validate()
    if cfg.epochs <= 0:
        raise GediError(f"dataset '{cfg.data.name}' trains by epochs: set epochs > 0 (--epochs N)")
    info, device = init_distributed(cfg.device)
    try:
        return _train(cfg, info, device, out, resume, progress)
    finally:
        cleanup(info)


def _train(cfg: TrainConfig, info: DistInfo, device: torch.device, out: str | Path | None, resume: bool,
           progress: bool) -> dict[str, Any]:
    seed_everything(cfg.seed + 7919 * info.rank)
    data = load_dataset(cfg.data, cfg.seed)
    method = build_method(cfg, data.input_shape, data.augment).to(device)
    reseed_for_rank(method, cfg.seed, info.rank)
    step_module: nn.Module = _Step(method)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(_Step(method), device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=not method.uses_cluster_head)
    inner: _Step = step_module.module if info.enabled else step_module  # type: ignore[assignment]
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    monitor = FailureMonitor(cfg.model.num_clusters)
    out_dir = Path(out) if out is not None else None
    rows: list[dict[str, Any]] = []
    epoch_rows: list[dict[str, Any]] = []
    warnings_seen: list[str] = []
    start_epoch, global_iter, elapsed = 0, 0, 0.0

    if out_dir is not None:
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        barrier(info)
        ckpt_path = out_dir / CHECKPOINT
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            if state.get("world_size", 1) != info.world_size:
                raise GediError(f"{ckpt_path}: written by {state.get('world_size', 1)} processes, "
                                f"resumed with {info.world_size}; resume with the same --nproc_per_node")
            method.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rank_state = state if info.is_main else load_checkpoint(out_dir / f"checkpoint.rank{info.rank}.pt")
            method.load_extra_state(rank_state["extra"])
            method.generator.set_state(rank_state["aug_gen"])
            set_rng_state(rank_state["rng"])
            rows, epoch_rows, warnings_seen = state["rows"], state["epoch_rows"], state["warnings"]
            monitor.seen = set(state["monitor_seen"])
            start_epoch, global_iter, elapsed = state["epoch"], state["iter"], state["elapsed"]
        elif info.is_main:
            write_yaml(out_dir / "config.yaml", to_dict(cfg))

    def checkpoint(epoch: int, seconds: float) -> None:
        if out_dir is None:
            return
        own = {"extra": method.extra_state(), "aug_gen": method.generator.get_state(), "rng": rng_state()}
        if info.is_main:
            save_checkpoint(out_dir / CHECKPOINT, {
                **own,
                "model": method.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rows": rows,
                "epoch_rows": epoch_rows,
                "warnings": warnings_seen,
                "monitor_seen": sorted(monitor.seen),
                "epoch": epoch,
                "iter": global_iter,
                "elapsed": seconds,
                "world_size": info.world_size,
                "config": to_dict(cfg),
            })
            write_csv(out_dir / "log.csv", rows)
            write_csv(out_dir / "epochs.csv", epoch_rows)
        else:
            save_checkpoint(out_dir / f"checkpoint.rank{info.rank}.pt", own)
        barrier(info)

    train_x = data.train_x.to(device)
    n = train_x.shape[0]
    per_rank = n // info.world_size
    bs = min(cfg.batch_size, per_rank)
    if bs < 1:
        raise GediError(f"{n} training images cannot be split over {info.world_size} processes")
    steps = per_rank // bs
    warmup = max(cfg.epochs * steps // 5, 1)
    method.train()
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        shard = perm[info.rank::info.world_size][: steps * bs].to(device)
        bar = tqdm(range(steps), disable=not (progress and info.is_main), dynamic_ncols=True,
                   desc=f"{cfg.method}/{cfg.data.name} epoch {epoch + 1}/{cfg.epochs}")
        loss_sum = 0.0
        for i in bar:
            x = train_x[shard[i * bs:(i + 1) * bs]]
            with _autocast(cfg, device):
                loss = step_module(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            global_iter += 1
            loss_value = float(loss.detach())
            loss_sum += loss_value
            if info.is_main and (global_iter % cfg.log_every == 0 or i == steps - 1):
                with _autocast(cfg, device):
                    diag = monitor.diagnose(method.model, x, method.augment(x, None))
                row = {"epoch": epoch + 1, "iter": global_iter, "loss": loss_value, **inner.terms, **diag,
                       "seconds": round(elapsed + time.time() - t_epoch, 3)}
                rows.append(row)
                if global_iter >= warmup:
                    report_failures(monitor, diag, method, f"epoch {epoch + 1} iter {global_iter}", warnings_seen)
                bar.set_postfix(loss=f"{loss_value:.3f}", prior_gap=f"{diag['prior_gap']:.3f}",
                                inv=f"{diag['inv_gap']:.3f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.time() - t_epoch
        elapsed += epoch_seconds
        mean_loss = all_reduce_mean(loss_sum / max(steps, 1), info, device)
        erow: dict[str, Any] = {"epoch": epoch + 1, "iter": global_iter, "loss": round(mean_loss, 6),
                                "seconds": round(epoch_seconds, 3),
                                "images_per_s": round(steps * bs * info.world_size / max(epoch_seconds, 1e-9), 1)}
        if info.is_main and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            erow.update({f"test_{k}": round(v, 4) for k, v in evaluate(method, data).items()})
        epoch_rows.append(erow)
        if info.is_main and progress:
            tqdm.write(f"[{cfg.method}/{cfg.data.name}] epoch {epoch + 1}: " +
                       ", ".join(f"{k} {v}" for k, v in erow.items() if k != "epoch"))
        checkpoint(epoch + 1, elapsed)

    if not info.is_main:
        barrier(info)
        return {}
    done = epoch_rows[start_epoch:] or epoch_rows
    metrics: dict[str, Any] = {
        **evaluate(method, data),
        "method": cfg.method,
        "dataset": cfg.data.name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "iters": global_iter,
        "train_images": n,
        "world_size": info.world_size,
        "seconds": round(elapsed, 2),
        "seconds_per_epoch": round(sum(r["seconds"] for r in done) / max(len(done), 1), 3),
        "images_per_s": round(sum(r["images_per_s"] for r in done) / max(len(done), 1), 1),
        "warnings": warnings_seen,
    }
    metrics.update(final_diagnostics(rows))
    if out_dir is not None:
        write_json(out_dir / "metrics.json", metrics)
        write_figures(method, rows, out_dir)
    barrier(info)
    return metrics


def write_figures(method: Method, rows: list[dict[str, Any]], out_dir: Path) -> None:
    """Loss curves and, for methods with an energy term, the first chains of the replay buffer."""
    from gedi_core.plots import plot_losses, save_image_grid

    plot_losses(rows, method.cfg.model.num_clusters, out_dir / "losses.png", f"{method.name} on {method.cfg.data.name}")
    sampler = getattr(method, "sampler", None)
    if sampler is not None:
        save_image_grid(sampler.buffer.data[:100], out_dir / "buffer.png", nrow=10)
