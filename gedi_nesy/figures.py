"""Figures of a NeSy run: loss curves, the digit confusion matrix, evaluation images (test, or
validation with ``data.validation``) per predicted class, and the replay buffer's SGLD samples."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from gedi_core.models import evaluating
from gedi_core.runfolder import RunFolder
from gedi_nesy.evaluation import domain_values
from gedi_nesy.step import gedi_networks


def write_figures(model, pools, domains: Mapping[str, Sequence], rows: list[dict[str, Any]], run: RunFolder,
                  per_class: int = 10, samples: Mapping[str, torch.Tensor | None] | None = None) -> None:
    """``losses.png``; for the first GEDI network with a domain: ``confusion.png`` (true digit
    against the name the network gives it) and ``classes.png`` (one row of images per
    predicted class, up to ``per_class`` each), all on the evaluation pool; ``samples.png``:
    the first 100 chains of its replay buffer (``samples``: per network; runs with ``L_GEN``)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    from gedi_core.plots import plot_losses, save_figure, save_image_grid

    nets = [(n, net.network_module) for n, net in gedi_networks(model).items() if n in domains]
    if not nets:
        return
    name, module = nets[0]
    plot_losses(rows, module.num_clusters, run.file("losses.png"), f"{name}")
    with evaluating(module), torch.no_grad():
        preds = torch.cat([module.logits(c).argmax(-1).cpu() for c in pools.eval_x.split(1000)])
    named = domain_values(domains[name])[preds]
    labels = sorted(set(pools.eval_y.tolist()) | set(named.tolist()))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ConfusionMatrixDisplay.from_predictions(pools.eval_y.numpy(), named.numpy(), labels=labels, ax=ax,
                                            colorbar=False)
    ax.set_xlabel(f"predicted by {name}")
    ax.set_ylabel("true digit")
    fig.tight_layout()
    save_figure(fig, run.file("confusion.png"), dpi=110)
    k = module.num_clusters
    grid = torch.full((k * per_class, *pools.eval_x.shape[1:]), -1.0)
    for c in range(k):
        chosen = pools.eval_x[preds == c][:per_class]
        grid[c * per_class: c * per_class + len(chosen)] = chosen
    save_image_grid(grid, run.file("classes.png"), nrow=per_class)
    chains = (samples or {}).get(name)
    if chains is not None and len(chains):
        save_image_grid(chains[:100], run.file("samples.png"), nrow=10)
