"""JSON as the project writes it (command lines, run folders): NaN and infinities as ``null``."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in nested dicts, lists, tuples) replaced by
    ``None``, so that it is valid JSON (``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite_or_null` of ``value`` (sorted keys; never NaN)."""
    return json.dumps(finite_or_null(value), sort_keys=True, allow_nan=False, **kwargs)
