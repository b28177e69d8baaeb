"""The GEDI network: backbone g, projector and cluster head U.

``logits(x) = U^T proj(g(x)) / tau``, ``p(y|x) = softmax(logits)`` and the energy
``E(x) = -logsumexp_y logits(x)_y``: the classifier read as an energy-based model.
Networks return logits; probabilities and energies are derived here only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gedi_core.models.mlp import mlp


class GEDIModel(nn.Module):
    """Backbone -> projector -> cluster head, with the energy view of the same network."""


    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        proj_hidden: int,
        proj_dim: int,
        num_clusters: int,
        tau: float = 1.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp([feature_dim, proj_hidden, proj_dim])
        self.head = nn.Linear(proj_dim, num_clusters, bias=False)  # U
        self.tau = tau
        self.normalize = normalize
        self.num_clusters = num_clusters

    def features(self, x: Tensor) -> Tensor:
        """Backbone output ``g(x)``: the representation used by probes."""
        return self.backbone(x)

    def embed(self, x: Tensor) -> Tensor:
        """Projector output, the space in which the cluster head ``U`` acts."""
        return self.projector(self.backbone(x))

    def logits_from_embedding(self, z: Tensor) -> Tensor:
        """``U^T z / tau``; with ``normalize`` both ``z`` and the columns of ``U`` have unit norm,
        which bounds the logits to ``[-1/tau, 1/tau]`` and keeps the energy from diverging."""
        if self.normalize:
            return cosine_logits(z, self.head.weight, self.tau)
        return self.head(z) / self.tau

    def forward(self, x: Tensor) -> Tensor:
        """Cluster logits ``U^T proj(g(x)) / tau``."""
        return self.logits_from_embedding(self.embed(x))

    def probs(self, x: Tensor) -> Tensor:
        """``p(y|x)``."""
        return F.softmax(self(x), dim=-1)

    def energy(self, x: Tensor) -> Tensor:
        """``E(x) = -logsumexp_y logits(x)_y`` (one value per sample)."""
        return energy_from_logits(self(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """Cluster assignments ``argmax_y p(y|x)``, evaluated in chunks."""
        return torch.cat([self(chunk).argmax(-1) for chunk in x.split(batch_size)])


def cosine_logits(z: Tensor, prototypes: Tensor, tau: float) -> Tensor:
    """``U^T z / tau`` with ``z`` and the prototypes (rows of ``prototypes``, ``(K, D)``) scaled to
    unit norm: the GEDI head, its logits bounded by ``1/tau``."""
    return F.normalize(z, dim=-1) @ F.normalize(prototypes, dim=-1).T / tau


def energy_from_logits(logits: Tensor) -> Tensor:
    """``E(x) = -logsumexp(logits)`` (paper Eq. 1 with the classifier's logits)."""
    return -torch.logsumexp(logits, dim=-1)
