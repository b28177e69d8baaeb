"""The training loop for in-memory data sets: progress bar, log, monitor, checkpoints, resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gedi_core.config import TrainConfig, to_dict
from gedi_core.data import DataBundle, load_dataset
from gedi_core.methods import Method, build_method
from gedi_core.metrics import clustering_report
from gedi_core.monitor import FailureMonitor
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


FINAL_DIAGNOSTICS = ("prior_gap", "inv_gap", "max_cluster_share", "embedding_var")


def evaluate(method: Method, data: DataBundle) -> dict[str, float]:
    """NMI / ACC / ARI of the method's cluster assignments on the test split (mode restored after)."""
    was_training = method.training
    method.eval()
    method.prepare_eval(data.train_x.to(method.device))
    preds = method.predict(data.test_x.to(method.device)).cpu()
    method.train(was_training)
    return clustering_report(data.test_y, preds)


def report_failures(monitor: FailureMonitor, diag: dict[str, float], method: Method, where: str,
                    warnings_seen: list[str]) -> None:
    """Record and print each failure mode the monitor sees for the first time (``where``: 'iter 300')."""
    cfg = method.cfg
    for message in monitor.check(diag, head_modes=method.uses_cluster_head):
        warnings_seen.append(f"{where}: {message}")
        tqdm.write(f"warning [{cfg.method}/{cfg.data.name} seed {cfg.seed}] {where}: {message}")


def final_diagnostics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The monitor's last gaps and collapse indicators, as ``final_*`` metrics."""
    return {f"final_{k}": rows[-1][k] for k in FINAL_DIAGNOSTICS} if rows else {}


def train(cfg: TrainConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run and return its final metrics (also written to ``out/metrics.json``).

    The run folder receives ``config.yaml``, ``log.csv`` (every ``log_every`` iterations:
    the loss terms, the gaps to their optima and the collapse indicators), ``checkpoint.pt``
    (every ``ckpt_every`` iterations and at the end), ``metrics.json`` and figures.
    With ``resume=True`` an existing checkpoint is continued where it stopped.
    Image data sets (and any config with ``epochs > 0``) go to :func:`gedi_core.trainer.train_epochs`.
    """
    cfg.validate()
    from gedi_core.data.vision import is_image_dataset

    if cfg.epochs > 0 or is_image_dataset(cfg.data.name):
        # image data sets: the epoch-based trainer (mixed precision, DDP, checkpoint every epoch)
        from gedi_core.trainer import train_epochs

        return train_epochs(cfg, out=out, resume=resume, progress=progress)
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)
    data = load_dataset(cfg.data, cfg.seed)
    method = build_method(cfg, data.input_shape, data.augment).to(device)
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    monitor = FailureMonitor(cfg.model.num_clusters)
    batch_gen = torch.Generator().manual_seed(cfg.seed + 3)
    out_dir = Path(out) if out is not None else None
    rows: list[dict[str, Any]] = []
    warnings_seen: list[str] = []
    start_iter, elapsed = 0, 0.0

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(out_dir / "config.yaml", to_dict(cfg))
        ckpt_path = out_dir / CHECKPOINT
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
            method.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            method.load_extra_state(state["extra"])
            batch_gen.set_state(state["batch_gen"])
            method.generator.set_state(state["aug_gen"])
            set_rng_state(state["rng"])
            rows, warnings_seen = state["rows"], state["warnings"]
            monitor.seen = set(state["monitor_seen"])
            start_iter, elapsed = state["iter"], state["elapsed"]

    def checkpoint(iteration: int) -> None:
        if out_dir is None:
            return
        save_checkpoint(
            out_dir / CHECKPOINT,
            {
                "model": method.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "extra": method.extra_state(),
                "batch_gen": batch_gen.get_state(),
                "aug_gen": method.generator.get_state(),
                "rng": rng_state(),
                "rows": rows,
                "warnings": warnings_seen,
                "monitor_seen": sorted(monitor.seen),
                "iter": iteration,
                "elapsed": elapsed + time.time() - t0,
                "config": to_dict(cfg),
            },
        )
        write_csv(out_dir / "log.csv", rows)

    n = data.train_x.shape[0]
    train_x = data.train_x.to(device)
    warmup = max(cfg.iters // 5, 1)
    t0 = time.time()
    bar = tqdm(range(start_iter, cfg.iters), initial=start_iter, total=cfg.iters, disable=not progress,
               desc=f"{cfg.method}/{cfg.data.name}", dynamic_ncols=True)
    method.train()
    for it in bar:
        idx = torch.randint(n, (min(cfg.batch_size, n),), generator=batch_gen)
        x = train_x[idx.to(device)]
        loss, terms = method.training_step(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iters:
            diag = monitor.diagnose(method.model, x, method.augment(x, None))
            row = {"iter": it + 1, "loss": float(loss.detach()), **terms, **diag,
                   "seconds": round(elapsed + time.time() - t0, 3)}
            rows.append(row)
            if it + 1 >= warmup:
                report_failures(monitor, diag, method, f"iter {it + 1}", warnings_seen)
            bar.set_postfix(loss=f"{row['loss']:.3f}", prior_gap=f"{diag['prior_gap']:.3f}",
                            inv=f"{diag['inv_gap']:.3f}")
        if (it + 1) % cfg.ckpt_every == 0:
            checkpoint(it + 1)
    bar.close()
    seconds = elapsed + time.time() - t0
    checkpoint(cfg.iters)

    metrics: dict[str, Any] = {
        **evaluate(method, data),
        "method": cfg.method,
        "dataset": cfg.data.name,
        "seed": cfg.seed,
        "iters": cfg.iters,
        "seconds": round(seconds, 2),
        "warnings": warnings_seen,
    }
    metrics.update(final_diagnostics(rows))
    if out_dir is not None:
        write_json(out_dir / "metrics.json", metrics)
        write_figures(method, data, rows, out_dir)
    return metrics


def write_figures(method: Method, data: DataBundle, rows: list[dict[str, Any]], out_dir: Path) -> None:
    """Cluster assignments and density (2-D data only) and the loss curves."""
    from gedi_core.plots import plot_clusters, plot_density, plot_losses

    title = f"{method.name} on {data.name}"
    plot_losses(rows, method.cfg.model.num_clusters, out_dir / "losses.png", title)
    if len(data.input_shape) == 1 and data.input_shape[0] == 2:
        preds = method.predict(data.test_x.to(method.device)).cpu()
        plot_clusters(data.test_x, preds, out_dir / "clusters.png", title)
        sampler = getattr(method, "sampler", None)
        samples = sampler.buffer.data if sampler is not None else None
        method.eval()
        plot_density(method.model.energy, data.test_x.to(method.device), samples, out_dir / "density.png", title)
        method.train()
