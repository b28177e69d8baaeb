"""Barlow Twins baseline; clusters by k-means on the learned features."""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from gedi_core.losses import barlow_twins_loss
from gedi_core.methods.base import Method, register


class BarlowTwins(Method):
    """Redundancy reduction between the projector outputs of two augmented views."""

    kmeans: KMeans | None = None
    uses_cluster_head = False

    def training_step(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        z1 = self.model.embed(self.augment(x, self.generator))
        z2 = self.model.embed(self.augment(x, self.generator))
        loss = barlow_twins_loss(z1, z2)
        return loss, {"barlow": float(loss.detach())}

    @torch.no_grad()
    def _features(self, x: Tensor) -> Tensor:
        return torch.cat([self.model.features(c) for c in x.split(1024)]).cpu()

    def prepare_eval(self, train_x: Tensor) -> None:
        k = self.cfg.model.num_clusters
        self.kmeans = KMeans(n_clusters=k, n_init=10, random_state=self.cfg.seed).fit(self._features(train_x).numpy())

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        if self.kmeans is None:
            raise RuntimeError("BarlowTwins.predict needs prepare_eval(train_x) first")
        return torch.as_tensor(self.kmeans.predict(self._features(x).numpy()), dtype=torch.long)


register("barlow", BarlowTwins, {"weights": {"gen": 0.0, "inv": 0.0, "prior": 0.0}}, summary="Barlow Twins + k-means")
