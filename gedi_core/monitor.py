"""Failure-mode monitor: distances of the loss terms to their known optima.

The paper notes that the global optima are known: ``L_PRIOR -> ln c`` and ``L_INV -> 0``.
Logging both gaps shows the three failure modes while a run is going:

- cluster collapse: one cluster takes almost all of a batch (``L_PRIOR`` far above ``ln c``);
- representation collapse: the embeddings' variance across the batch goes to zero;
- label inconsistency: ``L_INV`` stays far above 0 (the views disagree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gedi_core.losses import inv_loss, prior_loss
from gedi_core.models import GEDIModel


@dataclass
class FailureMonitor:
    """Computes the gaps on a batch and reports each failure mode once when it first shows."""

    num_clusters: int
    share_threshold: float = 0.9
    variance_threshold: float = 1e-6
    inv_threshold: float = 0.5
    seen: set[str] = field(default_factory=set)

    @torch.no_grad()
    def diagnose(self, model: GEDIModel, x: Tensor, x_aug: Tensor) -> dict[str, float]:
        """Gaps to the optima and collapse indicators on one batch."""
        z = model.embed(x)
        logits = model.logits_from_embedding(z)
        logits_aug = model(x_aug)
        shares = torch.bincount(logits.argmax(-1), minlength=self.num_clusters).float() / x.shape[0]
        return {
            "prior_gap": float(prior_loss(logits)) - math.log(self.num_clusters),
            "inv_gap": float(inv_loss(logits, logits_aug)),
            "max_cluster_share": float(shares.max()),
            "embedding_var": float(z.var(0).mean()),
        }

    def check(self, diag: dict[str, float], head_modes: bool = True) -> list[str]:
        """Messages for failure modes that show for the first time.

        With ``head_modes=False`` (methods that do not cluster with the head, e.g. Barlow Twins
        with k-means) only representation collapse is checked.
        """
        modes = {
            "cluster collapse": head_modes
            and diag["max_cluster_share"] >= self.share_threshold
            and self.num_clusters > 1,
            "representation collapse": diag["embedding_var"] < self.variance_threshold,
            "label inconsistency": head_modes
            and diag["inv_gap"] > self.inv_threshold * math.log(max(self.num_clusters, 2)),
        }
        details = {
            "cluster collapse": f"one cluster takes {diag['max_cluster_share']:.0%} of the batch "
            f"(L_PRIOR - ln c = {diag['prior_gap']:.3f})",
            "representation collapse": f"embedding variance {diag['embedding_var']:.2e}",
            "label inconsistency": f"L_INV = {diag['inv_gap']:.3f} (optimum 0)",
        }
        messages = []
        for mode, present in modes.items():
            if present and mode not in self.seen:
                self.seen.add(mode)
                messages.append(f"{mode}: {details[mode]}")
        return messages
