"""Data set loaders by name; each returns a :class:`DataBundle`."""

from __future__ import annotations

from typing import Callable

from gedi_core.config import DataConfig
from gedi_core.data.base import DataBundle
from gedi_core.errors import GediError

Loader = Callable[[DataConfig, int], DataBundle]

DATASETS: dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader) -> None:
    """Add a data set under ``name``: ``loader(cfg, seed) -> DataBundle``."""
    DATASETS[name] = loader


def load_dataset(cfg: DataConfig, seed: int) -> DataBundle:
    """Load the data set named ``cfg.name``; unknown names raise :class:`GediError`."""
    if cfg.name not in DATASETS:
        raise GediError(f"unknown dataset '{cfg.name}' (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[cfg.name](cfg, seed)
