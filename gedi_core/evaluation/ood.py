"""Out-of-distribution detection (paper Tables 5, 11, 12).

The score of an input is ``s(x) = -|| d log p(x) / dx ||_2 = -|| dE(x)/dx ||_2`` (the
normaliser does not depend on ``x``): in-distribution inputs sit near modes of the learned
density, where the gradient is small. AUROC takes the in-distribution test split as the
positive class; 0.5 is chance. The unnormalised log-density ``-E(x)`` is reported beside it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gedi_core.config import DataConfig
from gedi_core.methods import Method
from gedi_core.models import evaluating


def ood_images(name: str, data: DataConfig, seed: int, root: str | None = None) -> tuple[Tensor, str]:
    """The out-of-distribution images of data set ``name`` under the run's data config ``data``
    (``root``: another data root for it, ``--ood-root``): for image sets the test split, or the
    training split where only that one exists (:func:`gedi_core.data.vision.read_some_split`);
    for other sets their test split; for a run with ``data.validation`` the validation split
    carved from the set's training split, as before (the test split is not read). Returns the
    images and the split's name."""
    import dataclasses

    from gedi_core.data import load_dataset
    from gedi_core.data.vision import is_image_dataset, read_some_split

    cfg = dataclasses.replace(data, name=name, **({"data_root": root} if root is not None else {}))
    if is_image_dataset(name) and cfg.validation == 0:
        return read_some_split(name, cfg)
    other = load_dataset(cfg, seed)
    return other.test_x, other.evaluated_on


def ood_scores(method: Method, x: Tensor, batch_size: int = 256, score: str = "grad_norm") -> Tensor:
    """Per-input scores, higher = more in-distribution: ``grad_norm`` (``-||dE/dx||``) or ``logp`` (``-E``)."""
    if score not in ("grad_norm", "logp"):
        raise ValueError(f"unknown OOD score '{score}' (grad_norm, logp)")
    out = []
    with evaluating(method):
        for chunk in x.split(batch_size):
            xc = chunk.to(method.device).float().requires_grad_(score == "grad_norm")
            with torch.enable_grad():
                energy = method.model.energy(xc)
                if score == "grad_norm":
                    (grad,) = torch.autograd.grad(energy.sum(), xc)
                    out.append(-grad.flatten(1).norm(dim=1).detach().cpu())
                else:
                    out.append(-energy.detach().cpu())
    return torch.cat(out)


def ood_auroc(method: Method, in_x: Tensor, out_x: Tensor, score: str = "grad_norm") -> float:
    """AUROC of separating ``in_x`` (positives) from ``out_x`` by :func:`ood_scores`."""
    from sklearn.metrics import roc_auc_score

    s_in, s_out = ood_scores(method, in_x, score=score), ood_scores(method, out_x, score=score)
    labels = torch.cat([torch.ones(len(s_in)), torch.zeros(len(s_out))]).numpy()
    return float(roc_auc_score(labels, torch.cat([s_in, s_out]).numpy()))
