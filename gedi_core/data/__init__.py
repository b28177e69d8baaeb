"""A registry of data sets by name; each loader returns a :class:`DataBundle`."""

from __future__ import annotations

from typing import Callable

from gedi_core.config import DataConfig
from gedi_core.data.base import Augment, DataBundle, gaussian_noise
from gedi_core.data.toy import load_circles, load_moons
from gedi_core.errors import GediError

Loader = Callable[[DataConfig, int], DataBundle]

DATASETS: dict[str, Loader] = {"moons": load_moons, "circles": load_circles}


def register_dataset(name: str, loader: Loader) -> None:
    """Add a data set under ``name`` (used by the vision module)."""
    DATASETS[name] = loader


def load_dataset(cfg: DataConfig, seed: int) -> DataBundle:
    """Load the data set named ``cfg.name``; unknown names raise :class:`GediError`."""
    if cfg.name not in DATASETS:
        raise GediError(f"unknown dataset '{cfg.name}' (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[cfg.name](cfg, seed)


__all__ = ["Augment", "DATASETS", "DataBundle", "gaussian_noise", "load_dataset", "register_dataset"]

# image data sets (svhn, cifar10, cifar100, mnist, fashion-mnist, mnist-t10k)
from gedi_core.data import vision as _vision  # noqa: E402

_vision.register_all()
