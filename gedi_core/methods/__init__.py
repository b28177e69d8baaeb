"""Methods by name. Each module registers itself; add one import line for a new method."""

from gedi_core.methods import barlow, gedi, jem, swav  # noqa: F401  (registration)
from gedi_core.methods.base import METHODS, Method, MethodSpec, build_method, get_spec, register

__all__ = ["METHODS", "Method", "MethodSpec", "build_method", "get_spec", "register"]
