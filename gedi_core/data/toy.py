"""Two-moons and concentric circles (paper Section 5.1, appendix L)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons

from gedi_core.config import DataConfig
from gedi_core.data.base import DataBundle, gaussian_noise


def _bundle(name: str, generator, cfg: DataConfig, seed: int) -> DataBundle:
    x_tr, y_tr = generator(n_samples=cfg.n_train, noise=cfg.data_noise, random_state=seed)
    x_te, y_te = generator(n_samples=cfg.n_test, noise=cfg.data_noise, random_state=seed + 10_000)
    mean, std = (x_tr.mean(0), x_tr.std(0)) if cfg.standardize else (0.0, 1.0)
    to_t = lambda a: torch.as_tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return DataBundle(
        name=name,
        train_x=to_t(x_tr),
        train_y=torch.as_tensor(y_tr, dtype=torch.long),
        test_x=to_t(x_te),
        test_y=torch.as_tensor(y_te, dtype=torch.long),
        num_classes=2,
        augment=gaussian_noise(cfg.aug_noise),
        note=f"{name}: {cfg.n_train} train / {cfg.n_test} test points" + (", standardised" if cfg.standardize else ""),
    )


def load_moons(cfg: DataConfig, seed: int) -> DataBundle:
    return _bundle("moons", make_moons, cfg, seed)


def load_circles(cfg: DataConfig, seed: int) -> DataBundle:
    def circles(n_samples: int, noise: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
        return make_circles(n_samples=n_samples, noise=noise, factor=0.5, random_state=random_state)

    return _bundle("circles", circles, cfg, seed)
