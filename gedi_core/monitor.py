"""Failure-mode monitor: distances of the loss terms to their known optima.

The paper notes that the global optima are known: ``L_PRIOR -> ln c`` and ``L_INV -> 0``.
Logging both gaps shows the three failure modes while a run is going:

- cluster collapse: one cluster takes almost all of a batch (``L_PRIOR`` far above ``ln c``);
- representation collapse: the embeddings' variance across the batch goes to zero;
- label inconsistency: ``L_INV`` stays far above 0 (the views disagree);
- runaway SGLD chains: the replay buffer leaves the data's range by orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gedi_core.losses import inv_loss, prior_loss
from gedi_core.models import GEDIModel


@torch.no_grad()
def collapse_indicators(model: GEDIModel, x: Tensor, x_aug: Tensor | None = None) -> dict[str, float]:
    """Gaps to the optima and collapse indicators of ``model`` on one batch.

    ``prior_gap = L_PRIOR - ln c``, ``inv_gap = L_INV`` between ``x`` and ``x_aug`` (left out
    without ``x_aug``), the largest cluster's share of the batch and the embeddings' variance."""
    z = model.embed(x)
    logits = model.logits_from_embedding(z)
    num_clusters = logits.shape[-1]
    shares = torch.bincount(logits.argmax(-1), minlength=num_clusters).float() / x.shape[0]
    out = {"prior_gap": float(prior_loss(logits)) - math.log(num_clusters)}
    if x_aug is not None:
        out["inv_gap"] = float(inv_loss(logits, model(x_aug)))
    out["max_cluster_share"] = float(shares.max())
    out["embedding_var"] = float(z.var(0).mean())
    return out


@dataclass
class FailureMonitor:
    """Reports each failure mode once, when it first shows in the logged indicators."""

    num_clusters: int
    share_threshold: float = 0.9
    variance_threshold: float = 1e-6
    inv_threshold: float = 0.5
    sgld_range: float = 0.0  # SGLD chains beyond this |x| are reported (0: not checked)
    seen: set[str] = field(default_factory=set)

    def check(self, diag: dict[str, float], head_modes: bool = True) -> list[str]:
        """Messages for failure modes that show for the first time.

        With ``head_modes=False`` (methods that do not cluster with the head, e.g. Barlow Twins
        with k-means) only representation collapse and runaway SGLD chains are checked."""
        nan = float("nan")
        share, var = diag.get("max_cluster_share", nan), diag.get("embedding_var", nan)
        inv, chains = diag.get("inv_gap", nan), diag.get("sgld_max_abs", nan)
        modes = {
            "cluster collapse": (head_modes and share >= self.share_threshold and self.num_clusters > 1,
                                 f"one cluster takes {share:.0%} of the batch "
                                 f"(L_PRIOR - ln c = {diag.get('prior_gap', nan):.3f})"),
            "representation collapse": (var < self.variance_threshold, f"embedding variance {var:.2e}"),
            "label inconsistency": (head_modes and inv > self.inv_threshold * math.log(max(self.num_clusters, 2)),
                                    f"L_INV = {inv:.3f} (optimum 0)"),
            "runaway SGLD chains": (self.sgld_range > 0 and chains > self.sgld_range,
                                    f"replay buffer values reach |x| = {chains:.3g}, far outside the data range "
                                    f"(|x| <= {self.sgld_range:.3g}); lower sgld.step_size or sgld.noise"),
        }
        messages = []
        for mode, (present, detail) in modes.items():
            if present and mode not in self.seen:
                self.seen.add(mode)
                messages.append(f"{mode}: {detail}")
        return messages
