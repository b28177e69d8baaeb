"""Batched exact inference for DeepProbLog: each query shape compiled once, a batch as one circuit.

Install with ``model.set_engine(BatchedEngine(model), cache=True)`` (DeepProbLog's own API) or
:func:`set_engine`.  How it works and what it supports: the "Batched engine" section of
``gedi_nesy/README.md``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import pickle
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from problog.evaluator import Semiring as ProbLogSemiring
from problog.logic import Constant, Term, Var, term2list
from torch import Tensor

from gedi_core.errors import GediError

with warnings.catch_warnings():  # DeepProbLog warns on import when PySwip is missing
    warnings.filterwarnings("ignore", message="ApproximateEngine is not available")
    from deepproblog.engines import ExactEngine
    from deepproblog.semiring import Result
    from deepproblog.semiring.graph_semiring import GraphSemiring
    from deepproblog.solver import Solver

ENGINES = ("batched", "exact")
# log-weight used for "impossible" (a complement 1 - sum p that is <= 0 in floating point):
# finite, so that no -inf - (-inf) = nan reaches the gradients; exp(FLOOR) == 0.
FLOOR = -1.0e30
# DeepProbLog's cross-entropy eps (GraphSemiring.cross_entropy): log1mexp's smallest 1 - p.
EPS = 1e-12
_LN2 = math.log(2.0)
_SHAPES_FORMAT = 2  # version of the pickled CompiledShape (disk cache file name)


# ----------------------------------------------------------------------------- numerics
def log1mexp(x: Tensor, tiny: float = EPS) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate over the whole range (``log(-expm1(x))``
    above ``-ln 2``, ``log1p(-exp(x))`` below).

    ``1 - exp(x)`` is taken as at least ``tiny`` (DeepProbLog's eps): for ``x > -tiny``
    (``p`` rounded to 1, ``x == 0`` included) the value is ``log(tiny)`` (-27.6) and the
    gradient is the one at ``-tiny`` (about ``-1/tiny``, straight through the cap), so a
    query that should be false while ``p ~ 1`` gets DeepProbLog's finite loss and a gradient
    that pushes ``p`` down.  Finite for every ``x`` (``-inf`` gives 0)."""
    capped = x - (x + tiny).clamp(min=0.0).detach()  # min(x, -tiny), gradient 1
    near = capped > -_LN2
    a = torch.where(near, capped, torch.full_like(capped, -1.0))  # each branch on safe inputs:
    b = torch.where(near, torch.full_like(capped, -1.0), capped)  # no inf * 0 = nan in backward
    return torch.where(near, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(b)))




# ----------------------------------------------------------------------------- symbolic weights
class SymbolicSemiring(ProbLogSemiring):
    """ProbLog semiring whose values are small expressions, used once per query shape to read
    the weight ProbLog gives each SDD variable (``extract_weights`` + constraint updates).

    Expressions: ``("c", float)`` constant, ``("nn", net, inputs, j)`` network output,
    ``("neg", e)`` = 1 - e, ``("comp", (e, ...))`` = 1 - sum e (annotated disjunction's
    "none" choice)."""

    def one(self):
        return ("c", 1.0)

    def zero(self):
        return ("c", 0.0)

    def is_one(self, a):
        return a == ("c", 1.0)

    def is_zero(self, a):
        return a == ("c", 0.0)

    def plus(self, a, b):
        if a[0] == "c" and b[0] == "c":
            return ("c", a[1] + b[1])
        raise GediError("batched engine: unsupported sum of weights (use --engine exact)")

    def times(self, a, b):
        if a[0] == "c" and b[0] == "c":
            return ("c", a[1] * b[1])
        raise GediError("batched engine: unsupported product of weights (use --engine exact)")

    def negate(self, a):
        if a[0] == "c":
            return ("c", 1.0 - a[1])
        return ("neg", a)

    def value(self, a, key=None):
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return ("c", float(a))
        if type(a) is Constant:
            return ("c", float(a))
        if isinstance(a, Term):
            if a.functor == "nn":
                if len(a.args) != 3:
                    raise GediError(f"batched engine: neural weight {a} is not supported (use --engine exact)")
                return ("nn", str(a.args[0]), a.args[1], int(a.args[2]))
            if a.functor == "t":
                raise GediError("batched engine: learnable probabilities t(_) are not supported (use --engine exact)")
            if a.functor == "tensor":
                raise GediError("batched engine: tensor-valued probabilities are not supported (use --engine exact)")
            try:
                return ("c", float(a.compute_value()))
            except Exception:  # noqa: BLE001
                raise GediError(f"batched engine: cannot read the probability {a} (use --engine exact)") from None
        raise GediError(f"batched engine: cannot read the probability {a!r} (use --engine exact)")

    def ad_complement(self, ws, key=None):
        if all(w[0] == "c" for w in ws):
            return ("c", 1.0 - sum(w[1] for w in ws))
        return ("comp", tuple(ws))

    def in_domain(self, a):
        return True

    def is_dsp(self):
        return True


# ----------------------------------------------------------------------------- compiled shapes
class CompiledShape:
    """One query shape (abstract query term): its answers, circuit, variables' weights and
    neural inputs.

    ``answers``: the query atoms ProbLog grounds the shape to (one for a ground query, every
    answer for a query with free variables), unsubstituted; ``answer_const[k]``: ``log p`` of
    answer ``k`` when it is decided without networks (0 or -inf), else None and the answer is
    circuit root ``answer_root[k]`` (the circuit's last root is the normaliser).

    ``pairs``: the distinct (network, abstract inputs) the shape reads; ``leaf_pair`` /
    ``leaf_j``: for each neural leaf, its pair and output index.  The weight feature table
    of one query is ``[log p (leaves) | log(1-p) (leaves) | log comp (AD complements) |
    log consts]``; ``pos_cols``/``neg_cols`` pick each variable's weights from it."""

    def __init__(self, key: Term | None = None) -> None:
        self.key = key
        self.answers: list[Term] = []
        self.answer_const: list[float | None] = []
        self.answer_root: list[int] = []
        self.pairs: list[tuple[str, Term]] = []
        self.leaf_pair: list[int] = []
        self.leaf_j: list[int] = []
        self.comp: list[list[int]] = []  # leaves of each complement
        self.consts: list[float] = []
        self.pos_cols: list[int] = []
        self.neg_cols: list[int] = []
        self.indices: Any = None  # KLay circuit indices (picklable); None without a circuit
        self.n_vars = 0
        self.ground_seconds = 0.0
        self.compile_seconds = 0.0  # grounding, SDD and KLay circuit together
        self.circuit_nodes = 0
        self._tensors: dict[str, Any] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tensors"] = {}
        return state

    @property
    def name(self) -> Term:
        """The (first) query atom, as ProbLog names it (unsubstituted)."""
        return self.answers[0]

    @property
    def constant(self) -> float | None:
        """``log p`` of a single-answer shape decided without networks, else None."""
        return self.answer_const[0] if len(self.answers) == 1 else None

    @property
    def n_circuit_answers(self) -> int:
        """Answers read off the circuit (its roots, less the normaliser)."""
        return sum(r >= 0 for r in self.answer_root)

    def layout(self) -> dict[str, Any]:
        """Numpy index arrays used to place many instances of this shape in one evaluation."""
        if self._tensors:
            return self._tensors
        n_leaf, n_comp, n_const = len(self.leaf_pair), len(self.comp), len(self.consts)
        kind = np.empty(2 + 2 * self.n_vars, dtype=np.int64)
        local = np.empty_like(kind)
        kind[:2], local[:2] = 4, (0, 1)  # KLay's units: zero, one
        cols = np.empty(2 * self.n_vars, dtype=np.int64)
        cols[0::2], cols[1::2] = self.pos_cols, self.neg_cols
        bounds = np.array([n_leaf, 2 * n_leaf, 2 * n_leaf + n_comp, 2 * n_leaf + n_comp + n_const])
        k = np.searchsorted(bounds, cols, side="right")
        start = np.concatenate([[0], bounds])[k]
        kind[2:], local[2:] = k, cols - start
        maxlen = max((len(c) for c in self.comp), default=1)
        comp = np.full((n_comp, maxlen), -1, dtype=np.int64)
        for i, c in enumerate(self.comp):
            comp[i, : len(c)] = c
        layers = []
        width = 2 + 2 * self.n_vars
        for ix_in, offsets in zip(*self.indices):
            ix_in, offsets = np.asarray(ix_in, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
            layers.append((ix_in, offsets[1:], width, len(ix_in), len(offsets) - 1))
            width = len(offsets) - 1
        self._tensors = {"kind": kind, "local": local, "comp": comp,
                         "consts": [math.log(c) if c > 0 else FLOOR for c in self.consts],
                         "leaf_pair": np.asarray(self.leaf_pair, dtype=np.int64),
                         "leaf_j": np.asarray(self.leaf_j, dtype=np.int64), "layers": layers, "roots": width,
                         "replicated": {}}
        return self._tensors

    def replicated(self, g: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """The circuit's layers for ``g`` instances side by side: per layer, the edges' input
        indices and the segments' ends, relative to the layer's first instance, and the
        number of outputs (cached per ``g``)."""
        lay = self.layout()
        out = lay["replicated"].get(g)
        if out is None:
            out = []
            for ix_in, ends, w_in, n_edges, n_out in lay["layers"]:
                inst = np.arange(g)[:, None]
                out.append(((ix_in[None] + inst * w_in).ravel(), (ends[None] + inst * n_edges).ravel(), g * n_out))
            lay["replicated"][g] = out
        return out


def compile_shape(ac, key: Term) -> CompiledShape:
    """A :class:`CompiledShape` from DeepProbLog's ``ArithmeticCircuit`` of one query shape."""
    t0 = time.time()
    shape = CompiledShape(key)
    sdd = ac.sdd
    if list(sdd.evidence()):
        raise GediError(f"batched engine: query {key}: evidence is not supported (use --engine exact)")
    live = []
    for name, node in sdd.queries():
        shape.answers.append(name)
        if node is None or node == sdd.FALSE:
            shape.answer_const.append(-math.inf)
        elif node == sdd.TRUE:
            shape.answer_const.append(0.0)
        else:
            shape.answer_const.append(None)
            live.append(node)
        shape.answer_root.append(len(live) - 1 if shape.answer_const[-1] is None else -1)
    if live:
        _read_weights(shape, sdd, key)
        _build_circuit(shape, sdd, live)
    shape.ground_seconds = ac.ground_time or 0.0
    shape.compile_seconds = shape.ground_seconds + ac.compile_time + time.time() - t0
    return shape


def _read_weights(shape: CompiledShape, sdd, key: Term) -> None:
    """Fill ``shape``'s leaves, complements, constants and weight columns from ProbLog's
    weights of the SDD's variables (read with :class:`SymbolicSemiring`)."""
    weights = sdd.extract_weights(SymbolicSemiring())
    if 0 in weights and weights[0][0] != ("c", 1.0):
        raise GediError(f"batched engine: query {key}: a weight on 'true' is not supported (use --engine exact)")
    n_vars = sdd.get_manager().get_manager().var_count()
    var_w = {sdd.atom2var[atom]: w for atom, w in weights.items() if atom in sdd.atom2var}

    pair_index: dict[tuple[str, Term], int] = {}
    leaf_index: dict[tuple[int, int], int] = {}
    const_index: dict[float, int] = {}
    comp_index: dict[tuple, int] = {}

    def leaf(e) -> int:
        _, net, inputs, j = e
        p = pair_index.setdefault((net, inputs), len(pair_index))
        return leaf_index.setdefault((p, j), len(leaf_index))

    def ref(e) -> tuple[str, int]:
        kind = e[0]
        if kind == "c":
            return "c", const_index.setdefault(float(e[1]), len(const_index))
        if kind == "nn":
            return "p", leaf(e)
        if kind == "neg" and e[1][0] == "nn":
            return "q", leaf(e[1])
        if kind == "comp" and all(w[0] == "nn" for w in e[1]):
            leaves = tuple(sorted(leaf(w) for w in e[1]))
            return "r", comp_index.setdefault(leaves, len(comp_index))
        raise GediError(f"batched engine: query {key}: unsupported weight {e} (use --engine exact)")

    cols: list[tuple[str, int]] = []  # per weight: (kind, index), resolved to columns below
    for var in range(1, n_vars + 1):
        pos, neg = var_w.get(var, (("c", 1.0), ("c", 1.0)))
        cols += [ref(pos), ref(neg)]

    shape.pairs = sorted(pair_index, key=pair_index.__getitem__)
    leaves = sorted(leaf_index, key=leaf_index.__getitem__)
    shape.leaf_pair = [p for p, _ in leaves]
    shape.leaf_j = [j for _, j in leaves]
    shape.comp = [list(c) for c in sorted(comp_index, key=comp_index.__getitem__)]
    shape.consts = sorted(const_index, key=const_index.__getitem__)
    n_leaf, n_comp = len(leaves), len(shape.comp)
    offset = {"p": 0, "q": n_leaf, "r": 2 * n_leaf, "c": 2 * n_leaf + n_comp}
    flat = [offset[k] + i for k, i in cols]
    shape.pos_cols, shape.neg_cols = flat[0::2], flat[1::2]
    shape.n_vars = n_vars


def _build_circuit(shape: CompiledShape, sdd, nodes: list) -> None:
    """KLay circuit with roots ``WMC(answer AND constraints)`` per answer, then
    ``WMC(constraints)``: ProbLog's evaluation (``SDDEvaluator.evaluate_custom``)."""
    import klay

    manager = sdd.get_manager()
    constraint = sdd.get_constraint_inode()
    circuit = klay.Circuit()
    numerators = [manager.conjoin(sdd.get_inode(node), constraint) for node in nodes]
    for numerator in numerators + [constraint]:
        circuit.add_sdd(numerator)
    shape.indices = circuit._get_indices()
    for numerator in numerators:
        manager.deref(numerator)
    roots = len(shape.indices[1][-1]) - 1 if shape.indices[1] else 0
    if roots != len(nodes) + 1:
        raise GediError(f"batched engine: query {shape.key}: circuit has {roots} roots, expected {len(nodes) + 1}")
    shape.circuit_nodes = int(sum(len(ix) for ix in shape.indices[0]))


# ----------------------------------------------------------------------------- DeepProbLog's losses
class _BatchGradient:
    """The circuit answers' probabilities of one solved batch and the gradient DeepProbLog's
    loss functions gave them, sent through the batch's graph in one backward pass.

    DeepProbLog back-propagates each query's loss on its own (``loss.backward(retain_graph=
    True)`` per query); the batch's probabilities come from one circuit and one network call,
    so that would run the whole batch's backward once per query.  The gradients are sent on
    when every answer of the batch that depends on a network has its loss, else before the
    next ``solve``, before any network optimizer's step or on
    :meth:`BatchedSolver.flush_gradients`."""

    def __init__(self, probs: Tensor, n_answers: int, pending: list["_BatchGradient"]) -> None:
        self.probs = probs
        self.n_answers = n_answers  # answers that depend on networks (their losses are awaited)
        self.values: list[float] = probs.detach().tolist()
        self.grad = [0.0] * len(self.values)
        self.seen: set[int] = set()
        self.dirty = False
        self._pending = pending  # the solver's list of batches with gradients not sent yet

    def add(self, pos: int, grad: float) -> None:
        """Add ``d loss / d p`` of answer ``pos``; send all once every awaited answer has one."""
        self.grad[pos] += grad
        self.seen.add(pos)
        if not self.dirty:
            self.dirty = True
            self._pending.append(self)
        if len(self.seen) == self.n_answers:
            self.flush()

    def flush(self) -> None:
        """Send the gradients received so far through the batch's graph."""
        if self.dirty:
            grad, self.grad, self.dirty = self.grad, [0.0] * len(self.values), False
            self._pending.remove(self)
            grad_t = torch.tensor(grad, dtype=self.probs.dtype, device=self.probs.device)
            torch.autograd.backward(self.probs, grad_t, retain_graph=True)


# Results of a batched solve -> (their batch, (answer, position in the batch) of each answer read off networks)
_RESULT_BATCH: "weakref.WeakKeyDictionary[Any, tuple[_BatchGradient, list[tuple[Term, int]]]]" = (
    weakref.WeakKeyDictionary())


def _same_term(a, b) -> bool:
    """``a == b`` for terms, quicker than ProbLog's comparison where they share subterms
    (an answer and DeepProbLog's ``q.substitute().query`` share the substituted images)."""
    if a is b:
        return True
    if type(a) is Term and type(b) is Term and a.probability is None and b.probability is None:
        return (a.functor == b.functor and a.arity == b.arity
                and all(_same_term(x, y) for x, y in zip(a.args, b.args)))
    return a == b


def _cross_entropy(p: float, target: float, eps: float = 1e-12) -> tuple[float, float]:
    """DeepProbLog's ``GraphSemiring.cross_entropy`` (tensor case) for one probability, with
    weight 1: the loss and ``d loss / d p`` (the clamps pass no gradient at their bound)."""
    pos, neg = max(p, 0.0), max(1.0 - p, 0.0)
    d_pos = 1.0 / (pos + eps) if p > 0.0 else 0.0  # d log(pos + eps) / dp
    d_neg = -1.0 / (neg + eps) if 1.0 - p > 0.0 else 0.0  # d log(neg + eps) / dp
    if target == 1.0:
        return -math.log(pos + eps), -d_pos
    if target == 0.0:
        return -math.log(neg + eps), -d_neg
    loss = -(target * math.log(pos + eps) + (1.0 - target) * math.log(neg + eps))
    return loss, -(target * d_pos + (1.0 - target) * d_neg)


def _mse(p: float, target: float) -> tuple[float, float]:
    """DeepProbLog's ``GraphSemiring.mse`` for one probability, with weight 1: loss, gradient."""
    return (p - target) ** 2, 2.0 * (p - target)


def _batched_loss(loss_fn, value_and_grad):
    """DeepProbLog's loss function ``loss_fn`` (loss of one result and its backward pass)
    where, for a result of :class:`BatchedSolver`, the loss and its gradient are computed
    by ``value_and_grad`` (the same formula) and the gradient is handed to the batch."""

    @functools.wraps(loss_fn)
    def loss(result, target, weight, q=None, **kwargs):
        entry = _RESULT_BATCH.get(result)
        key = q if q is not None or len(result) != 1 else next(iter(result))
        pos = None if entry is None else next((i for term, i in entry[1] if _same_term(term, key)), None)
        if pos is None:  # not batched, or decided without networks: DeepProbLog's own
            return loss_fn(result, target, weight, q=q, **kwargs)
        batch = entry[0]
        value, grad = value_and_grad(batch.values[pos], float(target), **kwargs)
        batch.add(pos, grad * weight)
        return value * weight

    return staticmethod(loss)


class BatchedGraphSemiring(GraphSemiring):
    """DeepProbLog's ``GraphSemiring`` whose loss functions (``cross_entropy``, ``mse``: what
    ``train_model`` calls per query) send a batched solve's gradients in one backward pass."""

    cross_entropy = _batched_loss(GraphSemiring.cross_entropy, _cross_entropy)
    mse = _batched_loss(GraphSemiring.mse, _mse)


# ----------------------------------------------------------------------------- solver
@dataclass
class _Evaluation:
    """One batch evaluated: every circuit answer's ``log p`` and where each query's answers are."""

    shapes: list[CompiledShape]
    circuit_logp: Tensor  # log p of the batch's circuit answers, query after query
    first: list[int]  # per query: index of its first circuit answer in circuit_logp


class BatchedSolver(Solver):
    """A DeepProbLog ``Solver`` that evaluates a whole batch of queries with tensorised
    circuits (see the README's "Batched engine").  ``disk_cache``: folder where compiled
    shapes are kept across runs (keyed by the program text)."""

    def __init__(self, model, engine, cache: bool = True, cache_root: str | None = None,
                 disk_cache: str | Path | None = None, semiring: type = GraphSemiring, **kwargs) -> None:
        if semiring is GraphSemiring:
            semiring = BatchedGraphSemiring
        with contextlib.redirect_stdout(io.StringIO()):  # DeepProbLog prints "Caching ACs"
            super().__init__(model, engine, semiring=semiring, cache=cache, cache_root=cache_root, **kwargs)
        for name, net in model.networks.items():
            if net.k is not None:
                raise GediError(f"batched engine: network '{name}' has k={net.k} (top-k); use --engine exact")
        self.shapes: dict[Term, CompiledShape] = {}
        self._terms: dict[tuple, tuple] = {}  # query -> its shape, ground neural inputs and answers
        self._args: dict[Term, list[Term]] = {}  # ground input term -> its arguments (term2list)
        # circuit_nodes: KLay edges of the compiled shapes
        self.stats = {"shapes": 0, "compile_seconds": 0.0, "disk_hits": 0, "circuit_nodes": 0}
        self._pending: list[_BatchGradient] = []  # solved batches whose loss gradients wait
        self._hooked: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        self.disk_path: Path | None = None
        self._disk: dict[str, CompiledShape] = {}
        if disk_cache is not None:
            text = "\n".join(str(c) for c in model.program)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            self.disk_path = Path(disk_cache) / f"shapes-v{_SHAPES_FORMAT}-{digest}.pkl"
            if self.disk_path.is_file():
                with open(self.disk_path, "rb") as f:
                    self._disk = pickle.load(f)

    @classmethod
    def replacing(cls, solver, disk_cache: str | Path | None = None) -> "BatchedSolver":
        """A batched solver with the settings of DeepProbLog's ``solver`` (cache, cache root,
        semiring, SDD garbage collection), for the same model and engine."""
        cache = solver.cache
        return cls(solver.model, solver.engine, cache=cache.cache,
                   cache_root=str(cache.cache_root) if cache.cache_file else None,
                   disk_cache=disk_cache, semiring=solver.semiring, sdd_auto_gc=solver.sdd_auto_gc)

    # -- compilation
    def shape_key(self, q) -> Term:
        """The term a query is compiled for: its abstract term with DeepProbLog's AC cache
        (queries of one shape share a circuit), else the substituted query (as ExactEngine)."""
        return q.query if self.cache.cache else q.query.apply_term(q.substitution)

    def shape(self, q) -> CompiledShape:
        """The compiled shape of query ``q`` (compiled on first use, then from memory/disk)."""
        key = self.shape_key(q)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self._load_or_compile(q, key)
            self.shapes[key] = shape
            self.stats["shapes"] += 1
            self.stats["circuit_nodes"] += shape.circuit_nodes
        return shape

    def _load_or_compile(self, q, key: Term) -> CompiledShape:
        skey = str(key)
        if skey in self._disk:
            self.stats["disk_hits"] += 1
            return self._disk[skey]
        for net in self.model.networks.values():
            if net.det:
                raise GediError(f"batched engine: network '{net.name}' is deterministic (nn/3); use --engine exact")
        shape = compile_shape(self.cache.get(q), key)
        self.stats["compile_seconds"] += shape.compile_seconds
        if self.disk_path is not None:
            self._disk[skey] = shape
            self.disk_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.disk_path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(self._disk, f)
            tmp.replace(self.disk_path)
        return shape

    def ground_inputs(self, q) -> list[tuple[str, Term]]:
        """``(network, ground inputs)`` of each neural input pair of ``q``'s shape."""
        return self._query_terms(q)[1]

    def answer_terms(self, q) -> list[Term]:
        """The answers of ``q``'s shape with ``q``'s substitution applied (``Result`` keys)."""
        return self._query_terms(q)[2]

    def _query_terms(self, q) -> tuple[CompiledShape, list[tuple[str, Term]], list[Term]]:
        """``q``'s shape, ground neural inputs and answers (looked up and substituted once
        per query, not once per batch)."""
        key = (self.shape_key(q), tuple(q.substitution.items()))
        out = self._terms.get(key)
        if out is None:
            shape, subst = self.shape(q), q.substitution
            out = (shape, [(net, _substitute(inputs, subst)) for net, inputs in shape.pairs],
                   [_substitute(name, subst) for name in shape.answers])
            self._terms[key] = out
        return out

    def batch_inputs(self, batch: Sequence) -> "OrderedDict[str, list]":
        """For each network, the distinct ground inputs the batch's queries give it (in order)."""
        per_net: OrderedDict[str, dict[Term, None]] = OrderedDict()
        for q in batch:
            for net, ground in self.ground_inputs(q):
                per_net.setdefault(net, {})[ground] = None
        return OrderedDict((n, list(terms)) for n, terms in per_net.items())

    # -- networks
    def network_log_probs(self, per_net: dict[str, list]) -> dict[str, tuple[list, Tensor]]:
        """One call of each network on all its inputs: ``{net: (inputs, log p (N, K))}``."""
        from gedi_nesy.network import GEDINetwork

        out: dict[str, tuple[list, Tensor]] = {}
        for name, inputs in per_net.items():
            net = self.model.networks[name]
            module = net.network_module
            if isinstance(module, GEDINetwork):
                images = []
                for term in inputs:
                    args = self._input_args(term)
                    if len(args) != 1:
                        raise GediError(f"network '{name}' is a GEDI network and takes one image, got inputs {term}")
                    images.append(self.model.get_tensor(args[0]))
                x = torch.stack(images).to(next(module.parameters()).device)
                logp = torch.log_softmax(module.logits(x), dim=-1)
            else:
                probs = net([self._input_args(t) for t in inputs])
                probs = probs if torch.is_tensor(probs) else torch.stack(list(probs))
                logp = torch.log(probs.reshape(len(inputs), -1).clamp_min(1e-45))
            out[name] = (inputs, logp)
        return out

    def _input_args(self, term: Term) -> list[Term]:
        """The arguments of a network's ground input list term (``term2list``, cached)."""
        args = self._args.get(term)
        if args is None:
            args = self._args[term] = term2list(term, False)
        return args

    # -- evaluation
    def log_probs(self, batch: Sequence, outputs: dict[str, tuple[list, Tensor]] | None = None):
        """``(log p (B,), decided)``: the log-probability of each (single-answer) query of
        ``batch`` and a list of flags, True where the query is decided without networks
        (log p is then a constant: 0 for true, -inf for no proof).

        ``outputs``: ``{net: (inputs, log p)}`` already computed for the batch (e.g. by the
        training loop, which also needs the logits); missing networks are run here."""
        ev = self._evaluate_batch(batch, outputs)
        device = ev.circuit_logp.device
        values, decided = [], []
        for q, shape, first in zip(batch, ev.shapes, ev.first):
            if len(shape.answers) != 1:
                raise GediError(f"batched engine: query {q.query} has {len(shape.answers)} answers; "
                                "log_probs takes queries with one answer (use model.solve)")
            const = shape.answer_const[0]
            decided.append(const is not None)
            values.append(torch.tensor(const, device=device) if const is not None else ev.circuit_logp[first])
        return (torch.stack(values) if values else torch.zeros(0)), decided

    def solve(self, batch: Sequence):
        """DeepProbLog's ``Solver.solve``: one ``Result`` per query with every answer and
        its probability (tensors with gradient; floats for answers decided without networks)."""
        t0 = time.time()
        self.flush_gradients()
        self.engine.tensor_store.clear()
        ev = self._evaluate_batch(batch)
        probs = ev.circuit_logp.exp()
        values = probs.unbind()
        eval_time = (time.time() - t0) / max(len(batch), 1)
        results, positions = [], []  # per result: (answer, position) of its answers read off networks
        for q, shape, first in zip(batch, ev.shapes, ev.first):
            answers: dict[Term, Any] = {}
            neural: list[tuple[Term, int]] = []
            for term, const, root in zip(self.answer_terms(q), shape.answer_const, shape.answer_root):
                if const is not None:
                    answers[term] = math.exp(const)
                elif not shape.leaf_pair:  # no network in the shape: a constant, as for ExactEngine
                    answers[term] = float(values[first + root])
                else:
                    answers[term] = values[first + root]
                    neural.append((term, first + root))
            results.append(Result(answers, self.semiring(self.model, q.substitution, None), shape.ground_seconds,
                                  shape.compile_seconds - shape.ground_seconds, eval_time, None))
            positions.append(neural)
        n_neural = sum(len(p) for p in positions)
        if probs.requires_grad and n_neural:
            self._hook_optimizers()
            batch_grad = _BatchGradient(probs, n_neural, self._pending)
            for result, neural in zip(results, positions):
                _RESULT_BATCH[result] = (batch_grad, neural)
        return results

    def flush_gradients(self) -> None:
        """Send the gradients DeepProbLog's loss functions gave the results of solved batches
        to the networks now.  Automatic: when every answer of a batch has its loss, before
        the next ``solve`` and before each step of the networks' optimizers."""
        for pending in list(self._pending):
            pending.flush()

    def _hook_optimizers(self) -> None:
        """Flush pending gradients before each step of the networks' torch optimizers."""
        ref = weakref.ref(self)
        for net in self.model.networks.values():
            opt = net.optimizer
            if opt is not None and opt not in self._hooked:
                opt.register_step_pre_hook(functools.partial(_flush_before_step, ref))
                self._hooked.add(opt)

    def _evaluate_batch(self, batch: Sequence, outputs: dict[str, tuple[list, Tensor]] | None = None) -> _Evaluation:
        """All of the batch's circuit answers in one evaluation (networks run once each)."""
        shapes = [self._query_terms(q)[0] for q in batch]
        needed = self.batch_inputs(batch)
        outputs = dict(outputs or {})
        missing = {n: t for n, t in needed.items() if n not in outputs}
        if missing:
            outputs.update(self.network_log_probs(missing))
        flat, place = _network_table({n: outputs[n] for n in needed})

        groups: OrderedDict[Term, list[int]] = OrderedDict()
        for i, s in enumerate(shapes):
            if s.indices is not None:
                groups.setdefault(s.key, []).append(i)
        live, first, pos = [], [-1] * len(batch), 0
        for members in groups.values():
            shape = shapes[members[0]]
            n_answers = shape.n_circuit_answers
            base = np.empty((len(members), len(shape.pairs)), dtype=np.int64)
            for g, i in enumerate(members):
                first[i] = pos + g * n_answers
                for k, (net, ground) in enumerate(self.ground_inputs(batch[i])):
                    try:
                        base[g, k] = place[net][ground]
                    except KeyError:
                        raise GediError(f"batched engine: no output of network '{net}' for {ground}") from None
            live.append((shape, members, shape.layout(), base))
            pos += len(members) * n_answers
        logp = _evaluate(live, flat) if live else flat.new_zeros(0)
        return _Evaluation(shapes, logp, first)

    def get_hyperparameters(self) -> dict:
        return {"engine": self.engine.get_hyperparameters(), "semiring": "klay-log"}


class _NotAtomic(Exception):
    """A term or substitution :func:`_substitute` leaves to ProbLog's ``apply_term``."""


def _substitute(term: Term, subst: dict) -> Term:
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


def _flush_before_step(solver_ref: "weakref.ref[BatchedSolver]", optimizer, args, kwargs) -> None:
    solver = solver_ref()
    if solver is not None:
        solver.flush_gradients()


def _network_table(outputs: dict[str, tuple[list, Tensor]]) -> tuple[Tensor, dict[str, dict[Term, int]]]:
    """All networks' log-probabilities as one flat vector, and for each network and input
    term the position of its first output in it."""
    tables, place, total = [], {}, 0
    for name, (inputs, logp) in outputs.items():
        width = logp.shape[-1]
        place[name] = {t: total + i * width for i, t in enumerate(inputs)}
        tables.append(logp.reshape(-1))
        total += logp.numel()
    return (torch.cat(tables) if tables else torch.zeros(0)), place


def _evaluate(live: list, flat: Tensor) -> Tensor:
    """All instances of all shapes of a batch as one block-diagonal circuit: one gather for
    the weights, then one layer per depth of the KLay circuits (log semiring) for the whole
    batch.  Returns ``log p`` of every circuit answer (group after group, instance after
    instance)."""
    table, per_group = _weight_table(live, flat)
    x, starts = _input_layer(live, per_group, table)
    x, starts = _circuit_layers(live, x, starts)
    out = []
    for (shape, members, lay, _), start in zip(live, starts):
        roots = x[start : start + len(members) * lay["roots"]].view(len(members), lay["roots"])
        logp = roots[:, :-1] - roots[:, -1:]
        out.append((logp - logp.clamp(min=0.0).detach()).reshape(-1))  # min(log p, 0), gradient kept
    return torch.cat(out)


def _weight_table(live: list, flat: Tensor) -> tuple[Tensor, list[tuple[int, ...]]]:
    """The weights of all instances: ``[log p | log(1-p) (leaves) | log comp | log consts |
    -inf, 0]`` and, per group, ``(instances, first leaf, leaves, first comp, comps, first const)``."""
    leaf_idx, comp_idx, consts, per_group = [], [], [], []
    n_p = n_r = n_c = 0
    for shape, members, lay, base in live:
        g = len(members)
        n_leaf, n_comp = len(lay["leaf_j"]), lay["comp"].shape[0]
        leaf_idx.append((base[:, lay["leaf_pair"]] + lay["leaf_j"]).ravel())
        if n_comp:
            comp = lay["comp"][None] + (n_p + np.arange(g) * n_leaf)[:, None, None]
            comp[:, lay["comp"] < 0] = -1
            comp_idx.append(comp.reshape(g * n_comp, -1))
        consts.extend(lay["consts"])
        per_group.append((g, n_p, n_leaf, n_r, n_comp, n_c))
        n_p, n_r, n_c = n_p + g * n_leaf, n_r + g * n_comp, n_c + len(lay["consts"])
    device = flat.device
    leaf_lp = flat[torch.from_numpy(np.concatenate(leaf_idx)).to(device)]
    feats = [leaf_lp, log1mexp(leaf_lp)]
    if comp_idx:
        width_c = max(c.shape[1] for c in comp_idx)
        comp = np.full((n_r, width_c), n_p, dtype=np.int64)  # pad: the FLOOR entry after the leaves
        row = 0
        for c in comp_idx:
            comp[row : row + len(c), : c.shape[1]] = np.where(c < 0, n_p, c)
            row += len(c)
        padded = torch.cat([leaf_lp, leaf_lp.new_full((1,), FLOOR)])
        feats.append(log1mexp(torch.logsumexp(padded[torch.from_numpy(comp).to(device)], dim=-1)))
    feats.append(torch.tensor(consts + [-math.inf, 0.0], dtype=leaf_lp.dtype, device=device))
    return torch.cat(feats), per_group


def _input_layer(live: list, per_group: list, table: Tensor) -> tuple[Tensor, list[int]]:
    """KLay's input encoding ``[zero, one, pos_1, neg_1, ...]`` of every instance, gathered
    from the weight table; and where each group starts in it."""
    n_p = sum(g * n_leaf for g, _, n_leaf, *_ in per_group)
    n_r = sum(g * n_comp for g, _, _, _, n_comp, _ in per_group)
    n_c = sum(len(lay["consts"]) for _, _, lay, _ in live)
    kind_base0 = np.array([0, n_p, 2 * n_p, 2 * n_p + n_r, 2 * n_p + n_r + n_c])
    inputs, starts, in_base = [], [], 0
    for (shape, members, lay, base), (g, p0, n_leaf, r0, n_comp, c0) in zip(live, per_group):
        kb = kind_base0 + np.array([p0, p0, r0, c0, 0])
        stride = np.array([n_leaf, n_leaf, n_comp, 0, 0])
        k, loc = lay["kind"], lay["local"]
        idx = kb[k][None] + np.arange(g)[:, None] * stride[k][None] + loc[None]
        inputs.append(idx.ravel())
        starts.append(in_base)
        in_base += idx.size
    return table[torch.from_numpy(np.concatenate(inputs)).to(table.device)], starts


def _circuit_layers(live: list, x: Tensor, starts: list[int]) -> tuple[Tensor, list[int]]:
    """The circuit layers of all groups, depth by depth (a shallower shape passes its roots
    through): product layers (sums of logs) and sum layers (log-sum-exp) alternate, as in
    KLay's log semiring.  Returns the roots of all instances and where each group starts."""
    device = x.device
    plans = [(len(members), shape.replicated(len(members)), lay["roots"]) for shape, members, lay, _ in live]
    depth = max(len(plan) for _, plan, _ in plans)
    for level in range(depth):
        ix_parts, end_parts, ix_shift, end_shift, new_starts = [], [], [], [], []
        edge_base = out_base = 0
        for (g, plan, roots), start in zip(plans, starts):
            if level < len(plan):
                ix_rel, ends_rel, n_out = plan[level]
            else:  # shallower shape: pass its roots through
                ix_rel = np.arange(g * roots)
                ends_rel, n_out = ix_rel + 1, g * roots
            ix_parts.append(ix_rel)
            end_parts.append(ends_rel)
            ix_shift.append(start)
            end_shift.append(edge_base)
            new_starts.append(out_base)
            edge_base += len(ix_rel)
            out_base += n_out
        ix = np.concatenate(ix_parts) + np.repeat(ix_shift, [len(a) for a in ix_parts])
        ends = np.concatenate(end_parts) + np.repeat(end_shift, [len(a) for a in end_parts])
        offsets = torch.from_numpy(np.concatenate([[0], ends])).to(device)
        inputs = x[torch.from_numpy(ix).to(device)]
        x = _segment_sum(inputs, offsets) if level % 2 == 0 else _segment_logsumexp(inputs, offsets)
        starts = new_starts
    return x, starts


def _segment_sum(x: Tensor, offsets: Tensor) -> Tensor:
    """Sum of each segment ``x[offsets[i]:offsets[i+1]]`` (a product in log space)."""
    return torch.segment_reduce(x, "sum", offsets=offsets, axis=0, unsafe=True)


def _segment_logsumexp(x: Tensor, offsets: Tensor) -> Tensor:
    """Log-sum-exp of each segment, stable (KLay's LogSumLayer: an all ``-inf`` segment
    gives ``-inf``, no nan)."""
    top = torch.segment_reduce(x.detach(), "amax", offsets=offsets, axis=0, unsafe=True)
    seg = torch.repeat_interleave(torch.arange(len(top), device=x.device), offsets.diff())
    shifted = (x - top[seg]).nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
    return _segment_sum(shifted.exp(), offsets).log() + top


# ----------------------------------------------------------------------------- engines
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


class _ProgramFirst:
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


class GediExactEngine(_ProgramFirst, ExactEngine):
    """DeepProbLog's ``ExactEngine``, except that the program's own predicates win over
    DeepProbLog's tensor builtins of the same name/arity."""

    def get_hyperparameters(self) -> dict:
        return {"type": "ExactEngine"}


class BatchedEngine(_ProgramFirst, ExactEngine):
    """A DeepProbLog engine: ``model.set_engine(BatchedEngine(model), cache=True)``.

    Grounding and SDDs are ``ExactEngine``'s; ``Model.set_engine`` builds DeepProbLog's plain
    ``Solver`` and then registers the tensor builtins with the engine: on that first
    registration the engine replaces the model's solver by a :class:`BatchedSolver` with the
    same settings.  ``disk_cache``: folder keeping compiled query shapes across runs."""

    def __init__(self, model, disk_cache: str | Path | None = None) -> None:
        super().__init__(model)
        self.disk_cache = disk_cache

    def register_foreign(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
        self._install()
        super().register_foreign(func, function_name, arity_in, arity_out)

    def register_foreign_nondet(self, func, function_name: str, arity_in: int, arity_out: int) -> None:
        self._install()
        super().register_foreign_nondet(func, function_name, arity_in, arity_out)

    def _install(self) -> None:
        """Replace the model's plain DeepProbLog solver of this engine by a batched one."""
        solver = self.model.solver
        if solver is not None and solver.engine is self and not isinstance(solver, BatchedSolver):
            self.model.solver = BatchedSolver.replacing(solver, disk_cache=self.disk_cache)

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
    with contextlib.redirect_stdout(io.StringIO()):  # DeepProbLog prints "Caching ACs"
        model.set_engine(eng, cache=cache, cache_root=cache_root)
    return model.solver


def is_batched(model) -> bool:
    """True when ``model`` evaluates its queries with the batched engine."""
    return isinstance(getattr(model, "solver", None), BatchedSolver)
