"""Value checks of a config: finite numbers and the interval each number must lie in."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from gedi_core.errors import GediError

FLOAT32_MAX = 3.4028234663852886e38  # tensors are float32: a larger number is inf there


@dataclass(frozen=True)
class Range:
    """The interval a config number must lie in (``None``: unbounded; ``open_*``: bound excluded)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"be {'>' if self.open_low else '>='} {_number(self.low or 0)}"
        low = "-inf" if self.low is None else _number(self.low)
        return f"lie in {'(' if self.open_low else '['}{low}, {_number(self.high)}{')' if self.open_high else ']'}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)  # also any other fraction, e.g. data.jitter_strength
LEARNING_RATE = Range(0, 1, open_low=True)  # Adam: a step of about lr per weight
SEED = Range(0, 2**32 - 1)  # numpy and scikit-learn take seeds in [0, 2^32)


def check_config(cfg: Any, ranges: Mapping[str, Range]) -> None:
    """Every number of ``cfg`` (nested dataclasses) is finite, and each dotted key of ``ranges``
    lies in its range; else :class:`GediError` naming the key and the value."""
    for key, value in _numbers(cfg):
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise GediError(f"{key} must be a finite number, got {value!r}")
    for key, allowed in ranges.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GediError(f"{key} must be a number, got {value!r}")
        if value not in allowed:
            raise GediError(f"{key} must {allowed}, got {value!r}")


def check_section(section: Any, cls: type, ranges: Mapping[str, Range], where: str) -> None:
    """``section`` (e.g. a ``ModelConfig`` a user built) is a ``cls`` whose numbers lie in
    ``ranges`` (dotted keys, e.g. ``model.tau``; the section is their first part); integer
    fields hold integers. Else :class:`GediError` naming ``where`` and the key."""
    if not isinstance(section, cls):
        raise GediError(f"{where}: expected a {cls.__name__}, got {type(section).__name__}")
    ints = {f.name for f in dataclasses.fields(cls) if f.type in ("int", int)}
    for key, allowed in ranges.items():
        name = key.split(".", 1)[1]
        value = getattr(section, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (name in ints and not isinstance(value, int)):
            raise GediError(f"{where}: {key} must be {'an integer' if name in ints else 'a number'}, got {value!r}")
        if not math.isfinite(value) or value not in allowed:
            raise GediError(f"{where}: {key} must {allowed}, got {value!r}")


def check_sgld_init(sgld: Any) -> None:
    """The SGLD start interval (an :class:`~gedi_core.config.SGLDConfig`'s) is not empty."""
    if not sgld.init_low < sgld.init_high:
        raise GediError(f"sgld.init_low ({sgld.init_low}) must be below sgld.init_high ({sgld.init_high})")


def _numbers(cfg: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, value)`` of every int and float field of a (nested) config dataclass."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, f"{prefix}{f.name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{f.name}", value
        elif not isinstance(value, (str, bool, type(None))):
            raise GediError(f"{prefix}{f.name} must be a number, string or bool, got {value!r}")
