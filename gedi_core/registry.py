"""Things chosen by name (methods, data sets, backbones): one registry type, one lookup error."""

from __future__ import annotations

from typing import Dict, TypeVar

from gedi_core.errors import GediError

T = TypeVar("T")


class Registry(Dict[str, T]):
    """A mapping from name to entry that knows what it holds (``kind``, for the messages).

    Modules fill it at import (:meth:`register`); :meth:`lookup` returns an entry or raises
    :class:`GediError` ``unknown KIND 'NAME' (known: ...)``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str, entry: T) -> None:
        """Add ``entry`` under ``name`` (a later one under the same name replaces it)."""
        self[name] = entry

    def lookup(self, name: str) -> T:
        """The entry named ``name``; an unknown name raises :class:`GediError` listing the known ones."""
        if name not in self:
            raise GediError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self))})")
        return self[name]
