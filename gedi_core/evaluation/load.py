"""Rebuild a trained method from its run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gedi_core.config import TrainConfig, build_config, read_config_file
from gedi_core.data import DataBundle, load_dataset
from gedi_core.errors import GediError
from gedi_core.methods import Method, build_method
from gedi_core.checkpoint import local_state, model_state, read_checkpoint
from gedi_core.runfolder import CHECKPOINT, METRICS


def load_run(run_dir: str | Path, device: str = "cpu", data_overrides: dict | None = None,
             ) -> tuple[Method, DataBundle, TrainConfig]:
    """The method of run folder ``run_dir`` with its trained weights and replay buffer, its data
    (``data_overrides`` may change e.g. ``data_root`` or ``test_subset``) and its config."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "checkpoint.pt"):
        if not (run_dir / name).is_file():
            raise GediError(f"{run_dir}: not a run folder (no {name}); train with --out {run_dir} first")
    cfg = build_config(TrainConfig, [(str(run_dir / "config.yaml"), read_config_file(run_dir / "config.yaml")),
                                     ("overrides", {"data": data_overrides or {}, "device": device})])
    data = load_dataset(cfg.data, cfg.seed)
    method = build_method(cfg, data.input_shape, data.augment).to(torch.device(device))
    state = read_checkpoint(run_dir / CHECKPOINT, need=("step.model", "step.local.extra"))
    method.model.load_state_dict(model_state(state))
    method.load_extra_state(local_state(state)["extra"])
    method.eval()
    return method, data, cfg


def unfinished_note(run_dir: str | Path) -> str | None:
    """A note when ``run_dir`` holds a checkpoint but no ``metrics.json`` (its training has not
    finished: what it holds is the last checkpoint, not the final model); else ``None``."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).is_file() and not (run_dir / METRICS).is_file():
        return (f"warning: {run_dir} is an unfinished run (no {METRICS}); using its last checkpoint "
                f"(finish it with --resume)")
    return None


def warn_if_unfinished(run_dir: str | Path, prog: str) -> None:
    """Print :func:`unfinished_note` as one line on stderr (``prog: warning: ...``) if there is one."""
    note = unfinished_note(run_dir)
    if note is not None:
        print(f"{prog}: {note}", file=sys.stderr)
