"""Checks of ``--compile-cache`` (the batched engine's folder of compiled query shapes) before a run.

A path that is not a folder is one line; a damaged cache file (``shapes-v*.pkl``: truncated,
overwritten, not a pickle) is removed with a one-line warning, and the engine compiles its shapes
again (the cache only saves time, it holds nothing a run needs).
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

from gedi_core.errors import GediError

CACHE_FILES = "shapes-v*.pkl"  # the engine's file names (gedi_nesy.solver.BatchedSolver)


def check_compile_cache(folder: str | Path, prog: str = "gedi-nesy") -> None:
    """``folder`` is a writable folder or can be made one; every cache file in it can be read (a damaged one
    is removed with a warning on stderr, to be rebuilt)."""
    path = Path(folder)
    if not str(folder).strip():
        raise GediError("--compile-cache '': an empty path; give a folder")
    if path.exists() and not path.is_dir():
        raise GediError(f"--compile-cache {path}: exists and is not a folder")
    folder_or_parent = path if path.is_dir() else next((q for q in path.parents if q.exists()), Path("."))
    if not folder_or_parent.is_dir() or not os.access(folder_or_parent, os.W_OK | os.X_OK):
        raise GediError(f"--compile-cache {path}: cannot write there ({folder_or_parent} is not a writable folder)")
    if not path.is_dir():
        return
    for cache_file in sorted(path.glob(CACHE_FILES)):
        try:
            with open(cache_file, "rb") as f:
                content = pickle.load(f)
            if not isinstance(content, dict):
                raise TypeError(f"holds a {type(content).__name__}, not a dict of shapes")
        except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many kinds
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            try:
                cache_file.unlink()
            except OSError as err:
                raise GediError(f"--compile-cache {cache_file}: damaged ({reason}) and cannot be removed "
                                f"({err.strerror or err}); remove it or choose another --compile-cache") from None
            print(f"{prog}: warning: --compile-cache {cache_file}: damaged ({reason}); removed, its shapes are "
                  "compiled again", file=sys.stderr)
