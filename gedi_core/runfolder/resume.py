"""Resume checks: the config a checkpoint was written with against the one resuming it, and
one line for a checkpoint whose state does not load."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from gedi_core.errors import GediError

#: config keys that may change when a run is resumed (they do not change what is computed)
RESUMABLE_KEYS = ("device", "compile_cache", "eval_every", "log_every")


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
