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
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from problog.formula import LogicFormula
from problog.logic import Clause, Constant, Term, Var, term2list
from torch import Tensor

from gedi_core.errors import GediError
from gedi_nesy.circuit_batch import evaluate_batch, network_table
from gedi_nesy.circuits import PARAMETERS, SHAPES_FORMAT, CompiledShape, Unbatchable, compile_shape
from gedi_nesy.semiring import BatchedGraphSemiring, BatchGradient
from gedi_nesy.shared_labels import free_label_query, order_sensitive, time_bound

from gedi_nesy.config import ENGINES
from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()
from deepproblog.engines import ExactEngine  # noqa: E402
from deepproblog.arithmetic_circuit import ArithmeticCircuit  # noqa: E402
from deepproblog.semiring import Result  # noqa: E402
from deepproblog.semiring.graph_semiring import GraphSemiring  # noqa: E402
from deepproblog.solver import Solver  # noqa: E402

# ----------------------------------------------------------------------------- solver
@dataclass
class _Evaluation:
    """One batch evaluated: every circuit answer's ``log p`` and where each query's answers are."""

    shapes: list[CompiledShape]
    circuit_logp: Tensor  # log p of the batch's circuit answers, query after query
    first: list[int]  # per query: index of its first circuit answer in circuit_logp
    fallback: dict[int, Result]  # queries evaluated by DeepProbLog's Solver: their Results


class BatchedSolver(Solver):
    """A DeepProbLog ``Solver`` that evaluates a whole batch of queries with tensorised
    circuits (see the README's "Batched engine").  ``disk_cache``: folder where compiled
    shapes are kept across runs (keyed by the program text).

    A query whose circuit the KLay path does not take (tensor-valued probabilities, outputs of
    deterministic nn/3 networks, a model with top-k networks) is evaluated as DeepProbLog's
    ``Solver`` evaluates it, in the same batch; the program's ``evidence/1,2`` conditions
    every query (DeepProbLog's ``ExactEngine`` grounds the query alone and drops it)."""

    # bounds on grounding a query with its labels free (gedi_nesy.shared_labels), and the most
    # answers whose shapes are all compiled at once
    max_label_answers = 20000
    max_label_seconds = 300.0
    max_eager_answers = 256

    def __init__(self, model, engine, cache: bool = True, cache_root: str | None = None,
                 disk_cache: str | Path | None = None, semiring: type = GraphSemiring,
                 shared_labels: bool = True, **kwargs) -> None:
        if semiring is GraphSemiring:
            semiring = BatchedGraphSemiring
        with contextlib.redirect_stdout(io.StringIO()):  # DeepProbLog prints "Caching ACs"
            super().__init__(model, engine, semiring=semiring, cache=cache, cache_root=cache_root, **kwargs)
        db = self.program
        ground_engine = engine.engine
        self.evidence = ground_engine.query(db, Term("evidence", None, None)) + ground_engine.query(
            db, Term("evidence", None))
        self.shapes: dict[Term, CompiledShape] = {}
        # shared_labels: one ground circuit per query structure for all its labels (with the
        # cache on, and for programs where freeing the label cannot change a probability)
        self.shared_labels = shared_labels and self.cache.cache and not order_sensitive(model.program)
        self._joint: dict[Term, Any] = {}  # free query -> its circuit (None: labels one by one)
        self._joint_left: dict[Term, int] = {}  # free query -> its answers not compiled yet
        self._ready: dict[Term, CompiledShape] = {}  # labels' shapes compiled with their structure
        self._store_epoch = 0  # solves so far (each clears DeepProbLog's tensor store)
        self._fresh: dict[Term, tuple[int, ArithmeticCircuit]] = {}  # per_solve circuits, their epoch
        self._terms: dict[tuple, tuple] = {}  # query -> its shape, ground neural inputs and answers
        self._args: dict[Term, list[Term]] = {}  # ground input term -> its arguments (term2list)
        # circuit_nodes: KLay edges of the compiled shapes
        # fallback_shapes: shapes evaluated as DeepProbLog's Solver does; joint_circuits: query
        # structures ground once for all their labels
        self.stats = {"shapes": 0, "compile_seconds": 0.0, "disk_hits": 0, "circuit_nodes": 0, "fallback_shapes": 0,
                      "joint_circuits": 0}
        self._pending: list[BatchGradient] = []  # solved batches whose loss gradients wait
        self._hooked: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        self.disk_path: Path | None = None
        self._disk: dict[str, CompiledShape] = {}
        if disk_cache is not None:
            text = "\n".join(str(c) for c in model.program)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            self.disk_path = Path(disk_cache) / f"shapes-v{SHAPES_FORMAT}-{digest}.pkl"
            if self.disk_path.is_file():
                with open(self.disk_path, "rb") as f:
                    self._disk = pickle.load(f)

    @classmethod
    def replacing(cls, solver, disk_cache: str | Path | None = None, shared_labels: bool = True) -> "BatchedSolver":
        """A batched solver with the settings of DeepProbLog's ``solver`` (cache, cache root,
        semiring, SDD garbage collection), for the same model and engine."""
        cache = solver.cache
        return cls(solver.model, solver.engine, cache=cache.cache,
                   cache_root=str(cache.cache_root) if cache.cache_file else None,
                   disk_cache=disk_cache, semiring=solver.semiring, sdd_auto_gc=solver.sdd_auto_gc,
                   shared_labels=shared_labels)

    # -- compilation
    def build_ac(self, q) -> ArithmeticCircuit:
        """DeepProbLog's ``Solver.build_ac``, with the program's evidence ground beside the
        query (so that the circuit is conditioned on it, as ProbLog's inference is)."""
        if not self.evidence:
            return super().build_ac(q)
        start = time.time()
        ground = self.engine.ground(q, label=LogicFormula.LABEL_QUERY)
        self.engine.engine.ground_evidence(self.program, ground, self.evidence)
        return ArithmeticCircuit(ground, self.semiring, ground_time=time.time() - start, sdd_auto_gc=self.sdd_auto_gc)

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
            self.stats["fallback_shapes"] += shape.fallback is not None
        return shape

    def _load_or_compile(self, q, key: Term) -> CompiledShape:
        skey = str(key)
        try:
            top_k = [name for name, net in self.model.networks.items() if net.k is not None]
            if top_k:  # grounding samples (train) or picks (eval) the network's k best outputs
                raise Unbatchable(f"the model's top-k network '{top_k[0]}' (its circuits change with its outputs)")
            if skey in self._disk:
                self.stats["disk_hits"] += 1
                return self._disk[skey]
            shape = self._compile_from_joint(q, key)
            if shape is None:
                shape = compile_shape(self.cache.get(q), key)
                self._release(q)
        except Unbatchable as e:
            shape = CompiledShape(key)
            shape.fallback, shape.per_solve = str(e), e.per_solve
            if e.per_solve:  # the circuit just ground names this solve's tensors
                self._fresh[key] = (self._store_epoch, self.cache.get(q))
            return shape
        self.stats["compile_seconds"] += shape.compile_seconds
        if self.disk_path is not None:
            self._disk[skey] = shape
            self.disk_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.disk_path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(self._disk, f)
            tmp.replace(self.disk_path)
        return shape

    def _compile_from_joint(self, q, key: Term) -> CompiledShape | None:
        """``q``'s shape read off the circuit of its query structure (``q`` with its labels
        free, ground once for all labels; see ``gedi_nesy.shared_labels``), or None where the
        labels are compiled one by one (no such structure, ``q``'s answer is not one of the
        structure's answers, or DeepProbLog's cache holds ``q``'s own circuit).

        A structure with at most ``max_eager_answers`` answers has every label's shape compiled
        at once and its circuit released; a larger one keeps its circuit until every label of
        it has been asked for."""
        if not self.shared_labels or self.cache.key_func(q) in self.cache.cache_dict:
            return None  # (DeepProbLog's circuit of this label is there already: read it)
        ready = self._ready.pop(key, None)
        if ready is not None:
            return ready
        free = free_label_query(q)
        if free is None:
            return None
        fkey = free.query
        first = fkey not in self._joint
        if first:
            self._joint[fkey] = self._ground_joint(free)
        ac = self._joint[fkey]
        if ac is None or key not in ac.answer_index:
            return None
        if first and len(ac.answer_index) <= self.max_eager_answers:
            return self._compile_all_answers(fkey, ac, key)
        try:
            return compile_shape(ac, key, answers=[key], with_ac_seconds=first)
        finally:
            self._joint_left[fkey] -= 1
            if self._joint_left[fkey] == 0:  # every label compiled: the joint circuit is not needed
                self._joint[fkey] = None

    def _compile_all_answers(self, fkey: Term, ac: ArithmeticCircuit, key: Term) -> CompiledShape:
        """Every answer's shape of the structure ``fkey`` (kept until asked for), its circuit
        released; returns ``key``'s, which carries the compile time of them all."""
        self._joint[fkey] = None
        shapes = {}
        for name in ac.answer_index:
            try:
                shapes[name] = compile_shape(ac, name, answers=[name], with_ac_seconds=name == key)
            except Unbatchable:  # compiled on its own when asked for (and evaluated as DeepProbLog does)
                if name == key:
                    raise
        shape = shapes.pop(key)
        shape.compile_seconds += sum(s.compile_seconds for s in shapes.values())
        for s in shapes.values():
            s.ground_seconds = s.compile_seconds = 0.0
        self._ready.update(shapes)
        return shape

    def _ground_joint(self, free) -> ArithmeticCircuit | None:
        """The circuit of query ``free`` (labels free) with every answer, or None when its
        grounding fails, has too many answers or takes too long."""
        try:
            with time_bound(self.max_label_seconds):
                ac = self.build_ac(free)
        except Exception:  # noqa: BLE001 (an instantiation error, a timeout: labels one by one)
            ground_engine = self.engine.engine  # ProbLog's engine keeps its stack after an error
            ground_engine.pointer, ground_engine.cycle_root = 0, None
            ground_engine.shrink_stack()
            return None
        ac.answer_index = {name: node for name, node in ac.sdd.queries()}
        if not 0 < len(ac.answer_index) <= self.max_label_answers:
            return None
        self._joint_left[free.query] = len(ac.answer_index)
        self.stats["joint_circuits"] += 1
        return ac

    def _release(self, q) -> None:
        """Drop DeepProbLog's circuit of ``q`` from its in-memory cache once the KLay circuit is
        built: the batched solver no longer reads it (DeepProbLog rebuilds it if asked)."""
        self.cache.cache_dict.pop(self.cache.key_func(q), None)

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
            if name == PARAMETERS:
                out[name] = (inputs, self._parameter_log_probs(inputs))
                continue
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

    def _parameter_log_probs(self, indices: list[Constant]) -> Tensor:
        """``log p`` (N, 1) of DeepProbLog's learnable parameters ``t(_)`` number ``indices``:
        one tensor for the batch, whose gradient goes to ``model.optimizer`` as DeepProbLog's
        ``GraphSemiring`` sends it (``add_parameter_gradient``)."""
        keys = [int(c) for c in indices]
        p = torch.tensor([self.model.parameters[k] for k in keys], requires_grad=True)
        optimizer = self.model.optimizer

        def hook(grad: Tensor) -> None:
            for k, g in zip(keys, grad):
                optimizer.add_parameter_gradient(k, g)

        p.register_hook(hook)
        return torch.log(p.clamp_min(1e-45)).reshape(len(keys), 1)

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
        for i, (q, shape, first) in enumerate(zip(batch, ev.shapes, ev.first)):
            if i in ev.fallback:
                value, const = _fallback_log_prob(q, ev.fallback[i], device)
                values.append(value)
                decided.append(const)
                continue
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
        self._store_epoch += 1
        ev = self._evaluate_batch(batch)
        probs = ev.circuit_logp.exp()
        values = probs.unbind()
        eval_time = (time.time() - t0) / max(len(batch), 1)
        results, positions = [], []  # per result: (answer, position) of its answers read off networks
        for i, (q, shape, first) in enumerate(zip(batch, ev.shapes, ev.first)):
            if i in ev.fallback:
                results.append(ev.fallback[i])
                positions.append([])
                continue
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
            batch_grad = BatchGradient(probs, n_neural, self._pending)
            for result, neural in zip(results, positions):
                if isinstance(result.semiring, BatchedGraphSemiring):
                    result.semiring.batch_entry = (batch_grad, neural)
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
        flat, place = network_table({n: outputs[n] for n in needed})

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
        logp = evaluate_batch(live, flat) if live else flat.new_zeros(0)
        return _Evaluation(shapes, logp, first, self._evaluate_fallback(batch, shapes))

    def _evaluate_fallback(self, batch: Sequence, shapes: list[CompiledShape]) -> dict[int, Result]:
        """DeepProbLog's own evaluation (``Solver.solve``) of the batch's queries whose shapes
        the KLay path does not take: ``{position in batch: Result}``.  A circuit that names
        tensors of grounding is ground again (DeepProbLog's cached one would name tensors its
        store no longer holds: ``ExactEngine`` with ``cache=True`` fails there)."""
        out = {}
        for i, (q, shape) in enumerate(zip(batch, shapes)):
            if shape.fallback is not None:
                out[i] = self._fallback_circuit(q, shape).evaluate(self.model, q.substitution)
        return out

    def _fallback_circuit(self, q, shape: CompiledShape) -> ArithmeticCircuit:
        """DeepProbLog's circuit of ``q``; ground again since the tensor store was last
        cleared where it names tensors of grounding (``shape.per_solve``)."""
        if not shape.per_solve:
            return self.cache.get(q)
        key = self.shape_key(q)
        epoch, ac = self._fresh.get(key, (None, None))
        if epoch != self._store_epoch:
            ac = self.build_ac(q)
            self._fresh[key] = (self._store_epoch, ac)
        return ac

    def get_hyperparameters(self) -> dict:
        return {"engine": self.engine.get_hyperparameters(), "semiring": "klay-log"}


def _fallback_log_prob(q, result: Result, device) -> tuple[Tensor, bool]:
    """``(log p, decided)`` of a single-answer query from DeepProbLog's ``Result``."""
    if len(result.result) > 1:
        raise GediError(f"batched engine: query {q.query} has {len(result.result)} answers; "
                        "log_probs takes queries with one answer (use model.solve)")
    p = next(iter(result.result.values()), 0.0)
    if torch.is_tensor(p) and p.requires_grad:
        return torch.log(p.to(device).clamp_min(1e-45)).reshape(()), False
    p = float(p)
    return torch.tensor(math.log(p) if p > 0 else -math.inf, device=device), True


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
    same settings.  ``disk_cache``: folder keeping compiled query shapes across runs;
    ``shared_labels``: ground each query structure once for all its labels (see
    ``gedi_nesy.shared_labels``; False: one grounding per label, as DeepProbLog)."""

    def __init__(self, model, disk_cache: str | Path | None = None, shared_labels: bool = True) -> None:
        super().__init__(model)
        self.disk_cache = disk_cache
        self.shared_labels = shared_labels

    def prepare(self, db):
        """``ExactEngine.prepare``; a neural predicate DeepProbLog does not take is one
        :class:`GediError` line naming it (DeepProbLog raises a bare ``ValueError``)."""
        for clause in db:
            head = clause.head if isinstance(clause, Clause) else clause
            p = getattr(head, "probability", None)
            if isinstance(p, Term) and p.functor == "nn":
                where = _where(clause)
                if p.arity not in (2, 3, 4):
                    raise GediError(f"batched engine: neural predicate {clause}{where} has nn/{p.arity}; "
                                    "DeepProbLog takes nn/2, nn/3 and nn/4")
                net = self.model.networks.get(str(p.args[0]))
                if net is None:
                    raise GediError(f"batched engine: neural predicate {clause}{where} names network "
                                    f"'{p.args[0]}', which the model does not have")
                if p.arity == 3 and net.k is not None:
                    raise GediError(f"batched engine: network '{net.name}' is deterministic (nn/3) in "
                                    f"{clause}{where} and cannot have k={net.k}")
        return super().prepare(db)

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
            self.model.solver = BatchedSolver.replacing(solver, disk_cache=self.disk_cache,
                                                        shared_labels=self.shared_labels)

    def get_hyperparameters(self) -> dict:
        return {"type": "BatchedEngine"}


def _where(clause) -> str:
    """`` (character N of the program)`` from a ProbLog clause's location, or ''."""
    loc = getattr(clause, "location", None)
    return f" (character {loc[1]} of the program)" if isinstance(loc, tuple) and len(loc) == 2 else ""


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
