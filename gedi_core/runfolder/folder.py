"""The run folder of one run (:class:`RunFolder`): checked before any data is loaded, locked
before its first write, resumed only with the same config and inputs."""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

from gedi_core import checkpoint
from gedi_core.checkpoint import load_checkpoint
from gedi_core.errors import GediError
from gedi_core.runfolder.atomic import file_digest, save_checkpoint, write_csv, write_json, write_text, write_yaml
from gedi_core.runfolder.lock import acquire_lock, release_lock
from gedi_core.runfolder.names import CHECKPOINT, CONFIG, INPUTS, LOCK, METRICS, PROGRAM
from gedi_core.runfolder.resume import config_differences, flatten


class RunFolder:
    """One run's folder. ``open`` checks it before any data is loaded; ``resume_state`` loads and
    checks the checkpoint; the ``write_*`` methods write atomically (on the main process only).

    ``config`` is the run's resolved config as a nested dict (what ``config.yaml`` holds);
    ``defaults`` the config class's defaults (same layout).
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any], resume: bool = False,
                 is_main: bool = True, defaults: Mapping[str, Any] | None = None) -> None:
        self.given = "" if path is None else str(path)  # as the user wrote it ('' is refused)
        self.path = Path(path)
        self.config = dict(config)
        self.resume = resume
        self.is_main = is_main
        #: the config's defaults: a key added to the config after a checkpoint was written is
        #: compared with its default when that checkpoint is resumed
        self.defaults = dict(defaults or {})
        #: input files the run depends on, by name (``program``, ``queries``, ...): kept with their
        #: digest in each checkpoint (the program's text as ``program.pl``); resuming checks them
        self.inputs: dict[str, str | Path] = {}
        self.input_digests: dict[str, dict[str, str]] = {}
        self.locked = False

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def rank_checkpoint_path(self, rank: int) -> Path:
        return self.path / (CHECKPOINT if rank == 0 else f"checkpoint.rank{rank}.pt")

    def open(self) -> "RunFolder":
        """Check the folder before anything is loaded: writable (or creatable); a finished run is
        refused; an unfinished one needs ``resume``; ``resume`` needs a checkpoint. Nothing is
        written: the folder is made when the run starts."""
        if not self.given.strip():
            raise GediError("--out '': an empty path; give the run folder")
        p = self.path
        if p.exists() and not p.is_dir():
            raise GediError(f"--out {p}: exists and is not a folder")
        if (p / METRICS).is_file():
            raise GediError(f"--out {p}: holds a finished run ({METRICS}); it is never overwritten: "
                            "choose a fresh --out")
        self._check_state()
        if self.resume and self.inputs and (p / INPUTS).is_file():  # early, before any data is loaded
            try:
                saved = json.loads((p / INPUTS).read_text())
            except (OSError, ValueError):
                saved = {}  # the checkpoint's copy is checked when it is loaded
            self.check_inputs({"inputs": saved})
        # a folder with a config but no checkpoint holds no work: the run starts afresh
        parent = p
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise GediError(f"--out {p}: cannot write there ({parent} is not a writable folder)")
        return self

    def _check_state(self) -> None:
        """A finished run is refused; an unfinished one needs ``resume``; ``resume`` a checkpoint."""
        p = self.path
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

    def lock(self) -> None:
        """Take the folder's lock (:func:`~gedi_core.runfolder.lock.acquire_lock`) before the first
        write, then check the folder again (another writer may have finished it meanwhile)."""
        if not self.is_main or self.locked:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GediError(f"--out {self.path}: cannot create the folder ({exc.strerror or exc})") from None
        path = self.path / LOCK
        acquire_lock(path, self.path)
        self.locked = True
        # released by unlock() (finish, or the command's finally), else when this object goes
        self._release = weakref.finalize(self, release_lock, path, os.getpid())
        try:
            self._check_state()
        except GediError:
            self.unlock()
            raise

    def unlock(self) -> None:
        """Release the lock if this process holds it (idempotent)."""
        if self.locked:
            self._release()
            self.locked = False

    # -- the input files
    def keep_inputs(self) -> None:
        """A fresh run: the digest of each input file, and the program's text as ``program.pl``."""
        self.input_digests = {}
        for name, path in self.inputs.items():
            if path is None or not Path(path).is_file():
                continue
            self.input_digests[name] = {"path": str(path), "sha256": file_digest(path)}
            if name == "program" and self.is_main:
                write_text(self.path / PROGRAM, Path(path).read_text())
        if self.input_digests and self.is_main:
            write_json(self.path / INPUTS, self.input_digests)

    def check_inputs(self, state: Mapping[str, Any]) -> None:
        """``--resume``: every input file the checkpoint recorded still has its digest."""
        saved = checkpoint.inputs_of(state)
        for name, path in self.inputs.items():
            if name not in saved or path is None or not Path(path).is_file():
                continue
            if file_digest(path) != saved[name]["sha256"]:
                kept = f"; it is kept in {self.path / PROGRAM}" if name == "program" else ""
                raise GediError(f"--resume: {path} differs from the {name} file the run trained on{kept}; "
                                "resume with that file or choose a fresh --out")
        self.input_digests = dict(saved)

    def check_layout(self, state: Mapping[str, Any]) -> None:
        """A checkpoint of another layout (an older version's) is one line saying which."""
        checkpoint.check_layout(state, self.checkpoint_path)

    def resume_state(self, rank: int = 0) -> dict[str, Any] | None:
        """The checkpoint to continue (None for a fresh run), after checking that it was written
        with the same config; then ``config.yaml`` is (re)written."""
        if not self.resume:
            self.lock()
            self.write_config()
            self.keep_inputs()
            return None
        state = load_checkpoint(self.checkpoint_path)
        saved = checkpoint.config_of(state)
        if not isinstance(saved, Mapping):
            raise GediError(f"{self.checkpoint_path}: the checkpoint holds no config; it cannot be resumed")
        filled = {**flatten(self.defaults), **flatten(saved)}
        diff = config_differences(filled, self.config)
        if diff:
            raise GediError(f"--resume: the config differs from the checkpoint's ({'; '.join(diff)}); "
                            "resume with the same settings or choose a fresh --out")
        if rank == 0:
            self.check_layout(state)
        self.check_inputs(state)
        if rank != 0:  # this rank's own random state and replay buffer over rank 0's shared state
            own = load_checkpoint(self.rank_checkpoint_path(rank))
            state = checkpoint.merge_rank(state, own)
        self.lock()  # after the checks, which write nothing; before the first write
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
            save_checkpoint(self.checkpoint_path, checkpoint.stamp(state, self.config, self.input_digests))
        else:
            save_checkpoint(self.rank_checkpoint_path(rank), state)

    def write_rows(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.is_main and rows:
            write_csv(self.path / name, rows)

    def finish(self, metrics: Mapping[str, Any]) -> None:
        """Write ``metrics.json``, which marks the run finished (with the digests of its inputs)."""
        if self.is_main:
            extra = {"inputs": self.input_digests} if self.input_digests else {}
            write_json(self.path / METRICS, {**metrics, **extra})
        self.unlock()

    def file(self, name: str) -> Path:
        return self.path / name
