"""SwAV baseline: Sinkhorn-Knopp codes, stop-gradient, swapped prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gedi_core.losses import sinkhorn, swav_loss
from gedi_core.methods.base import Method, register


class SwAV(Method):
    """Prototypes are the cluster head ``U``; embeddings and prototypes are L2-normalised."""

    epsilon: float = 0.05
    sinkhorn_iters: int = 3

    def scores(self, x: Tensor) -> Tensor:
        """Cosine similarities between the embedding of ``x`` and the prototypes."""
        z = F.normalize(self.model.embed(x), dim=-1)
        return z @ F.normalize(self.model.head.weight, dim=-1).T

    def training_step(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        s1 = self.scores(self.augment(x, self.generator))
        s2 = self.scores(self.augment(x, self.generator))
        q1 = sinkhorn(s1.detach(), self.epsilon, self.sinkhorn_iters)
        q2 = sinkhorn(s2.detach(), self.epsilon, self.sinkhorn_iters)
        tau = self.cfg.model.tau
        loss = swav_loss(s1 / tau, s2 / tau, q1, q2)
        return loss, {"swav": float(loss.detach())}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return torch.cat([self.scores(c).argmax(-1) for c in x.split(1024)])


register("swav", SwAV, {"weights": {"gen": 0.0, "inv": 0.0, "prior": 0.0}}, summary="SwAV (Sinkhorn-Knopp)")
