"""Other commands' outputs: never over an existing file or a file a run folder owns, checked
before any long work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from gedi_core.errors import GediError
from gedi_core.runfolder.names import CHECKPOINT, CONFIG, METRICS, RUN_FILES


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
