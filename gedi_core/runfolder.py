"""The run folder: ``config.yaml``, ``log.csv``, ``epochs.csv``, ``metrics.json``, checkpoints.

Rules, kept here once for every command of the project:

- every file is written atomically (a temporary file in the same folder, then a rename), so a
  kill at any moment leaves either the old or the new file, never a truncated one;
- a finished run (one with ``metrics.json``) is never overwritten, and an unfinished one only
  continues with ``--resume``;
- ``--resume`` continues only a run whose checkpoint holds the same config (the keys that
  differ are named), and ``config.yaml`` is written only after the checkpoint has loaded;
- a checkpoint that cannot be read is reported in one line, not with a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import yaml

from gedi_core.errors import GediError

CHECKPOINT = "checkpoint.pt"  # the checkpoint's file name inside a run folder
METRICS = "metrics.json"
CONFIG = "config.yaml"
#: config keys that may change when a run is resumed (they do not change what is computed)
RESUMABLE_KEYS = ("device", "compile_cache", "eval_every", "log_every")


# ----------------------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); it replaces ``path`` on success."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows; the header is the union of their keys, in first-seen order."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict; a missing, empty, truncated or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise GediError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GediError(f"{path}: cannot read the checkpoint (empty, truncated or not a checkpoint: {reason})") from None
    if not isinstance(state, dict):
        raise GediError(f"{path}: not a checkpoint of this project (holds a {type(state).__name__})")
    return state


# ----------------------------------------------------------------------------- config comparison
def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       ignore: Sequence[str] = RESUMABLE_KEYS) -> list[str]:
    """``key: old -> new`` for every key whose value differs (``ignore``: keys allowed to change)."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[-1] in ignore or key in ignore:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return out


# ----------------------------------------------------------------------------- the folder
class RunFolder:
    """One run's folder. ``open`` checks it before any data is loaded; ``resume_state`` loads and
    checks the checkpoint; the ``write_*`` methods write atomically (on the main process only).

    ``config`` is the run's resolved config as a nested dict (what ``config.yaml`` holds);
    ``defaults`` the config class's defaults (same layout).
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any], resume: bool = False,
                 is_main: bool = True, defaults: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.config = dict(config)
        self.resume = resume
        self.is_main = is_main
        #: the config's defaults: a key added to the config after a checkpoint was written is
        #: compared with its default when that checkpoint is resumed
        self.defaults = dict(defaults or {})

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def rank_checkpoint_path(self, rank: int) -> Path:
        return self.path / (CHECKPOINT if rank == 0 else f"checkpoint.rank{rank}.pt")

    def open(self) -> "RunFolder":
        """Check the folder before anything is loaded: writable (or creatable); a finished run is
        refused; an unfinished one needs ``resume``; ``resume`` needs a checkpoint. Nothing is
        written: the folder is made when the run starts."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise GediError(f"--out {p}: exists and is not a folder")
        if (p / METRICS).is_file():
            raise GediError(f"--out {p}: holds a finished run ({METRICS}); it is never overwritten: "
                            "choose a fresh --out")
        if self.resume:
            if not self.checkpoint_path.is_file():
                raise GediError(f"--resume: {p} has no {CHECKPOINT}, so there is nothing to resume; "
                                "drop --resume to start the run")
        elif self.checkpoint_path.is_file():
            raise GediError(f"--out {p}: holds an unfinished run ({CHECKPOINT}); continue it with --resume "
                            "or choose a fresh --out")
        # a folder with a config but no checkpoint holds no work: the run starts afresh
        parent = p
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise GediError(f"--out {p}: cannot write there ({parent} is not a writable folder)")
        return self

    def resume_state(self, rank: int = 0) -> dict[str, Any] | None:
        """The checkpoint to continue (None for a fresh run), after checking that it was written
        with the same config; then ``config.yaml`` is (re)written."""
        if not self.resume:
            self.write_config()
            return None
        state = load_checkpoint(self.checkpoint_path)
        saved = state.get("config")
        if not isinstance(saved, Mapping):
            raise GediError(f"{self.checkpoint_path}: the checkpoint holds no config; it cannot be resumed")
        filled = {**flatten(self.defaults), **flatten(saved)}
        diff = config_differences(filled, self.config)
        if diff:
            raise GediError(f"--resume: the config differs from the checkpoint's ({'; '.join(diff)}); "
                            "resume with the same settings or choose a fresh --out")
        if rank != 0:  # this rank's own random state and replay buffer over rank 0's shared state
            own = load_checkpoint(self.rank_checkpoint_path(rank))
            state = {**state, **own, "step": {**state.get("step", {}), **own.get("step", {})}}
        self.write_config()
        return state

    def write_config(self) -> None:
        if self.is_main:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GediError(f"--out {self.path}: cannot create the folder ({exc.strerror or exc})") from None
            write_yaml(self.path / CONFIG, self.config)

    def save(self, state: dict[str, Any], rank: int = 0) -> None:
        """A checkpoint (``config`` added); rank > 0 writes its own file of per-rank state."""
        if rank == 0:
            save_checkpoint(self.checkpoint_path, {**state, "config": self.config})
        else:
            save_checkpoint(self.rank_checkpoint_path(rank), state)

    def write_rows(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.is_main and rows:
            write_csv(self.path / name, rows)

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """Write ``metrics.json``, which marks the run finished."""
        if self.is_main:
            write_json(self.path / METRICS, dict(metrics))

    def file(self, name: str) -> Path:
        return self.path / name
