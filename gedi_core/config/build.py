"""Building a config dataclass from nested mappings: layers merged in order, each value coerced
to its field's type, unknown keys refused with the key and the source named."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, TypeVar

from gedi_core.config.checks import FLOAT32_MAX
from gedi_core.errors import GediError

T = TypeVar("T")


def from_dict(cls: type[T], values: Mapping[str, Any], source: str = "config", prefix: str = "",
              base: T | None = None) -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys raise GediError.

    Keys the mapping leaves out keep their value in ``base`` (default: ``cls()``), so a
    nested section built by a ``default_factory`` keeps that factory's values.
    """
    if not isinstance(values, Mapping):
        raise GediError(f"{source}: section '{prefix or '<top>'}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    base = cls() if base is None else base  # type: ignore[call-arg]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise GediError(f"{source}: unknown config key '{dotted}' (known: {', '.join(sorted(fields))})")
        default = getattr(base, key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = from_dict(type(default), value, source, prefix=f"{dotted}.", base=default)
        else:
            kwargs[key] = _coerce(value, default, dotted, source)
    return dataclasses.replace(base, **kwargs)


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Convert ``value`` to the type of ``default`` (ints, floats, bools, strings; ``None``
    defaults are optional strings); numbers must be finite."""
    expects = "str" if default is None else type(default).__name__

    def wrong() -> GediError:
        got = "nothing (null)" if value is None else repr(value)
        return GediError(f"{source}: '{key}' expects {expects}, got {got}")

    if value is None:
        if default is None:
            return None
        raise wrong()
    if not isinstance(value, (str, int, float)):  # a mapping, a list, a date ...
        raise wrong()
    if default is None or isinstance(default, str):
        return str(value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise wrong()
        if value in (0, 1):
            return bool(value)
        raise wrong()
    if isinstance(value, bool):  # a number field set to true/false
        raise wrong()
    try:
        as_float = float(value)
    except ValueError:
        raise wrong() from None
    if not math.isfinite(as_float) or abs(as_float) > FLOAT32_MAX:
        raise GediError(f"{source}: '{key}' must be a finite number, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int):
            return value
        if as_float != int(as_float):
            raise wrong()
        return int(as_float)
    if isinstance(default, float):
        return as_float
    raise wrong()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def dotted_to_nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{'sgld.steps': 5}`` -> ``{'sgld': {'steps': 5}}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GediError(f"'{key}': '{'.'.join(parts[:i + 1])}' was given a value, so it has no key "
                                f"'{parts[i + 1]}'")
        if isinstance(node.get(parts[-1]), dict):
            raise GediError(f"'{key}' is a section; set its keys ('{key}.<key>=value')")
        node[parts[-1]] = value
    return nested


def build_config(
    cls: type[T],
    layers: list[tuple[str, Mapping[str, Any]]],
) -> T:
    """Merge the (source, nested-dict) layers in order and build ``cls``.

    Each layer is checked on its own so that an unknown key names its source.
    """
    merged: dict[str, Any] = {}
    for source, layer in layers:
        from_dict(cls, layer, source)  # validates keys and types against the schema
        merged = merge(merged, layer)
    return from_dict(cls, merged, "config")
