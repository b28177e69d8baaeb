"""Batched exact inference for DeepProbLog: each query shape compiled once, a batch as one circuit.

Install with ``model.set_engine(BatchedEngine(model), cache=True)`` (DeepProbLog's own API) or
:func:`set_engine`.  How it works and what it supports: ``docs/engine.md``.
"""

from __future__ import annotations

from pathlib import Path

from gedi_core.errors import GediError
from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()  # before DeepProbLog's modules: its PySwip warning silenced
from deepproblog.engines import ExactEngine  # noqa: E402

from gedi_nesy import adapters  # noqa: E402
from gedi_nesy.adapters import ProgramFirst, quiet_stdout  # noqa: E402
from gedi_nesy.defaults import ARITHMETIC, ENGINES  # noqa: E402
from gedi_nesy.solver import BatchedSolver  # noqa: E402

__all__ = ["BatchedEngine", "BatchedSolver", "GediExactEngine", "is_batched", "set_engine"]


class GediExactEngine(ProgramFirst, ExactEngine):
    """DeepProbLog's ``ExactEngine``, except that the program's own predicates win over
    DeepProbLog's tensor builtins of the same name/arity."""

    def get_hyperparameters(self) -> dict:
        return {"type": "ExactEngine"}


class BatchedEngine(ProgramFirst, ExactEngine):
    """A DeepProbLog engine: ``model.set_engine(BatchedEngine(model), cache=True)``.

    Grounding and SDDs are ``ExactEngine``'s; ``Model.set_engine`` builds DeepProbLog's plain
    ``Solver`` and then registers the tensor builtins with the engine: on that first
    registration the engine replaces the model's solver by a :class:`BatchedSolver` with the
    same settings.  ``disk_cache``: folder keeping compiled query shapes across runs;
    ``shared_labels``: ground each query structure once for all its labels (see
    ``gedi_nesy.shared_labels``; False: one grounding per label, as DeepProbLog);
    ``arithmetic``: evaluate queries over neural integers on their distributions instead of
    ground proofs (``gedi_nesy.arithmetic_plan``): "auto" where the proofs would enumerate
    more than 10^5 digit combinations (DeepProbLog's multi-digit addition from N = 3), "always"
    wherever the query is plannable, "never"."""

    def __init__(self, model, disk_cache: str | Path | None = None, shared_labels: bool = True,
                 arithmetic: str = "auto") -> None:
        super().__init__(model)
        if arithmetic not in ARITHMETIC:
            raise GediError(f"BatchedEngine: arithmetic '{arithmetic}' is not one of {', '.join(ARITHMETIC)}")
        self.disk_cache = disk_cache
        self.shared_labels = shared_labels
        self.arithmetic = arithmetic

    def prepare(self, db):
        """``ExactEngine.prepare``; a neural predicate DeepProbLog does not take is one
        :class:`GediError` line naming it (DeepProbLog raises a bare ``ValueError``)."""
        adapters.check_neural_predicates(db, self.model.networks)
        return super().prepare(db)

    def register_foreign(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
        self._install()
        super().register_foreign(func, function_name, arity_in, arity_out)

    def register_foreign_nondet(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
        self._install()
        super().register_foreign_nondet(func, function_name, arity_in, arity_out)

    def _install(self) -> None:
        """Replace the model's plain DeepProbLog solver of this engine by a batched one."""
        adapters.swap_solver(self.model, self, BatchedSolver, lambda solver: BatchedSolver.replacing(
            solver, disk_cache=self.disk_cache, shared_labels=self.shared_labels, arithmetic=self.arithmetic))

    def get_hyperparameters(self) -> dict:
        return {"type": "BatchedEngine"}


def set_engine(model, engine: str = "batched", cache: bool = True, cache_root: str | None = None,
               disk_cache: str | Path | None = None):
    """Give ``model`` (a DeepProbLog ``Model``) its solver through ``Model.set_engine``:
    ``batched`` (:class:`BatchedEngine`) or ``exact`` (:class:`GediExactEngine`: DeepProbLog's
    ``ExactEngine`` and ``Solver``).  Returns the solver."""
    if engine not in ENGINES:
        raise GediError(f"engine: unknown engine '{engine}' (known: {', '.join(ENGINES)})")
    eng = BatchedEngine(model, disk_cache=disk_cache) if engine == "batched" else GediExactEngine(model)
    with quiet_stdout():  # DeepProbLog prints "Caching ACs"
        model.set_engine(eng, cache=cache, cache_root=cache_root)
    return model.solver


def is_batched(model) -> bool:
    """True when ``model`` evaluates its queries with the batched engine."""
    return isinstance(getattr(model, "solver", None), BatchedSolver)
