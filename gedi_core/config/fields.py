"""Config fields that carry their command-line flag, help text, allowed range and choices, and
the tables built from them (a CLI's flags, a config's ranges and choices).

A field is declared once, with everything said about it::

    lr: float = setting(1e-3, "--lr", "Adam learning rate", range=LEARNING_RATE)

and a nested section names, where a config includes it, the flags of the section that read
differently there or that this config does not offer::

    model: ModelConfig = section(lenet_config, help={"backbone": "backbone (lenet, mlp, resnet8)"}, hide=("width",))
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from gedi_core.config.checks import Range
from gedi_core.errors import GediError


def setting(default: Any, flag: str | None = None, help: str = "", *, range: Range | None = None,
            choices: Sequence[str] | None = None, kind: str = "") -> Any:
    """A config field with default ``default``; ``flag`` (e.g. ``"--lr"``) makes it a command-line
    flag with ``help``; ``range`` is the interval a number must lie in; ``choices`` the names a string
    may take (``kind`` names them in the error: ``arm: unknown arm 'x' (known: ...)``)."""
    metadata = {"flag": flag, "help": help, "range": range, "choices": tuple(choices or ()), "kind": kind}
    return field(default=default, metadata=metadata)


def section(factory: Callable[[], Any], *, help: Mapping[str, str] | None = None, hide: Sequence[str] = ()) -> Any:
    """A nested config section built by ``factory``; ``help`` replaces the help of some of its
    flags in this config (field name -> text), ``hide`` drops some of its flags (field names)."""
    return field(default_factory=factory, metadata={"help": dict(help or {}), "hide": tuple(hide)})


@dataclass(frozen=True)
class Flag:
    """One command-line flag of a config: ``flag`` sets the dotted config ``key``."""

    flag: str
    key: str
    type: type  # int, float, str; bool: a switch that sets the key to true
    help: str


def _sections(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any, Mapping[str, Any]]]:
    """``(dotted key, field, type, section metadata)`` of every leaf field of config class ``cls``,
    in declaration order, nested sections in place."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            for key, leaf, leaf_type, meta in _sections(typ, f"{prefix}{f.name}."):
                yield key, leaf, leaf_type, f.metadata if not meta else meta
        else:
            yield f"{prefix}{f.name}", f, typ, {}


def _value_type(typ: Any) -> type:
    """``int``, ``float``, ``str`` or ``bool`` of a field's annotation (``str | None``: ``str``)."""
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    return typ


def flags_of(cls: type) -> list[Flag]:
    """The command-line flags of config class ``cls``: its fields' and its sections' (with the
    section's help and hide of ``cls``), in declaration order."""
    flags = []
    for key, f, typ, meta in _sections(cls):
        name = key.rsplit(".", 1)[-1]
        if f.metadata.get("flag") and name not in meta.get("hide", ()):
            flags.append(Flag(f.metadata["flag"], key, _value_type(typ), meta.get("help", {}).get(name, f.metadata["help"])))
    return flags


def ranges_of(cls: type, prefix: str = "") -> dict[str, Range]:
    """Dotted key (under ``prefix``, e.g. ``"model."``) -> allowed interval, of every field of
    ``cls`` (sections included) that has one."""
    return {prefix + key: f.metadata["range"] for key, f, _, _ in _sections(cls) if f.metadata.get("range")}


def check_choices(cfg: Any) -> None:
    """Every field of ``cfg`` (sections included) that lists choices holds one of them; else
    :class:`GediError`, e.g. ``arm: unknown arm 'x' (known: nesy, gedi, gedi+nesy)``."""
    for key, f, _, _ in _sections(type(cfg)):
        choices = f.metadata.get("choices")
        if choices:
            value: Any = cfg
            for part in key.split("."):
                value = getattr(value, part)
            if value not in choices:
                raise GediError(f"{key}: unknown {f.metadata['kind']} '{value}' (known: {', '.join(choices)})")
