"""Atomic writes: a temporary file in the same folder, then a rename; a failed write is one line
naming the file, the folder and its free space, and the previous file is kept."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import yaml

from gedi_core import jsonsafe
from gedi_core.errors import GediError


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
