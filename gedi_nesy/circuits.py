"""Knowledge compilation for the batched engine: one query shape -> one KLay circuit in log space.

Each distinct (abstract) query shape is ground and compiled to an SDD by DeepProbLog and ProbLog
once; :func:`compile_shape` reads the weights ProbLog gives the SDD's variables (with a symbolic
semiring, so annotated disjunctions follow ProbLog) and turns ``answer AND constraints`` and
``constraints`` into one KLay circuit (``log p(answer) = logWMC(answer AND C) - logWMC(C)``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from problog.logic import Term
from torch import Tensor

from gedi_core.errors import GediError
from gedi_nesy.symbolic_weights import SymbolicSemiring, Unbatchable, mentions_network_tensor

# log-weight used for "impossible" (a complement 1 - sum p that is <= 0 in floating point):
# finite, so that no -inf - (-inf) = nan reaches the gradients; exp(FLOOR) == 0.
FLOOR = -1.0e30
# DeepProbLog's cross-entropy eps (GraphSemiring.cross_entropy): log1mexp's smallest 1 - p.
EPS = 1e-12
_LN2 = math.log(2.0)
SHAPES_FORMAT = 5  # version of the pickled CompiledShape (disk cache file name; 4: fallback, evidence; 5: plans)

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

    plan = None  # an ArithmeticPlan (gedi_nesy.arithmetic_plan) evaluated in place of a circuit

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
        self.fallback: str | None = None  # why the KLay path does not take the shape, if so
        self.per_solve = False  # (fallback) ground again at each solve: see Unbatchable
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


def compile_shape(ac, key: Term, answers: list[Term] | None = None, with_ac_seconds: bool = True) -> CompiledShape:
    """A :class:`CompiledShape` from DeepProbLog's ``ArithmeticCircuit`` of one query shape
    (conditioned on the formula's evidence).  Raises :class:`Unbatchable` for a shape the
    KLay path does not evaluate.

    ``answers``: the answer atoms to compile, each one of the circuit's queries (default: all
    of them), e.g. one label's answer out of a circuit ground for every label;
    ``with_ac_seconds``: count the circuit's grounding and SDD time in the shape's."""
    t0 = time.time()
    shape = CompiledShape(key)
    sdd = ac.sdd
    evidence = _evidence_literals(sdd, key)
    queries = list(sdd.queries())
    if answers is not None:
        by_name = dict(queries)
        queries = [(a, by_name[a]) for a in answers]
    live = []
    for name, node in queries:
        if mentions_network_tensor(name):
            raise Unbatchable("a deterministic network's output in the answer", per_solve=True)
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
        _build_circuit(shape, sdd, live, evidence)
    shape.ground_seconds = (ac.ground_time or 0.0) if with_ac_seconds else 0.0
    ac_seconds = shape.ground_seconds + ac.compile_time if with_ac_seconds else 0.0
    shape.compile_seconds = ac_seconds + time.time() - t0
    return shape


def _evidence_literals(sdd, key: Term) -> list[int]:
    """The formula's evidence as signed node ids (ProbLog's ``evidence_all``), less evidence
    that holds for sure; evidence that cannot hold raises a :class:`GediError`."""
    literals = []
    for name, node, value in sdd.evidence_all():
        if value == 0:
            continue
        if node == sdd.TRUE or node is None or node == sdd.FALSE:
            holds = (node == sdd.TRUE) == (value > 0)
            if not holds:
                raise GediError(f"batched engine: query {key}: evidence {name} cannot hold (inconsistent evidence)")
            continue
        literals.append(value * node)
    return literals


def _read_weights(shape: CompiledShape, sdd, key: Term) -> None:
    """Fill ``shape``'s leaves, complements, constants and weight columns from ProbLog's
    weights of the SDD's variables (read with :class:`SymbolicSemiring`)."""
    weights = sdd.extract_weights(SymbolicSemiring())
    if 0 in weights and weights[0][0] != ("c", 1.0):
        raise Unbatchable("a weight on 'true'")
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
        raise Unbatchable(f"weight {e}")

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


def _build_circuit(shape: CompiledShape, sdd, nodes: list, evidence: list[int]) -> None:
    """KLay circuit with roots ``WMC(answer AND constraints AND evidence)`` per answer, then
    ``WMC(constraints AND evidence)``: ProbLog's evaluation (``SDDEvaluator.evaluate_custom``)."""
    from gedi_nesy.adapters import klay_indices

    manager = sdd.get_manager()
    constraint = sdd.get_constraint_inode()
    if evidence:
        constraint = manager.conjoin(constraint, *[sdd.get_inode(lit) for lit in evidence])
    numerators = [manager.conjoin(sdd.get_inode(node), constraint) for node in nodes]
    shape.indices = klay_indices(numerators + [constraint])
    for numerator in numerators:
        manager.deref(numerator)
    roots = len(shape.indices[1][-1]) - 1 if shape.indices[1] else 0
    if roots != len(nodes) + 1:
        raise GediError(f"batched engine: query {shape.key}: circuit has {roots} roots, expected {len(nodes) + 1}")
    shape.circuit_nodes = int(sum(len(ix) for ix in shape.indices[0]))
