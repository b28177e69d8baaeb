"""The run folder: ``config.yaml``, ``log.csv``, ``epochs.csv``, ``metrics.json``, checkpoints.

Rules, kept here once for every command of the project:

- every file is written atomically (a temporary file in the same folder, then a rename), so a
  kill at any moment leaves either the old or the new file, never a truncated one;
- a finished run (one with ``metrics.json``) is never overwritten, and an unfinished one only
  continues with ``--resume``;
- ``--resume`` continues only a run whose checkpoint holds the same config (the keys that
  differ are named), and ``config.yaml`` is written only after the checkpoint has loaded;
- a checkpoint that cannot be read is reported in one line, not with a traceback;
- a run folder has one writer: the first write takes an exclusive lock file (``.lock``, holding
  the writer's PID and host); a second writer is refused, a lock whose process is dead is taken
  over with a warning;
- a run keeps the input files it trained on (``program.pl``; the SHA-256 of each input in
  ``inputs.json``, its checkpoint and ``metrics.json``), so that ``--resume`` refuses a changed
  input and the run works after it is moved;
- other commands' outputs (:func:`check_output_file`, :func:`check_output_folder`) never write
  over an existing file or a file a run folder owns, checked before any long work;
- a write that fails (disk full, read-only folder) is one line naming the folder and its free
  space; the temporary file is removed and the previous file kept.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import yaml

from gedi_core import checkpoint, jsonsafe
from gedi_core.checkpoint import load_checkpoint  # re-export: reading a checkpoint file
from gedi_core.errors import GediError

CHECKPOINT = "checkpoint.pt"  # the checkpoint's file name inside a run folder
METRICS = "metrics.json"
CONFIG = "config.yaml"
LOCK = ".lock"  # the writer's PID and host while a run is being written
PROGRAM = "program.pl"  # the program text a gedi-nesy run trained on
INPUTS = "inputs.json"  # the path and SHA-256 of each input file of the run
#: the files a run folder owns whether or not they exist yet: no other command writes them
RUN_FILES = (CHECKPOINT, METRICS, CONFIG, LOCK, PROGRAM, INPUTS, "log.csv", "epochs.csv", "losses.png", "clusters.png",
             "density.png", "buffer.png", "classes.png", "confusion.png")
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
    except (OSError, RuntimeError) as exc:
        if not is_write_failure(exc):
            raise
        raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def is_write_failure(exc: BaseException) -> bool:
    """An OSError, or torch's RuntimeError for a failed write (``enforce fail at inline_container``)."""
    if isinstance(exc, OSError):
        return True
    text = str(exc)
    return "inline_container" in text or "file write failed" in text or "No space left" in text


def free_space(folder: Path) -> str:
    """The free space of ``folder``'s file system, e.g. ``12.3 MB`` (``unknown`` if it cannot be read)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if free < 1000 or unit == "TB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1000
    return "unknown"


def write_error(path: Path, exc: BaseException) -> GediError:
    """One line for a failed write of ``path``: the reason, the folder and its free space."""
    if isinstance(exc, OSError):
        reason = (exc.strerror or os.strerror(exc.errno)) if exc.errno else str(exc)
    else:
        reason = "the write failed (disk full?)"
    kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
    return GediError(f"{path}: cannot write it ({reason}); {free_space(path.parent)} free in {path.parent}; {kept}")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, jsonsafe.dumps(data, indent=2) + "\n")


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


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def resume_errors(path: Path) -> Iterator[None]:
    """Loading a checkpoint's state into the model, optimizer and batches: a tensor of another
    shape, a missing or unexpected key is one line naming it (torch's message, its telling line)."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        telling = [line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))]
        reason = (telling or lines or [type(exc).__name__])[0]
        if isinstance(exc, KeyError):
            reason = f"it lacks {exc}"
        raise GediError(f"{path}: cannot resume from it ({reason}); was it written for another model?") from None


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


# ----------------------------------------------------------------------------- other commands' outputs
def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a run (its config, a checkpoint or its metrics)."""
    return folder.is_dir() and any((folder / name).is_file() for name in (CONFIG, CHECKPOINT, METRICS))


def _owned_by_run(path: Path) -> bool:
    name = path.name
    return (name in RUN_FILES or name.startswith("checkpoint.")) and is_run_folder(path.parent)


def _check_writable(folder: Path, flag: str, shown: Path) -> None:
    if not folder.is_dir():
        raise GediError(f"{flag} {shown}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GediError(f"{flag} {shown}: cannot write there ({folder} is not a writable folder)")


def _not_empty(path: str | Path | None, flag: str, what: str) -> Path:
    if path is None or not str(path).strip():
        raise GediError(f"{flag} '': an empty path; give {what}")
    return Path(path)


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a fresh file for a command's output, checked before any long work: not empty,
    not existing (never overwritten), not a folder, not a file a run folder owns
    (:data:`RUN_FILES`), in an existing writable folder; else one line naming it."""
    p = _not_empty(path, flag, "the path of a file to write")
    if p.is_dir():
        raise GediError(f"{flag} {p}: is a folder; give the path of a file to write")
    if p.exists() or p.is_symlink():
        raise GediError(f"{flag} {p}: exists; it is never overwritten: choose a fresh path")
    if _owned_by_run(p):
        raise GediError(f"{flag} {p}: {p.name} belongs to the run folder {p.parent}; write elsewhere")
    _check_writable(p.parent, flag, p)
    return p


def check_output_folder(folder: str | Path, names: Sequence[str], flag: str = "--out",
                        owned: Sequence[str] = ()) -> Path:
    """``folder`` as the folder of a command's output files ``names``, checked before any long work:
    an existing writable folder or a new one in an existing writable folder; none of ``names``
    exists there (except ``owned``: files this command itself updates) or belongs to a run folder."""
    p = _not_empty(folder, flag, "a folder")
    if p.exists() and not p.is_dir():
        raise GediError(f"{flag} {p}: exists and is not a folder")
    _check_writable(p if p.exists() else p.parent, flag, p)
    for name in names:
        if name in owned:
            continue
        f = p / name
        if f.exists() or f.is_symlink():
            raise GediError(f"{flag} {p}: {f} exists; it is never overwritten: choose a fresh {flag}")
        if _owned_by_run(f):
            raise GediError(f"{flag} {p}: {name} belongs to the run folder {p}; choose another {flag}")
    return p


# ----------------------------------------------------------------------------- the lock
def _read_lock(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of a lock file, None when it is empty or unreadable."""
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _stale(path: Path, holder: tuple[int, str] | None) -> bool:
    """A lock whose process is dead on this host (or an empty lock older than 30 s)."""
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > 30
        except OSError:
            return True
    pid, host = holder
    return host == socket.gethostname() and not _pid_alive(pid)


def _create_with(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` in one step (a hard link of a written temporary file, so
    that no reader ever sees it empty); FileExistsError if it exists. Where the file system has
    no hard links, ``O_EXCL`` creation, then the write."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(text)}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _release_lock(path: Path, pid: int) -> None:
    """Remove lock file ``path`` if process ``pid`` holds it."""
    holder = _read_lock(path)
    if holder is not None and holder[0] == pid:
        with contextlib.suppress(OSError):
            path.unlink()


# ----------------------------------------------------------------------------- the folder
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
        """Take the folder's lock (made with O_EXCL, holding this PID and host) before the first
        write, then check the folder again (another writer may have finished it meanwhile).
        A live holder is refused in one line; a dead one's lock is taken over with a warning."""
        if not self.is_main or self.locked:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GediError(f"--out {self.path}: cannot create the folder ({exc.strerror or exc})") from None
        path = self.path / LOCK
        for _ in range(3):
            try:
                _create_with(path, f"{os.getpid()} {socket.gethostname()}\n")
            except FileExistsError:
                holder = _read_lock(path)
                if not _stale(path, holder):
                    who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
                    raise GediError(f"--out {self.path}: {who} is writing this run folder (lock {path}); "
                                    "wait for it to end or choose another --out") from None
                gone = f"process {holder[0]} on {holder[1]}" if holder else "a process"
                print(f"warning: --out {self.path}: taking over the lock of {gone}, which is no longer running",
                      file=sys.stderr)
                if _read_lock(path) == holder:  # not meanwhile taken over by another process
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                continue
            except OSError as exc:
                raise write_error(path, exc) from None
            self.locked = True
            # released by unlock() (finish, or the command's finally), else when this object goes
            self._release = weakref.finalize(self, _release_lock, path, os.getpid())
            try:
                self._check_state()
            except GediError:
                self.unlock()
                raise
            return
        raise GediError(f"--out {self.path}: cannot take the lock {path} (other processes keep taking it)")

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
