"""Reading what a config comes from: YAML/JSON config files, ``--set KEY=VALUE`` items, text files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gedi_core.errors import GediError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON (``.json``) config file into a dict; errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise GediError(f"config file not found: {path}")
    text = read_text_file(path, "config file (YAML or JSON)")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise GediError(f"{path}:{exc.lineno}: cannot parse JSON: {exc.msg} (column {exc.colno})") from None
    except yaml.YAMLError as exc:
        raise GediError(f"{path}{_yaml_where(exc)}: cannot parse YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GediError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def read_text_file(path: str | Path, kind: str) -> str:
    """The UTF-8 text of ``path``; :class:`GediError` naming the file when it cannot be read
    or is not text (``kind`` says what it should be, e.g. ``"ProbLog program"``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GediError(f"{path}: cannot read {kind}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GediError(f"{path}: not a text file (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8); "
                        f"expected a {kind}") from None


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` items (values are YAML scalars: ``5``, ``1e-3``, ``true``, ``abc``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GediError(f"--set expects key=value, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise GediError(f"--set {item}: cannot parse the value: {_yaml_problem(exc)}") from None
    return out


def _yaml_where(exc: yaml.YAMLError) -> str:
    """``:LINE`` of a YAML error (1-based), or nothing when PyYAML gives no position."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, begun = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    where = f" (column {mark.column + 1})" if mark is not None else ""
    if context and begun is not None and mark is not None and begun.line != mark.line:
        context += f" begun on line {begun.line + 1}"
    return f"{problem}{where}" + (f", {context}" if context else "")
