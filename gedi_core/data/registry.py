"""Data set loaders by name; each returns a :class:`DataBundle`."""

from __future__ import annotations

from typing import Callable

from gedi_core.config import DataConfig
from gedi_core.data.base import DataBundle, carve_validation
from gedi_core.registry import Registry

Loader = Callable[[DataConfig, int], DataBundle]

DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str, loader: Loader) -> None:
    """Add a data set under ``name``: ``loader(cfg, seed) -> DataBundle``."""
    DATASETS.register(name, loader)


def load_dataset(cfg: DataConfig, seed: int) -> DataBundle:
    """Load the data set named ``cfg.name``; unknown names raise :class:`GediError`.

    With ``cfg.validation > 0`` the bundle holds a validation split carved from the training set
    in place of the test split (:func:`gedi_core.data.base.carve_validation`)."""
    data = DATASETS.lookup(cfg.name)(cfg, seed)
    if cfg.validation > 0:
        data = carve_validation(data, cfg.validation, seed)
    return data
