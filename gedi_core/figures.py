"""Figures written into the run folder (matplotlib, PNG, no display needed): the plotting pieces, and
:func:`write_figures`, those of a gedi_core run (``gedi_nesy.figures`` writes a NeSy run's)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from gedi_core.models import evaluating  # noqa: E402
from gedi_core.runfolder import atomic_path  # noqa: E402

if TYPE_CHECKING:
    from gedi_core.data import DataBundle
    from gedi_core.loop import FitResult
    from gedi_core.methods import Method
    from gedi_core.runfolder import RunFolder


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def plot_clusters(x: Tensor, preds: Tensor, path: str | Path, title: str = "") -> None:
    """Cluster assignments over 2-D data (paper Fig. 3/5)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x[:, 0].cpu(), x[:, 1].cpu(), c=preds.cpu(), cmap="tab10", s=6, vmin=0, vmax=9)
    ax.set_title(title or "cluster assignments")
    ax.set_aspect("equal")
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def plot_density(
    energy_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    samples: Tensor | None,
    path: str | Path,
    title: str = "",
    resolution: int = 150,
) -> None:
    """The learned density ``exp(-E(x))`` (normalised on the grid) with SGLD samples (Fig. 5 k-t)."""
    lo = x.min(0).values - 0.5
    hi = x.max(0).values + 0.5
    gx, gy = torch.meshgrid(
        torch.linspace(float(lo[0]), float(hi[0]), resolution),
        torch.linspace(float(lo[1]), float(hi[1]), resolution),
        indexing="xy",
    )
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    device = next(iter([x.device]))
    energy = torch.cat([energy_fn(c.to(device)).cpu() for c in grid.split(4096)])
    logp = -energy - torch.logsumexp(-energy, 0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(
        logp.exp().reshape(resolution, resolution).numpy(),
        origin="lower",
        extent=(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])),
        cmap="viridis",
    )
    if samples is not None:
        s = samples[:500].cpu()
        ax.scatter(s[:, 0], s[:, 1], s=3, c="white", alpha=0.6, label="SGLD samples")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title or "learned density")
    fig.tight_layout()
    save_figure(fig, path)


Panel = tuple[str, str, float | None, str | None]  # row key, label, optimum (None: unknown), monitored key


def loss_panels(rows: Sequence[dict], num_clusters: int, prior_optimum: float | None = None) -> list[Panel]:
    """The panels of :func:`plot_losses` that have data in ``rows``: ``L_NESY -> 0`` (NeSy runs,
    rows with ``nesy``), ``L_PRIOR -> prior_optimum`` (the trained term's optimum, e.g. ``-ln c``
    for the entropy form, :func:`gedi_core.monitor.prior_term_optimum`; default ``ln c``, the
    cross-entropy form; an untrained prior is drawn as the monitored cross-entropy, optimum
    ``ln c``), ``L_INV -> 0`` (trained, or the monitored ``inv_gap``) and ``L_GEN`` (no known
    optimum)."""
    if not rows:
        return []
    uniform = math.log(num_clusters)
    trained_prior = uniform if prior_optimum is None else prior_optimum
    panels: list[Panel] = [
        ("nesy", "L_NESY", 0.0, None),
        ("prior", "L_PRIOR", trained_prior if "prior" in rows[0] else uniform, "prior_gap"),
        ("inv", "L_INV", 0.0, "inv_gap"),
        ("gen", "L_GEN", None, None),
    ]
    return [p for p in panels if p[0] in rows[0] or (p[3] is not None and p[3] in rows[0])]


def plot_losses(rows: Sequence[dict], num_clusters: int, path: str | Path, title: str = "",
                prior_optimum: float | None = None) -> None:
    """Loss curves (unweighted) against their known optima (paper Fig. 4), one panel per term of
    :func:`loss_panels`."""
    panels = loss_panels(rows, num_clusters, prior_optimum)
    if not panels:
        return
    it = np.array([r["iter"] for r in rows])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, label, optimum, diag_key) in zip(axes[0], panels):
        if key in rows[0]:
            ax.plot(it, [r[key] for r in rows], label=f"{label} (trained)")
        elif diag_key is not None:
            ax.plot(it, [r[diag_key] + (optimum or 0.0) for r in rows], "--", label=f"{label} (monitored only)")
        if optimum is not None:
            ax.axhline(optimum, color="k", lw=0.8, ls=":", label=f"optimum {optimum:.3f}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss (unweighted)")
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_labelled_grid(images: Tensor, path: str | Path, nrow: int, title: str,
                       row_labels: Sequence[str] | None = None, xlabel: str = "") -> None:
    """:func:`save_image_grid`'s grid as a titled figure, with one label per row (e.g. the
    predicted class) and an x-axis label saying what the columns are."""
    from torchvision.utils import make_grid

    imgs = unit_range(images)
    grid = make_grid(imgs, nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()
    rows = math.ceil(len(imgs) / nrow)
    fig, ax = plt.subplots(figsize=(0.55 * nrow + 1.4, 0.55 * rows + 1.1))
    ax.imshow(grid, interpolation="nearest")  # make_grid gives three channels, grey images included
    cell = grid.shape[0] / max(rows, 1)
    if row_labels is not None:
        ax.set_yticks([cell * (i + 0.5) for i in range(len(row_labels))], list(row_labels))
    else:
        ax.set_yticks([])
    ax.set_xticks([])
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def unit_range(images: Tensor) -> Tensor:
    """Images in [-1, 1] or [0, 1] as [0, 1] (on the CPU, detached)."""
    imgs = images.detach().cpu()
    if imgs.min() < 0:
        imgs = (imgs + 1) / 2
    return imgs.clamp(0, 1)


def save_image_grid(images: Tensor, path: str | Path, nrow: int = 10) -> None:
    """A grid of images in [-1, 1] or [0, 1] (sample grids, Fig. 6)."""
    from torchvision.utils import save_image

    with atomic_path(path) as tmp:
        save_image(unit_range(images), str(tmp), nrow=nrow)


def write_figures(method: Method, data: DataBundle, result: FitResult, run: RunFolder) -> None:
    """Loss curves; cluster assignments and density for 2-D data; the replay buffer for images."""
    title = f"{method.name} on {data.name}"
    plot_losses(result.rows, method.cfg.model.num_clusters, run.file("losses.png"), title)
    buffer = method.replay_buffer()
    if len(data.input_shape) == 1 and data.input_shape[0] == 2:
        preds = method.predict(data.test_x.to(method.device)).cpu()
        plot_clusters(data.test_x, preds, run.file("clusters.png"), title)
        with evaluating(method):
            plot_density(method.model.energy, data.test_x.to(method.device), buffer, run.file("density.png"), title)
    elif buffer is not None and len(data.input_shape) == 3:
        save_image_grid(buffer[:100], run.file("buffer.png"), nrow=10)
