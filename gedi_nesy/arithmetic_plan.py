"""Queries over neural integers, planned on distributions instead of ground proofs.

DeepProbLog's multi-digit addition (``number/3``: ``Acc2 is Nr + 10 * Acc``, then ``Z is X2 +
Y2``) grounds one proof per combination of digits: 10^(2N) at N digits per number.  Where a
query's proof is one path (each call matches one clause, whatever the networks answer) and its
neural outputs are integers that only meet in arithmetic, the query's probability is a
computation on the *distributions* of those integers (as probabilistic-integer methods such as
PLIA evaluate them): ``Acc2`` is the distribution of ``Nr + 10 * Acc``, the outer product of two
independent ones laid out row after row (a convolution for a general sum), and
``P(Z is X2 + Y2)`` with ``Z`` known is a sum over one operand.

:func:`plan_query` runs the program on a query symbolically (SLD resolution, one clause per
call; a neural atom ``digit(X, Y)`` with ``Y`` free gives ``Y`` the network's distribution)
and returns an :class:`ArithmeticPlan`: the neural inputs it reads, the operations on
distributions, the events whose probabilities multiply, and the answers.  Exact under
independence, which the planner checks: two integers combined, and two events, never depend
on a common neural input.  Anything else (two matching clauses, negation, a probabilistic
fact, a builtin it does not know, an integer that decides which clause applies) raises
:class:`NotPlannable`, and the query is ground by ProbLog as before.  The evaluation on
tensors is :mod:`gedi_nesy.arithmetic_eval`.
"""

from __future__ import annotations

import itertools
import pickle
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from scipy.signal import fftconvolve
from problog.logic import Clause, Constant, Term, Var, term2list

MAX_SUPPORT = 10_000_000  # most values of one integer's distribution the evaluation builds
MAX_OUTER = 4_000_000  # most value pairs of a general binary operation
MAX_STEPS = 200_000  # resolution steps of one query
_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "//": lambda a, b: a // b, "mod": lambda a, b: a % b,
          "max": lambda a, b: np.maximum(a, b), "min": lambda a, b: np.minimum(a, b)}
_COMPARE = {"=:=": np.equal, "=\\=": np.not_equal, "<": np.less, ">": np.greater,
            "=<": np.less_equal, ">=": np.greater_equal}


class NotPlannable(Exception):
    """The query is outside what distributions can evaluate exactly (the message says why)."""


@dataclass
class Dist:
    """A random integer of the plan: register ``reg``, values ``lo .. lo + len(mask) - 1``
    (``mask``: which of them can occur), the neural inputs (pair indices) it depends on."""

    reg: int
    lo: int
    mask: np.ndarray
    deps: frozenset

    @property
    def values(self) -> np.ndarray:
        return np.arange(self.lo, self.lo + len(self.mask))


@dataclass
class ArithmeticPlan:
    """What :mod:`gedi_nesy.arithmetic_eval` computes for one query shape.

    ``pairs``: the (network, abstract input list) read, in register order of their ``digit``
    ops; ``ops``: ``(kind, out, *args)`` filling registers; ``events``: ``(kind, *args)`` whose
    probabilities multiply; ``answer``: the register of the free answer variable (None: the
    query has one answer); ``answers``: the answer atoms (unsubstituted) and, with ``answer``,
    the value of each (an index into the register's values)."""

    pairs: list[tuple[str, Term]] = field(default_factory=list)
    ops: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    regs: list[Dist] = field(default_factory=list)
    answer: int | None = None
    answers: list[Term] = field(default_factory=list)
    answer_index: list[int] = field(default_factory=list)
    answer_arg: int | None = None  # the query's argument that is the answer (None: deeper inside)
    worlds: float = 1.0  # digit combinations a ground proof enumeration would go through
    signature: bytes = b""  # the plan less its events' values: plans with one signature evaluate together
    values: list[int] = field(default_factory=list)  # per event "at" / "sum_at": its value (else 0)
    failed: bool = False  # the query has no proof in any world


@dataclass(frozen=True)
class NeuralAD:
    """``nn(net, inputs, output, domain) :: head``: a network's annotated disjunction."""

    net: str
    head: Term
    inputs: Term
    output: Var
    domain: tuple


def neural_ads(program: Iterable) -> dict[tuple[str, int], NeuralAD]:
    """The program's neural annotated disjunctions with integer domains (facts only), by head
    signature; any other neural predicate is left out, so a call to it is not planned."""
    ads = {}
    for clause in program:
        p = getattr(clause, "probability", None)
        if p is None or not isinstance(clause, Term) or type(clause) is Clause:
            continue
        if p.functor == "nn" and p.arity == 4:
            net, inputs, output, domain = p.args
            values = term2list(domain, False)
            if not all(isinstance(v, Constant) and isinstance(v.value, int) for v in values):
                continue  # not integers: arithmetic never reads it (a call to it is not planned)
            ads[(clause.functor, clause.arity)] = NeuralAD(str(net), clause.with_probability(None), inputs, output,
                                                           tuple(int(v.value) for v in values))
    return ads


def clause_index(program: Iterable) -> dict[tuple[str, int], list]:
    """The program's clauses (and facts) by head signature; probabilistic ones as they are."""
    index: dict[tuple[str, int], list] = {}
    for clause in program:
        head = clause.head if type(clause) is Clause else clause
        if not isinstance(head, Term) or head.functor == "_directive":
            continue
        index.setdefault((head.functor, head.arity), []).append(clause)
    return index


class _Planner:
    """SLD resolution of one query with integer distributions for neural outputs."""

    def __init__(self, index: dict, ads: dict[tuple[str, int], NeuralAD]) -> None:
        self.index, self.ads = index, ads
        self.plan = ArithmeticPlan()
        self.bind: dict[str, Any] = {}
        self.trail: list[str] = []
        self.fresh = itertools.count()
        self.seen: dict[tuple[str, Term], Dist] = {}  # (net, ground inputs) -> its digit
        self.used: set = set()  # neural inputs some event depends on
        self.scaled: dict[int, tuple[int, int, int]] = {}  # register made by affine -> (source, scale, shift)

    # -- terms
    def deref(self, t):
        while isinstance(t, Var) and t.name in self.bind:
            t = self.bind[t.name]
        return t

    def resolve(self, t):
        """``t`` with its bound variables replaced (a Dist stays a Dist)."""
        t = self.deref(t)
        if isinstance(t, Term) and t.arity and not isinstance(t, Var):
            return t.with_args(*[self.resolve(a) for a in t.args])
        return t

    def rename(self, t, names: dict):
        if isinstance(t, Var):
            if t.name not in names:
                names[t.name] = Var(f"_P{next(self.fresh)}")
            return names[t.name]
        if isinstance(t, Term) and t.arity:
            return t.with_args(*[self.rename(a, names) for a in t.args])
        return t

    def unify(self, a, b) -> bool:
        a, b = self.deref(a), self.deref(b)
        if a is b:
            return True
        if isinstance(a, Var):
            self.bind[a.name] = b
            self.trail.append(a.name)
            return True
        if isinstance(b, Var):
            return self.unify(b, a)
        if isinstance(a, Dist) or isinstance(b, Dist):
            other = b if isinstance(a, Dist) else a
            if isinstance(other, Dist) or (isinstance(other, Constant) and isinstance(other.value, int)):
                raise NotPlannable("a neural integer decides which clause applies")
            return False  # an integer never unifies with a structure
        if isinstance(a, Constant) or isinstance(b, Constant):
            return isinstance(a, Constant) and isinstance(b, Constant) and a.value == b.value
        if a.functor != b.functor or a.arity != b.arity:
            return False
        return all(self.unify(x, y) for x, y in zip(a.args, b.args))

    def undo(self, mark: int) -> None:
        while len(self.trail) > mark:
            del self.bind[self.trail.pop()]

    # -- resolution
    def run(self, query: Term) -> None:
        goals = [query]
        for _ in range(MAX_STEPS):
            if not goals:
                return
            goal = self.deref(goals.pop())
            if isinstance(goal, Var) or isinstance(goal, Dist):
                raise NotPlannable("a variable goal")
            if not self.step(goal, goals):
                self.plan.failed = True
                return
        raise NotPlannable(f"more than {MAX_STEPS} resolution steps")

    def step(self, goal: Term, goals: list) -> bool:
        """Resolve ``goal`` (its sub-goals pushed on ``goals``); False: it fails in every world."""
        sig = (_name(goal), goal.arity)
        if sig == ("true", 0):
            return True
        if sig == (",", 2):
            goals.extend([goal.args[1], goal.args[0]])
            return True
        if sig == ("is", 2):
            return self.equal(goal.args[0], self.evaluate(goal.args[1]))
        if sig == ("=", 2):
            left, right = self.deref(goal.args[0]), self.deref(goal.args[1])
            if isinstance(left, Dist) or isinstance(right, Dist):
                return self.equal(left, right)
            return self.unify(left, right)
        if sig[0] in _COMPARE and goal.arity == 2:
            return self.compare(sig[0], self.evaluate(goal.args[0]), self.evaluate(goal.args[1]))
        sig = (goal.functor, goal.arity)
        if sig in self.ads:
            if len(self.index.get(sig, ())) != 1:
                raise NotPlannable(f"{sig[0]}/{sig[1]} has clauses beside its neural annotated disjunction")
            return self.neural(self.ads[sig], goal)
        return self.call(goal, goals)

    def call(self, goal: Term, goals: list) -> bool:
        clauses = self.index.get((goal.functor, goal.arity))
        if clauses is None:
            raise NotPlannable(f"{goal.functor}/{goal.arity} is not a clause of the program")
        match = None
        for clause in clauses:
            if getattr(clause, "probability", None) is not None:
                raise NotPlannable(f"probabilistic clause for {goal.functor}/{goal.arity}")
            mark = len(self.trail)
            head = clause.head if type(clause) is Clause else clause
            names: dict = {}
            if self.unify(self.rename(head, names), goal):
                if match is not None:
                    raise NotPlannable(f"two clauses of {goal.functor}/{goal.arity} apply")
                match = (clause, names, list(self.trail[mark:]), {n: self.bind[n] for n in self.trail[mark:]})
            self.undo(mark)
        if match is None:
            return False
        clause, names, trail, bound = match
        self.bind.update(bound)
        self.trail.extend(trail)
        if type(clause) is Clause:
            goals.append(self.rename(clause.body, names))
        return True

    # -- neural atoms
    def neural(self, ad: NeuralAD, goal: Term) -> bool:
        """``digit(X, Y)``: ``Y`` is the network's distribution on input ``X`` (one per ground
        input: a second call on the same input is the same integer, as ProbLog's AD is)."""
        names: dict = {}
        if not self.unify(self.rename(ad.head, names), goal):
            return False
        inputs = self.resolve(self.rename(ad.inputs, names))
        if not _ground(inputs):
            raise NotPlannable("a neural atom with unbound inputs")
        key = (ad.net, inputs)
        dist = self.seen.get(key)
        if dist is None:
            values = np.asarray(ad.domain, dtype=np.int64)
            lo, hi = int(values.min()), int(values.max())
            mask = np.zeros(hi - lo + 1, dtype=bool)
            mask[values - lo] = True
            dist = self.new(lo, mask, frozenset([len(self.plan.pairs)]))
            self.plan.pairs.append(key)
            self.plan.ops.append(("digit", dist.reg, len(self.plan.pairs) - 1, values - lo))
            self.plan.worlds *= len(values)
            self.seen[key] = dist
        return self.equal(self.rename(ad.output, names), dist)

    # -- integers
    def new(self, lo: int, mask: np.ndarray, deps: frozenset) -> Dist:
        dist = Dist(len(self.plan.regs), lo, mask, deps)
        self.plan.regs.append(dist)
        return dist

    def evaluate(self, expr):
        """An arithmetic expression: an int, or a :class:`Dist`."""
        expr = self.deref(expr)
        if isinstance(expr, Dist):
            return expr
        if isinstance(expr, Constant):
            if isinstance(expr.value, int):
                return expr.value
            raise NotPlannable(f"non-integer number {expr}")
        if isinstance(expr, Var):
            raise NotPlannable("arithmetic on an unbound variable")
        op = _name(expr)
        if expr.arity == 1 and op == "-":
            return self.arith("*", -1, self.evaluate(expr.args[0]))
        if expr.arity == 2 and op in _ARITH:
            return self.arith(op, self.evaluate(expr.args[0]), self.evaluate(expr.args[1]))
        raise NotPlannable(f"arithmetic {expr.functor}/{expr.arity}")

    def arith(self, op: str, a, b):
        if not isinstance(a, Dist) and not isinstance(b, Dist):
            if op in ("//", "mod") and b == 0:
                raise NotPlannable("division by zero")
            return int(_ARITH[op](a, b))
        if op == "+" and isinstance(b, Dist) and not isinstance(a, Dist):
            a, b = b, a
        if op == "*" and isinstance(b, Dist) and not isinstance(a, Dist):
            a, b = b, a
        if isinstance(a, Dist) and not isinstance(b, Dist) and op in ("+", "-", "*"):
            scale, shift = (1, b) if op == "+" else (1, -b) if op == "-" else (b, 0)
            return self.affine(a, scale, shift)
        if op == "-" and isinstance(a, Dist) and isinstance(b, Dist):
            return self.add(a, self.affine(b, -1, 0))
        if op == "+":
            return self.add(a, b)
        return self.outer(op, a, b)

    def affine(self, a: Dist, scale: int, shift: int):
        if scale == 0:
            return shift
        if (scale, shift) == (1, 0):
            return a
        vals = a.values[a.mask] * scale + shift
        lo, hi = int(vals.min()), int(vals.max())
        mask = np.zeros(hi - lo + 1, dtype=bool)
        mask[vals - lo] = True
        out = self.new(lo, mask, a.deps)
        self.plan.ops.append(("affine", out.reg, a.reg, scale, shift))
        self.scaled[out.reg] = (a.reg, scale, shift)
        return out

    def add(self, a: Dist, b: Dist) -> Dist:
        self.independent(a.deps, b.deps)
        for high, low in ((a, b), (b, a)):
            src, scale, shift = self.scaled.get(high.reg, (None, 0, 0))
            if src is not None and scale >= len(low.mask):
                return self.place(self.plan.regs[src], low, scale, shift)
        if a.mask.all() and b.mask.all():  # two ranges: their sums are a range
            mask = np.ones(len(a.mask) + len(b.mask) - 1, dtype=bool)
        else:
            mask = fftconvolve(a.mask.astype(np.float64), b.mask.astype(np.float64)) > 0.5
        out = self.new(a.lo + b.lo, mask, a.deps | b.deps)
        self.plan.ops.append(("add", out.reg, a.reg, b.reg))
        return out

    def place(self, src: Dist, low: Dist, scale: int, shift: int) -> Dist:
        """``scale * src + shift + low`` with ``low`` narrower than ``scale`` (``Nr + 10 * Acc``):
        every value is one pair of values, so the distribution is their outer product laid out
        row after row, not a convolution."""
        width = len(low.mask)
        mask = np.pad(np.outer(src.mask, low.mask), ((0, 0), (0, scale - width))).reshape(-1)
        mask = mask[: scale * (len(src.mask) - 1) + width]
        out = self.new(scale * src.lo + shift + low.lo, mask, src.deps | low.deps)
        self.plan.ops.append(("place", out.reg, src.reg, low.reg, scale))
        return out

    def grid(self, op: str, a, b) -> tuple[Dist, Dist, np.ndarray, np.ndarray]:
        """``a`` and ``b`` (ints or independent distributions) as distributions, and the value
        grid of their pairs; :class:`NotPlannable` past ``MAX_OUTER`` pairs."""
        a, b = self.as_dist(a), self.as_dist(b)
        self.independent(a.deps, b.deps)
        if len(a.mask) * len(b.mask) > MAX_OUTER:
            raise NotPlannable(f"{op} of two integers with {len(a.mask)} x {len(b.mask)} values")
        return (a, b, *np.meshgrid(a.values, b.values, indexing="ij"))

    def outer(self, op: str, a, b) -> Dist:
        a, b, va, vb = self.grid(op, a, b)
        if op in ("//", "mod") and np.any(b.values[b.mask] == 0):
            raise NotPlannable("a possible division by zero")
        possible = np.outer(a.mask, b.mask)
        if op in ("//", "mod"):
            vb = np.where(vb == 0, 1, vb)  # (only where b cannot be 0: checked above)
        table = np.where(possible, _ARITH[op](va, vb), 0)
        lo, hi = int(table[possible].min()), int(table[possible].max())
        mask = np.zeros(hi - lo + 1, dtype=bool)
        mask[table[possible] - lo] = True
        out = self.new(lo, mask, a.deps | b.deps)
        self.plan.ops.append(("outer", out.reg, a.reg, b.reg, (table - lo) * possible, possible))
        return out

    def as_dist(self, x) -> Dist:
        """An int as a one-value distribution (no neural input)."""
        if isinstance(x, Dist):
            return x
        out = self.new(int(x), np.ones(1, dtype=bool), frozenset())
        self.plan.ops.append(("const", out.reg))
        return out

    def independent(self, *deps: frozenset) -> None:
        seen: set = set()
        for d in deps:
            if seen & d:
                raise NotPlannable("two integers that depend on one neural input are combined")
            seen |= d

    # -- events
    def event(self, kind: str, deps: frozenset, *args) -> None:
        self.independent(self.used, deps)
        self.used |= deps
        self.plan.events.append((kind, *args))

    def equal(self, left, right) -> bool:
        """``left = right`` where either may be a neural integer or an int: a binding, an
        event (``P(Y = 3)``), or decided here."""
        left, right = self.deref(left), self.deref(right)
        for var, other in ((left, right), (right, left)):
            if isinstance(var, Var):
                self.bind[var.name] = Constant(other) if isinstance(other, int) else other
                self.trail.append(var.name)
                return True
        if isinstance(left, Dist) or isinstance(right, Dist):
            dist, other = (left, right) if isinstance(left, Dist) else (right, left)
            if isinstance(other, Dist):
                return self.compare("=:=", dist, other)
            value = _int_of(other)
            if value is None or not 0 <= value - dist.lo < len(dist.mask) or not dist.mask[value - dist.lo]:
                return False  # a structure, a non-integer or an impossible value
            self.event("at", dist.deps, dist.reg, value - dist.lo)
            return True
        if isinstance(left, int) or isinstance(right, int):
            return _int_of(left) is not None and _int_of(left) == _int_of(right)
        return self.unify(left, right)

    def compare(self, op: str, a, b) -> bool:
        if not isinstance(a, Dist) and not isinstance(b, Dist):
            return bool(_COMPARE[op](a, b))
        a, b, va, vb = self.grid(op, a, b)
        holds = _COMPARE[op](va, vb) & np.outer(a.mask, b.mask)
        if not holds.any():
            return False
        self.event("pairs", a.deps | b.deps, a.reg, b.reg, holds)
        return True


def _name(t: Term) -> str:
    """A term's functor as written, without the quotes ProbLog keeps on operators (``'is'``)."""
    f = t.functor
    return f[1:-1] if len(f) > 2 and f[0] == f[-1] == "'" else f


def _int_of(t) -> int | None:
    """An int, or an integer ``Constant``'s value; else None."""
    if isinstance(t, int):
        return t
    if isinstance(t, Constant) and isinstance(t.value, int):
        return t.value
    return None


def _ground(t) -> bool:
    if isinstance(t, (Var, Dist)):
        return False
    return not isinstance(t, Term) or all(_ground(a) for a in t.args)


def plan_query(query: Term, index: dict, ads: dict) -> ArithmeticPlan:
    """The :class:`ArithmeticPlan` of ``query`` (abstract, as DeepProbLog's cache keys it) over
    the program's clause ``index`` and neural ``ads``; :class:`NotPlannable` when the query is
    outside it."""
    planner = _Planner(index, ads)
    planner.run(query)
    plan = planner.plan
    if plan.failed:
        plan.answers = [query]
        return plan
    resolved = planner.resolve(query)
    free = [a for a in _leaves(resolved) if isinstance(a, (Var, Dist))]
    if any(isinstance(a, Var) for a in free):
        raise NotPlannable("an answer variable the query leaves unbound")
    dists = {id(d): d for d in free}
    if len(dists) > 1:
        raise NotPlannable("more than one neural integer in the answer")
    if dists:
        answer = next(iter(dists.values()))
        planner.independent(planner.used, answer.deps)
        plan.answer = answer.reg
        top = [i for i, a in enumerate(resolved.args) if a is answer]
        plan.answer_arg = top[0] if len(top) == 1 and sum(x is answer for x in _leaves(resolved)) == 1 else None
        args = list(resolved.args)
        for i in np.flatnonzero(answer.mask):
            value = Constant(int(answer.lo + i))
            if plan.answer_arg is None:
                plan.answers.append(_replace(resolved, answer, value))
            else:
                args[plan.answer_arg] = value
                plan.answers.append(resolved.with_args(*args))
            plan.answer_index.append(int(i))
    else:
        plan.answers = [resolved]
    _fuse(plan)
    _sign(plan)
    return plan


def _sign(plan: ArithmeticPlan) -> None:
    """The plan's signature and its events' values: queries that differ only in a known result
    (the sum of a multi-digit addition) share the signature and are evaluated as one group."""
    shapes = []
    for ev in plan.events:
        if ev[0] in ("at", "sum_at"):
            shapes.append(ev[:-1])
            plan.values.append(int(ev[-1]))
        else:
            shapes.append(ev)
            plan.values.append(0)
    regs = [(d.lo, len(d.mask)) for d in plan.regs]
    plan.signature = pickle.dumps((plan.ops, shapes, regs, plan.answer, plan.answer_index), protocol=4)


def _leaves(t):
    if isinstance(t, Term) and t.arity and not isinstance(t, Var):
        for a in t.args:
            yield from _leaves(a)
    else:
        yield t


def _replace(t, dist: Dist, value: Constant):
    if t is dist:
        return value
    if isinstance(t, Term) and t.arity and not isinstance(t, Var):
        return t.with_args(*[_replace(a, dist, value) for a in t.args])
    return t


def _fuse(plan: ArithmeticPlan) -> None:
    """Drop operations no event nor answer reads; an event ``at`` on a sum read nowhere else
    becomes ``sum_at`` (one value of the sum: a sum over one operand, not a convolution)."""
    reads: dict[int, int] = {}
    producer = {op[1]: op for op in plan.ops}

    def count(reg: int) -> None:
        reads[reg] = reads.get(reg, 0) + 1
        if reads[reg] == 1:
            for r in _inputs(producer[reg]):
                count(r)

    for ev in plan.events:
        for r in _event_regs(ev):
            count(r)
    if plan.answer is not None:
        count(plan.answer)
    events = []
    for ev in plan.events:
        op = producer[ev[1]] if ev[0] == "at" else None
        if op is not None and op[0] == "add" and reads[ev[1]] == 1:
            events.append(("sum_at", op[2], op[3], ev[2] + plan.regs[ev[1]].lo))
        else:
            events.append(ev)
    plan.events = events
    live = {r for ev in events for r in _event_regs(ev)} | ({plan.answer} if plan.answer is not None else set())
    keep = set()

    def mark(reg: int) -> None:
        if reg not in keep:
            keep.add(reg)
            for r in _inputs(producer[reg]):
                mark(r)

    for r in live:
        mark(r)
    plan.ops = [op for op in plan.ops if op[1] in keep]
    big = [plan.regs[op[1]] for op in plan.ops if len(plan.regs[op[1]].mask) > MAX_SUPPORT]
    if big:
        raise NotPlannable(f"an integer with {len(big[0].mask)} values (more than {MAX_SUPPORT})")


def _inputs(op: tuple) -> list[int]:
    kind = op[0]
    if kind in ("digit", "const"):
        return []
    if kind == "affine":
        return [op[2]]
    return [op[2], op[3]]


def _event_regs(ev: tuple) -> list[int]:
    return [ev[1]] if ev[0] == "at" else [ev[1], ev[2]]


__all__ = ["ArithmeticPlan", "NotPlannable", "clause_index", "neural_ads", "plan_query", "MAX_SUPPORT"]
