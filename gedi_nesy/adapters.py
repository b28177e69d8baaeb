"""Every workaround the batched engine does inside DeepProbLog, ProbLog and KLay, in one place.

Checked on deepproblog 2.1.0, problog 2.3.0 and klaycircuits 0.1.2 (``pyproject.toml`` bounds
the three to those minor versions). What each works around:

- :func:`quiet_stdout`: DeepProbLog's AC ``Cache`` prints ``Caching ACs`` whenever a ``Solver``
  is built with ``cache=True`` (``Model.set_engine``); the command line prints JSON only.
- :func:`swap_solver`, :func:`solver_settings`: ``Model.set_engine`` hard-codes
  ``self.solver = Solver(self, engine, **kwargs)`` and then calls
  ``register_tensor_predicates(engine)``; that first ``register_foreign`` call on the engine is
  the one moment an engine can put its own solver in place of the plain one. The settings of
  the plain solver are read off its attributes (``cache.cache``, ``cache.cache_root``,
  ``cache.cache_file``, ``semiring``, ``sdd_auto_gc``), which are not API.
- :class:`ProgramFirst`, :func:`tensor_builtins`: ``register_tensor_predicates`` registers
  DeepProbLog's tensor builtins (``add/3``, ``mul/3``, ``max/2``, ...) even where the program
  defines the same name/arity; ProbLog then runs both and the builtin fails on non-tensor
  arguments. The builtins' names are read off ``register_tensor_predicates`` itself; the
  program's definitions off ``model.solver.program`` (ProbLog's ``ClauseDB``).
- :func:`check_neural_predicates`: ``ExactEngine.prepare`` raises a bare ``ValueError`` (or
  a ``KeyError`` later) for an ``nn/N`` head of another arity or naming a missing network.
- :func:`build_ac_with_evidence`: ``ExactEngine`` grounds a query alone and drops the program's
  ``evidence/1,2``; this is ``Solver.build_ac`` with ProbLog's ``ground_evidence`` added.
- :func:`reset_grounding`: ProbLog's engine keeps its evaluation stack (``pointer``,
  ``cycle_root``) after an exception inside grounding; the next grounding would fail.
- :func:`has_cached_circuit`, :func:`drop_cached_circuit`: DeepProbLog's ``Cache`` has no call
  to look up or drop one entry; its ``key_func`` and ``cache_dict`` are read directly (the
  circuits the KLay path no longer needs are dropped to keep memory flat).
- :func:`clear_tensor_store`: ``Solver.solve`` clears the engine's ``tensor_store`` (tensors
  named in grounding) at each solve; a solver that replaces ``solve`` must do the same.
- :func:`hook_optimizer_steps`: ``train_model`` calls each network optimizer's ``step()``
  itself, after the per-query loss functions; a batched solve's gradients, summed over the
  batch, must be sent before that, so a step pre-hook is put on the user's torch optimizers.
- :func:`tag_result`, :func:`result_tag`: ``train_model`` hands each ``Result`` alone to the
  semiring's loss function; the result's semiring instance carries where its answers lie in
  the batch (``batch_entry`` of :class:`gedi_nesy.semiring.BatchedGraphSemiring`).
- :func:`substitute`: ProbLog's ``Term.apply_term`` compares terms structurally and is the
  slowest step of a batch for DeepProbLog's atom-to-tensor substitutions; atoms are matched by
  name instead (other substitutions still go to ``apply_term``).
- :func:`klay_indices`: KLay 0.1.2 gives the index arrays of a circuit only through
  ``Circuit._get_indices()`` (its torch module builds them itself).
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
import weakref
from typing import Any, Callable, Iterable, Iterator

import torch
from problog.formula import LogicFormula
from problog.logic import Clause, Constant, Term, Var

from gedi_core.errors import GediError
from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()
from deepproblog.arithmetic_circuit import ArithmeticCircuit  # noqa: E402

#: the versions every workaround here was checked on (``pyproject.toml`` bounds them)
CHECKED_ON = {"deepproblog": "2.1.0", "problog": "2.3.0", "klaycircuits": "0.1.2"}


# ----------------------------------------------------------------------------- set_engine
@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """DeepProbLog's ``Caching ACs`` (printed when a cached ``Solver`` is built) kept off stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def solver_settings(solver) -> dict[str, Any]:
    """The keyword arguments that build a solver like DeepProbLog's ``solver`` (cache, cache
    root, semiring, SDD garbage collection), for the same model and engine."""
    cache = solver.cache
    return {"cache": cache.cache, "cache_root": str(cache.cache_root) if cache.cache_file else None,
            "semiring": solver.semiring, "sdd_auto_gc": solver.sdd_auto_gc}


def swap_solver(model, engine, solver_type: type, make: Callable[[Any], Any]) -> None:
    """Put ``make(plain solver)`` in place of the plain DeepProbLog solver ``Model.set_engine``
    just built for ``engine`` (nothing when the model's solver is another engine's or already
    a ``solver_type``)."""
    solver = model.solver
    if solver is not None and solver.engine is engine and not isinstance(solver, solver_type):
        model.solver = make(solver)


@functools.lru_cache(maxsize=1)
def tensor_builtins() -> frozenset[tuple[str, int]]:
    """``(name, arity)`` of DeepProbLog's tensor builtins (``engines/builtins.py``), read off
    ``register_tensor_predicates`` itself."""
    from deepproblog.engines.builtins import register_tensor_predicates

    class _Recorder:
        def __init__(self) -> None:
            self.seen: set[tuple[str, int]] = set()

        def register_foreign(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
            self.seen.add((function_name, arity_in + arity_out))

        register_foreign_nondet = register_foreign

    recorder = _Recorder()
    register_tensor_predicates(recorder)
    return frozenset(recorder.seen)


class ProgramFirst:
    """Engine mixin: a DeepProbLog tensor builtin (``add/3``, ``mul/3``, ``max/2``, ...) is not
    registered where the program defines the same name/arity: the program's definition wins.
    (DeepProbLog would run both, and the builtin fails on non-tensor arguments.)"""

    model: Any

    def register_foreign(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
        if not self._shadowed(function_name, arity_in + arity_out):
            super().register_foreign(func, function_name, arity_in, arity_out)

    def register_foreign_nondet(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
        if not self._shadowed(function_name, arity_in + arity_out):
            super().register_foreign_nondet(func, function_name, arity_in, arity_out)

    def _shadowed(self, name: str, arity: int) -> bool:
        """True for a tensor builtin whose name/arity the prepared program already defines."""
        if (name, arity) not in tensor_builtins():
            return False
        program = self.model.solver.program
        node = program.find(Term(name, *([None] * arity)))
        return node is not None and program.get_node(node) != ()  # () : only called, not defined


def check_neural_predicates(db: Iterable, networks: dict[str, Any]) -> None:
    """Each ``nn(...)`` head of ``db`` is one DeepProbLog takes (nn/2, nn/3, nn/4) and names a
    network of ``networks`` (a deterministic nn/3 one without top-k), else one line naming it."""
    for clause in db:
        head = clause.head if isinstance(clause, Clause) else clause
        p = getattr(head, "probability", None)
        if isinstance(p, Term) and p.functor == "nn":
            where = _where(clause)
            if p.arity not in (2, 3, 4):
                raise GediError(f"batched engine: neural predicate {clause}{where} has nn/{p.arity}; "
                                "DeepProbLog takes nn/2, nn/3 and nn/4")
            net = networks.get(str(p.args[0]))
            if net is None:
                raise GediError(f"batched engine: neural predicate {clause}{where} names network "
                                f"'{p.args[0]}', which the model does not have")
            if p.arity == 3 and net.k is not None:
                raise GediError(f"batched engine: network '{net.name}' is deterministic (nn/3) in "
                                f"{clause}{where} and cannot have k={net.k}")


def _where(clause) -> str:
    """`` (character N of the program)`` from a ProbLog clause's location, or ''."""
    loc = getattr(clause, "location", None)
    return f" (character {loc[1]} of the program)" if isinstance(loc, tuple) and len(loc) == 2 else ""


# ----------------------------------------------------------------------------- grounding
def build_ac_with_evidence(solver, q, evidence: list) -> ArithmeticCircuit:
    """DeepProbLog's ``Solver.build_ac`` for query ``q``, with the program's ``evidence`` ground
    beside it (so that the circuit is conditioned on it, as ProbLog's inference is)."""
    start = time.time()
    ground = solver.engine.ground(q, label=LogicFormula.LABEL_QUERY)
    solver.engine.engine.ground_evidence(solver.program, ground, evidence)
    return ArithmeticCircuit(ground, solver.semiring, ground_time=time.time() - start, sdd_auto_gc=solver.sdd_auto_gc)


def program_evidence(engine, db) -> list:
    """The program's ``evidence/2`` and ``evidence/1`` facts, as ProbLog's engine finds them."""
    ground_engine = engine.engine
    return ground_engine.query(db, Term("evidence", None, None)) + ground_engine.query(db, Term("evidence", None))


def reset_grounding(engine) -> None:
    """ProbLog's engine after an exception inside grounding: its stack emptied, as before."""
    ground_engine = engine.engine
    ground_engine.pointer, ground_engine.cycle_root = 0, None
    ground_engine.shrink_stack()


def has_cached_circuit(solver, q) -> bool:
    """Whether DeepProbLog's in-memory AC cache holds ``q``'s circuit."""
    return solver.cache.key_func(q) in solver.cache.cache_dict


def drop_cached_circuit(solver, q) -> None:
    """Drop ``q``'s circuit from DeepProbLog's in-memory AC cache (it is rebuilt if asked for)."""
    solver.cache.cache_dict.pop(solver.cache.key_func(q), None)


def clear_tensor_store(solver) -> None:
    """What ``Solver.solve`` does first: forget the tensors the last solve's grounding named."""
    solver.engine.tensor_store.clear()


class _NotAtomic(Exception):
    """A term or substitution :func:`substitute` leaves to ProbLog's ``apply_term``."""


def substitute(term: Term, subst: dict) -> Term:
    """``term.apply_term(subst)``, quicker for DeepProbLog's substitutions of atoms (such as
    ``p0_0 -> tensor(train(5))``): atoms are matched by name, without ProbLog's term
    comparisons.  Other substitutions and terms go to ``apply_term``."""
    names = {}
    for k, v in subst.items():
        if type(k) is not Term or k.arity != 0:
            return term.apply_term(subst)
        names[k.functor] = v

    def walk(t):
        if type(t) is Term and t.probability is None:
            if t.arity == 0:
                return names.get(t.functor, t)
            args = [walk(a) for a in t.args]
            return t.with_args(*args)
        if type(t) in (Constant, Var):
            return t
        raise _NotAtomic

    try:
        return walk(term)
    except _NotAtomic:
        return term.apply_term(subst)


# ----------------------------------------------------------------------------- training
def hook_optimizer_steps(model, hooked: "weakref.WeakSet[torch.optim.Optimizer]", owner: Any,
                         before_step: Callable[[Any], None]) -> None:
    """Call ``before_step(owner)`` before each step of the model's networks' torch optimizers
    (each optimizer hooked once, recorded in ``hooked``; ``owner`` is held by a weak reference)."""
    ref = weakref.ref(owner)
    for net in model.networks.values():
        opt = net.optimizer
        if opt is not None and opt not in hooked:
            opt.register_step_pre_hook(functools.partial(_before_step, ref, before_step))
            hooked.add(opt)


def _before_step(owner_ref: weakref.ref, before_step: Callable[[Any], None], optimizer, args, kwargs) -> None:
    owner = owner_ref()
    if owner is not None:
        before_step(owner)


def tag_result(result, entry: Any) -> None:
    """Give a ``Result`` whose semiring takes a batch entry (``BatchedGraphSemiring``) its entry."""
    if hasattr(result.semiring, "batch_entry"):
        result.semiring.batch_entry = entry


def result_tag(result) -> Any:
    """The batch entry :func:`tag_result` gave ``result`` (None: not a batched result)."""
    return getattr(result.semiring, "batch_entry", None)


# ----------------------------------------------------------------------------- KLay
def klay_indices(sdds: Iterable) -> Any:
    """KLay's index arrays of one circuit with a root per SDD node of ``sdds``, in order."""
    import klay

    circuit = klay.Circuit()
    for node in sdds:
        circuit.add_sdd(node)
    return circuit._get_indices()
