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
                  per_class: int = 10, samples: Mapping[str, torch.Tensor | None] | None = None,
                  prior_optimum: float | None = None) -> None:
    """``losses.png`` (``prior_optimum``: the trained ``L_PRIOR``'s optimum, see
    :func:`gedi_core.figures.plot_losses`); for the first GEDI network with a domain:
    ``confusion.png`` (true digit against the name the network gives it) and ``classes.png`` (one
    row of images per predicted class, up to ``per_class`` each), all on the evaluation pool;
    ``samples.png``: the first 100 chains of its replay buffer (``samples``: per network; runs
    with ``L_GEN``)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    from gedi_core.figures import plot_losses, save_figure, save_labelled_grid

    nets = [(n, net.network_module) for n, net in gedi_networks(model).items() if n in domains]
    if not nets:
        return
    name, module = nets[0]
    plot_losses(rows, module.num_clusters, run.file("losses.png"),
                f"{name}: loss terms per logged iteration", prior_optimum)
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
    counts = torch.bincount(preds, minlength=k)
    for c in range(k):
        chosen = pools.eval_x[preds == c][:per_class]
        grid[c * per_class: c * per_class + len(chosen)] = chosen
    values = [str(v) for v in domains[name]]
    save_labelled_grid(grid, run.file("classes.png"), per_class,
                       f"{name}: {pools.evaluated_on} images by predicted class (up to {per_class} each)",
                       [f"{values[c]} ({int(counts[c])})" for c in range(k)],
                       "predicted class (number of images) per row; black: no more images of that class")
    chains = (samples or {}).get(name)
    if chains is not None and len(chains):
        n = min(len(chains), 100)
        save_labelled_grid(chains[:n], run.file("samples.png"), 10,
                           f"{name}: {n} of the {len(chains)} SGLD chains of the replay buffer (L_GEN's samples)",
                           None, "model samples x ~ exp(-E(x)), one per cell")
