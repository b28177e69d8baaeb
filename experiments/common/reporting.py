"""Helpers the experiment scripts share to write honest result files: figures over seeds as
``median (mean ± sample std)``, paths and commands without this machine's absolute paths,
Markdown tables."""

from __future__ import annotations

import os
import shlex
import statistics
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[2]


def seed_summary(values: Sequence[float], digits: int = 3) -> str:
    """``median (mean ± sample std)`` over the seeds (the paper reports the median)."""
    if not values:
        return "-"
    med, mean = statistics.median(values), statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{med:.{digits}f} ({mean:.{digits}f} ± {std:.{digits}f})"


def shown_path(path: str | os.PathLike | None) -> str | None:
    """An absolute path as a path relative to the repository (e.g. ``../shared/data/MNIST/raw``);
    a relative path as given: committed results never hold this machine's absolute paths.
    System folders (``/usr/...``) stay as they are: they name a package's files, not this checkout."""
    if path is None:
        return None
    path = str(path)
    if os.path.isabs(path) and not path.startswith(("/usr/", "/opt/")):
        return os.path.relpath(path, REPO)
    return path


def shown_command(module: str, argv: Sequence[str]) -> str:
    """``python -m MODULE ARGS`` (as typed at the repository root) with every absolute path in it
    shown relative to the repository."""
    words = []
    for word in argv:
        flag, eq, value = word.partition("=")
        if eq and flag.startswith("-") and os.path.isabs(value):
            word = f"{flag}={shown_path(value)}"
        elif os.path.isabs(word):
            word = shown_path(word)
        words.append(word)
    return shlex.join(["python", "-m", module, *words])


def markdown_table(rows: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> list[str]:
    """The lines of a Markdown table of ``rows`` (columns: ``keys``, default the first row's)."""
    if not rows:
        return []
    keys = list(keys or rows[0])
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows)]
