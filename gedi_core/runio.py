"""Run-folder I/O: config, CSV log, metrics JSON, checkpoints, seeding."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml

CHECKPOINT = "checkpoint.pt"  # the checkpoint's file name inside a run folder


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | Path, data: Any) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows; the header is the union of their keys, in first-seen order."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomic save: write to a temporary file, then rename."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
