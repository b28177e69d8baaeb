"""One circuit for all the labels of a query structure.

DeepProbLog's circuit cache keys a circuit by the abstract query, label included
(``addition(p0_0, p1_0, 7)``): every distinct label is ground and compiled on its own, although
grounding enumerates the same proofs for each.  Here the query is ground once with its output
arguments (``Query.output_ind``) free, ProbLog grounds every answer into one formula, and each
label's circuit is read off its own answer of that formula.

This is only done where it cannot change a probability: the output arguments are constants of
the program (not placeholders of the substitution) and the program's clauses use no builtin
whose outcome depends on whether an argument is bound (``var/1``, ``ground/1``, ``\\+``,
``findall/3``, cuts, type tests, ...); a free query that fails, grounds more than
``max_answers`` answers or takes longer than ``max_seconds`` leaves the labels to be compiled
one by one, as before.
"""

from __future__ import annotations

import contextlib
import signal

from problog.logic import Constant, Term

from gedi_nesy.limits import time_limit

# builtins (name, arity) whose outcome can depend on whether an argument is bound (or on the
# order of answers)
ORDER_SENSITIVE = frozenset(
    [(n, 1) for n in ("var", "nonvar", "ground", "\\+", "not", "once", "atom", "atomic", "number", "integer",
                      "float", "is_list", "compound", "callable")]
    + [(n, 2) for n in ("==", "\\==", "@<", "@>", "@=<", "@>=", "->", "*->", "forall", "copy_term", "=..")]
    + [(n, 3) for n in ("findall", "all", "bagof", "setof", "aggregate_all", "functor", "arg")]
    + [("findall", 4), ("!", 0)] + [("call", n) for n in range(1, 9)])


def free_label_query(q):
    """``q`` with its output arguments free (DeepProbLog's ``Query.variable_output``), or None
    when an output argument is not a constant of the program."""
    arity = q.query.arity
    if not arity or not all(-arity <= i < arity for i in q.output_ind):
        return None
    outputs = q.output_values()
    if not outputs or not all(_is_constant(v, q.substitution) for v in outputs):
        return None
    return q.variable_output()


def _is_constant(term, substitution: dict) -> bool:
    if type(term) is Constant:
        return True
    return type(term) is Term and term.arity == 0 and term not in substitution


def order_sensitive(program) -> bool:
    """True when a clause of ``program`` (a ProbLog ``LogicProgram``) calls a builtin of
    :data:`ORDER_SENSITIVE`."""
    for clause in program:
        body = getattr(clause, "body", None)
        if body is not None and _functors_in(body) & ORDER_SENSITIVE:
            return True
    return False


def _functors_in(term) -> set[tuple[str, int]]:
    """``(name, arity)`` of every subterm of ``term``."""
    out: set[tuple[str, int]] = set()
    stack = [term]
    while stack:
        t = stack.pop()
        if isinstance(t, Term):
            out.add((str(t.functor).strip("'"), t.arity))
            stack.extend(t.args)
    return out


def time_bound(seconds: float) -> contextlib.AbstractContextManager:
    """:func:`gedi_nesy.limits.time_limit` (a :class:`GediError` after ``seconds``), unless a
    wall-clock limit is already running (e.g. ``--ground-timeout`` around this grounding): that
    one stays in charge."""
    if hasattr(signal, "getitimer") and signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return contextlib.nullcontext()
    return time_limit(seconds, f"grounding a query with its labels free took longer than {seconds:g} s")
