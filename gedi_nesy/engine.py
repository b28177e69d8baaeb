"""Batched exact inference for DeepProbLog programs: one tensorised circuit per query shape.

DeepProbLog's ``ExactEngine`` evaluates every query on its own: the networks are called per
query and the query's SDD is walked in Python with a scalar autograd graph.  The
:class:`BatchedSolver` here keeps DeepProbLog's grounding and knowledge compilation (the
same ``ExactEngine.prepare``/``ground`` and ProbLog's SDD, cached per query shape by
DeepProbLog's own ``Cache``) and changes only the evaluation:

1. each distinct (abstract) query shape is compiled once: its SDD (``query AND constraints``
   and the constraints alone, i.e. ProbLog's numerator and normaliser) goes into a KLay
   circuit (``klaycircuits``), evaluated in the log semiring; the weights of the SDD's
   variables are read off ProbLog's own weight extraction with a symbolic semiring, so
   annotated disjunctions (``ad_negate``, the extra "none" choice) follow ProbLog exactly;
2. per batch, every network is called once on all the distinct inputs of the batch; its
   log-probabilities are gathered into the variables' weights of every query, and all the
   batch's queries (of all shapes) are evaluated as one block-diagonal circuit: one gather
   for the inputs, then one KLay layer (log semiring) per depth for the whole batch.

``log p(q) = logWMC(q AND C) - logWMC(C)``; :meth:`BatchedSolver.solve` returns DeepProbLog
``Result`` objects with ``p(q)`` so that ``model.solve`` and DeepProbLog's own training loop
work unchanged.  Select it with :func:`set_engine` (``engine="batched"``) or
``gedi-nesy train --engine batched`` (the default); ``engine="exact"`` keeps DeepProbLog's.

Supported: ``nn(Net, Inputs, Output, Domain)`` neural annotated disjunctions (any number of
networks, an input used several times), constant probabilistic facts and annotated
disjunctions.  Learnable ``t(_)`` parameters, ``nn/3`` deterministic networks and top-k
networks raise an error naming ``--engine exact``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import pickle
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from problog.evaluator import Semiring as ProbLogSemiring
from problog.logic import Constant, Term, term2list
from torch import Tensor

from gedi_core.errors import GediError

ENGINES = ("batched", "exact")
# log-weight used for "impossible" (a complement 1 - sum p that is <= 0 in floating point):
# finite, so that no -inf - (-inf) = nan reaches the gradients; exp(FLOOR) == 0.
FLOOR = -1.0e30
# DeepProbLog's cross-entropy eps (GraphSemiring.cross_entropy): log1mexp's smallest 1 - p.
EPS = 1e-12
_LN2 = math.log(2.0)


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
    """One query shape (abstract query term): circuit, variables' weights, neural inputs.

    ``pairs``: the distinct (network, abstract inputs) the shape reads; ``leaf_pair`` /
    ``leaf_j``: for each neural leaf, its pair and output index.  The weight feature table
    of one query is ``[log p (leaves) | log(1-p) (leaves) | log comp (AD complements) |
    log consts]``; ``pos_cols``/``neg_cols`` pick each variable's weights from it."""

    def __init__(self) -> None:
        self.key: Term | None = None
        self.name: Term | None = None  # the query term as ProbLog names it (unsubstituted)
        self.constant: float | None = None  # log p when the query is decided without networks
        self.pairs: list[tuple[str, Term]] = []
        self.leaf_pair: list[int] = []
        self.leaf_j: list[int] = []
        self.comp: list[list[int]] = []  # leaves of each complement
        self.consts: list[float] = []
        self.pos_cols: list[int] = []
        self.neg_cols: list[int] = []
        self.indices: Any = None  # KLay circuit indices (picklable)
        self.n_vars = 0
        self.compile_seconds = 0.0
        self.circuit_nodes = 0
        self._tensors: dict[str, Any] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tensors"] = {}
        return state

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
                         "leaf_j": np.asarray(self.leaf_j, dtype=np.int64), "layers": layers, "roots": width}
        return self._tensors


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


_log1mexp = log1mexp  # old private name, still imported by gedi_nesy.training


def compile_shape(ac, key: Term) -> CompiledShape:
    """A :class:`CompiledShape` from DeepProbLog's ``ArithmeticCircuit`` of one query shape."""
    import klay

    t0 = time.time()
    shape = CompiledShape()
    shape.key = key
    sdd = ac.sdd
    queries = list(sdd.queries())
    if len(queries) != 1:
        raise GediError(f"batched engine: query {key} grounds to {len(queries)} query atoms (expected 1)")
    name, node = queries[0]
    shape.name = name
    if list(sdd.evidence()):
        raise GediError(f"batched engine: query {key}: evidence is not supported (use --engine exact)")
    if node is None or node == sdd.FALSE:
        shape.constant = -math.inf
    elif node == sdd.TRUE:
        shape.constant = 0.0
    if shape.constant is not None:
        shape.compile_seconds = (ac.ground_time or 0.0) + ac.compile_time + time.time() - t0
        return shape

    weights = sdd.extract_weights(SymbolicSemiring())
    if 0 in weights and weights[0][0] != ("c", 1.0):
        raise GediError(f"batched engine: query {key}: a weight on 'true' is not supported (use --engine exact)")
    manager = sdd.get_manager()
    n_vars = manager.get_manager().var_count()
    var_w: dict[int, tuple] = {}
    for atom, w in weights.items():
        var = sdd.atom2var.get(atom)
        if var is not None:
            var_w[var] = w

    pair_index: dict[tuple[str, Term], int] = {}
    leaf_index: dict[tuple[int, int], int] = {}
    const_index: dict[float, int] = {}
    comp_index: dict[tuple, int] = {}
    cols: list[tuple[str, int]] = []  # per weight: (kind, index) resolved to columns at the end

    def leaf(e) -> int:
        _, net, inputs, j = e
        p = pair_index.setdefault((net, inputs), len(pair_index))
        if (p, j) not in leaf_index:
            leaf_index[(p, j)] = len(leaf_index)
        return leaf_index[(p, j)]

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

    for var in range(1, n_vars + 1):
        pos, neg = var_w.get(var, (("c", 1.0), ("c", 1.0)))
        cols.append(ref(pos))
        cols.append(ref(neg))

    shape.pairs = [pair for pair, _ in sorted(pair_index.items(), key=lambda kv: kv[1])]
    leaves = sorted(leaf_index.items(), key=lambda kv: kv[1])
    shape.leaf_pair = [p for (p, _), _ in leaves]
    shape.leaf_j = [j for (_, j), _ in leaves]
    shape.comp = [list(c) for c, _ in sorted(comp_index.items(), key=lambda kv: kv[1])]
    shape.consts = [c for c, _ in sorted(const_index.items(), key=lambda kv: kv[1])]
    n_leaf, n_comp = len(leaves), len(shape.comp)
    offset = {"p": 0, "q": n_leaf, "r": 2 * n_leaf, "c": 2 * n_leaf + n_comp}
    flat = [offset[k] + i for k, i in cols]
    shape.pos_cols, shape.neg_cols = flat[0::2], flat[1::2]
    shape.n_vars = n_vars

    # ProbLog's evaluation (SDDEvaluator.evaluate_custom): WMC(query AND constraints) / WMC(constraints)
    constraint = sdd.get_constraint_inode()
    numerator = manager.conjoin(sdd.get_inode(node), constraint)
    circuit = klay.Circuit()
    circuit.add_sdd(numerator)
    circuit.add_sdd(constraint)
    shape.indices = circuit._get_indices()
    shape.circuit_nodes = int(sum(len(ix) for ix in shape.indices[0]))
    manager.deref(numerator)
    shape.compile_seconds = (ac.ground_time or 0.0) + ac.compile_time + time.time() - t0
    return shape


# ----------------------------------------------------------------------------- solver
def _solver_base():
    from deepproblog.solver import Solver

    return Solver


class BatchedSolver(_solver_base()):
    """A DeepProbLog ``Solver`` that evaluates a whole batch of queries with tensorised
    circuits (see the module docstring).  ``disk_cache``: folder where compiled shapes are
    kept across runs (keyed by the program text)."""

    def __init__(self, model, engine, cache: bool = True, cache_root: str | None = None,
                 disk_cache: str | Path | None = None, **kwargs) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # DeepProbLog prints "Caching ACs"
            super().__init__(model, engine, cache=cache, cache_root=cache_root, **kwargs)
        for name, net in model.networks.items():
            if net.k is not None:
                raise GediError(f"batched engine: network '{name}' has k={net.k} (top-k); use --engine exact")
        self.shapes: dict[Term, CompiledShape] = {}
        self._ids: dict[Term, int] = {}  # ground input term -> id
        self._list_ids: dict[int, list[int]] = {}
        self._list_refs: list = []
        self.stats = {"shapes": 0, "compile_seconds": 0.0, "disk_hits": 0, "circuit_nodes": 0}  # circuit_nodes: KLay edges
        self.disk_path: Path | None = None
        self._disk: dict[str, CompiledShape] = {}
        if disk_cache is not None:
            text = "\n".join(str(c) for c in model.program)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            self.disk_path = Path(disk_cache) / f"shapes-{digest}.pkl"
            if self.disk_path.is_file():
                with open(self.disk_path, "rb") as f:
                    self._disk = pickle.load(f)

    # -- compilation
    def shape(self, q) -> CompiledShape:
        key = q.query
        cached = q.__dict__.get("_gedi_shape")
        if cached is not None and cached[0] is key and cached[2] is self:
            return cached[1]
        shape = self.shapes.get(key)
        if shape is not None:
            q._gedi_shape = (key, shape, self)
            return shape
        skey = str(key)
        if skey in self._disk:
            shape = self._disk[skey]
            self.stats["disk_hits"] += 1
        else:
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
        self.shapes[key] = shape
        q._gedi_shape = (key, shape, self)
        self.stats["shapes"] += 1
        self.stats["circuit_nodes"] += shape.circuit_nodes
        return shape

    def ground_inputs(self, q) -> list[tuple[str, Term, int]]:
        """``(network, ground inputs, id)`` of each neural input pair of ``q``'s shape; cached
        on the query (the substitution is applied once per query, not once per batch)."""
        shape = self.shape(q)
        cached = getattr(q, "_gedi_inputs", None)
        if cached is not None and cached[0] is shape:
            return cached[1]
        out = []
        for net, inputs in shape.pairs:
            ground = inputs.apply_term(q.substitution)
            out.append((net, ground, self._ids.setdefault(ground, len(self._ids))))
        q._gedi_inputs = (shape, out)
        return out

    def batch_inputs(self, batch: Sequence) -> "OrderedDict[str, list]":
        """For each network, the distinct ground inputs the batch's queries give it (in order)."""
        per_net: OrderedDict[str, dict] = OrderedDict()
        for q in batch:
            for net, ground, tid in self.ground_inputs(q):
                per_net.setdefault(net, {}).setdefault(tid, ground)
        out = OrderedDict((n, list(d.values())) for n, d in per_net.items())
        self._list_ids = {id(terms): list(per_net[n]) for n, terms in out.items()}  # ids of these lists' terms
        self._list_refs = list(out.values())  # keep the lists alive while their ids are used
        return out

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
                    args = term2list(term, False)
                    if len(args) != 1:
                        raise GediError(f"network '{name}' is a GEDI network and takes one image, got inputs {term}")
                    images.append(self.model.get_tensor(args[0]))
                x = torch.stack(images).to(next(module.parameters()).device)
                logp = torch.log_softmax(module.logits(x), dim=-1)
            else:
                probs = net([term2list(t, False) for t in inputs])
                probs = torch.stack(list(probs)) if not torch.is_tensor(probs) else probs
                logp = torch.log(probs.clamp_min(1e-45))
            out[name] = (inputs, logp)
        return out

    # -- evaluation
    def log_probs(self, batch: Sequence, outputs: dict[str, tuple[list, Tensor]] | None = None):
        """``(log p (B,), decided)``: the log-probability of each query of ``batch`` and a
        list of flags, True where the query is decided without networks (log p is then a
        constant: 0 for true, -inf for no proof).

        ``outputs``: ``{net: (inputs, log p)}`` already computed for the batch (e.g. by the
        training loop, which also needs the logits); missing networks are run here."""
        shapes = [self.shape(q) for q in batch]
        needed = self.batch_inputs(batch)
        outputs = dict(outputs or {})
        missing = {n: t for n, t in needed.items() if n not in outputs}
        if missing:
            outputs.update(self.network_log_probs(missing))
        # one flat table of all networks' log-probabilities
        tables, row_of, offset, width = [], {}, {}, {}
        total = 0
        for name, (inputs, logp) in outputs.items():
            if name not in needed:
                continue
            ids = self._list_ids.get(id(inputs))
            if ids is None or len(ids) != len(inputs):
                ids = [self._ids.setdefault(t, len(self._ids)) for t in inputs]
            rows = {tid: i for i, tid in enumerate(ids)}
            row_of[name], offset[name], width[name] = rows, total, logp.shape[-1]
            tables.append(logp.reshape(-1))
            total += logp.numel()
        device = tables[0].device if tables else torch.device("cpu")
        flat = torch.cat(tables) if tables else torch.zeros(0)

        groups: OrderedDict[int, list[int]] = OrderedDict()
        for i, s in enumerate(shapes):
            groups.setdefault(id(s), []).append(i)
        result: list[Any] = [None] * len(batch)
        decided = [False] * len(batch)
        live = []  # (shape, members, layout, base rows)
        for members in groups.values():
            shape = shapes[members[0]]
            if shape.constant is not None:
                for i in members:
                    result[i] = torch.tensor(shape.constant, device=device)
                    decided[i] = True
                continue
            base = np.empty((len(members), len(shape.pairs)), dtype=np.int64)
            for g, i in enumerate(members):
                for k, (net, ground, tid) in enumerate(self.ground_inputs(batch[i])):
                    try:
                        base[g, k] = offset[net] + row_of[net][tid] * width[net]
                    except KeyError:
                        raise GediError(f"batched engine: no output of network '{net}' for {ground}") from None
            live.append((shape, members, shape.layout(), base))
        if live:
            lp = self._evaluate(live, flat)
            pos = 0
            for shape, members, lay, _ in live:
                for i in members:
                    result[i] = lp[pos]
                    pos += 1
        return torch.stack(result) if result else torch.zeros(0), decided

    @staticmethod
    def _evaluate(live: list, flat: Tensor) -> Tensor:
        """All instances of all shapes of a batch as one block-diagonal circuit: one gather for
        the weights, then one KLay layer per depth (log semiring) for the whole batch."""
        from klay.torch.layers import LogSumLayer, SumLayer

        leaf_idx, comp_idx, consts = [], [], []
        n_p = n_r = n_c = 0
        per_group = []
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
        table = torch.cat(feats)
        kind_base0 = np.array([0, n_p, 2 * n_p, 2 * n_p + n_r, 2 * n_p + n_r + n_c])

        # the input layer: KLay's encoding [zero, one, pos_1, neg_1, ...] per instance
        inputs, starts, depth = [], [], 0
        in_base = 0
        for (shape, members, lay, base), (g, p0, n_leaf, r0, n_comp, c0) in zip(live, per_group):
            kb = kind_base0 + np.array([p0, p0, r0, c0, 0])
            stride = np.array([n_leaf, n_leaf, n_comp, 0, 0])
            k, loc = lay["kind"], lay["local"]
            idx = kb[k][None] + np.arange(g)[:, None] * stride[k][None] + loc[None]
            inputs.append(idx.ravel())
            starts.append(in_base)
            in_base += idx.size
            depth = max(depth, len(lay["layers"]))
        x = table[torch.from_numpy(np.concatenate(inputs)).to(device)]

        for level in range(depth):
            ix_parts, off_parts, new_starts = [], [], []
            edge_base = out_base = 0
            for (shape, members, lay, base), start in zip(live, starts):
                g = len(members)
                if level < len(lay["layers"]):
                    ix_in, ends, w_in, n_edges, n_out = lay["layers"][level]
                else:  # shallower shape: pass its roots through
                    r = lay["roots"]
                    ix_in, ends, w_in, n_edges, n_out = np.arange(r), np.arange(1, r + 1), r, r, r
                ix_parts.append((ix_in[None] + start + np.arange(g)[:, None] * w_in).ravel())
                off_parts.append((ends[None] + edge_base + np.arange(g)[:, None] * n_edges).ravel())
                new_starts.append(out_base)
                edge_base += g * n_edges
                out_base += g * n_out
            ix = torch.from_numpy(np.concatenate(ix_parts)).to(device)
            offsets = np.concatenate([[0]] + off_parts)
            ix_out = torch.from_numpy(np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))).to(device)
            layer = (SumLayer if level % 2 == 0 else LogSumLayer)(ix, torch.from_numpy(offsets).to(device), ix_out, 0)
            x = layer(x)
            starts = new_starts
        # roots per instance: (numerator, normaliser)
        out = x.view(-1, 2)
        logp = out[:, 0] - out[:, 1]
        return logp - logp.clamp(min=0.0).detach()  # min(log p, 0), gradient kept

    def solve(self, batch: Sequence):
        """DeepProbLog's ``Solver.solve``: one ``Result`` per query, ``{query: p}``."""
        from deepproblog.semiring import Result
        from deepproblog.semiring.graph_semiring import GraphSemiring

        self.engine.tensor_store.clear()
        logp, decided = self.log_probs(batch)
        results = []
        for i, q in enumerate(batch):
            shape = self.shape(q)
            name = shape.name.apply_term(q.substitution)
            p = float(math.exp(float(logp[i]))) if decided[i] else torch.exp(logp[i])
            semiring = GraphSemiring(self.model, q.substitution, None)
            results.append(Result({name: p}, semiring, None, shape.compile_seconds, None, None))
        return results

    def get_hyperparameters(self) -> dict:
        return {"engine": {"type": "BatchedEngine"}, "semiring": "klay-log"}


def _exact_engine_cls():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ApproximateEngine is not available")
        from deepproblog.engines import ExactEngine
    return ExactEngine


class BatchedEngine(_exact_engine_cls()):
    """DeepProbLog's ``ExactEngine`` (same grounding, same SDDs) for a :class:`BatchedSolver`."""

    def get_hyperparameters(self) -> dict:
        return {"type": "BatchedEngine"}


def set_engine(model, engine: str = "batched", cache: bool = True, cache_root: str | None = None,
               disk_cache: str | Path | None = None):
    """Give ``model`` (a DeepProbLog ``Model``) its solver: ``batched`` (this module) or
    ``exact`` (DeepProbLog's ``ExactEngine`` and ``Solver``).  Returns the solver."""
    from deepproblog.engines.builtins import register_tensor_predicates

    if engine not in ENGINES:
        raise GediError(f"engine: unknown engine '{engine}' (known: {', '.join(ENGINES)})")
    if engine == "exact":
        with contextlib.redirect_stdout(io.StringIO()):
            model.set_engine(_exact_engine_cls()(model), cache=cache, cache_root=cache_root)
        return model.solver
    eng = BatchedEngine(model)
    model.solver = BatchedSolver(model, eng, cache=cache, cache_root=cache_root, disk_cache=disk_cache)
    register_tensor_predicates(eng)
    return model.solver


def is_batched(model) -> bool:
    return isinstance(getattr(model, "solver", None), BatchedSolver)
