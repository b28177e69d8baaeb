"""The batched engine's solver: a DeepProbLog ``Solver`` that evaluates a whole batch of queries
as one tensorised circuit (each query shape compiled once, :mod:`gedi_nesy.shape_compiler`), and
the queries the KLay path does not take as DeepProbLog's ``Solver`` does, in the same batch.
:class:`gedi_nesy.engine.BatchedEngine` installs it; ``docs/engine.md`` says how it works.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from problog.logic import Constant, Term, term2list
from torch import Tensor

from gedi_core.errors import GediError
from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()  # before DeepProbLog's modules: its PySwip warning silenced
from deepproblog.arithmetic_circuit import ArithmeticCircuit  # noqa: E402
from deepproblog.semiring import Result  # noqa: E402
from deepproblog.semiring.graph_semiring import GraphSemiring  # noqa: E402
from deepproblog.solver import Solver  # noqa: E402

from gedi_nesy import adapters  # noqa: E402
from gedi_nesy.adapters import quiet_stdout, substitute  # noqa: E402
from gedi_nesy.arithmetic_eval import evaluate_plan  # noqa: E402
from gedi_nesy.circuit_batch import evaluate_batch, network_table  # noqa: E402
from gedi_nesy.circuits import CompiledShape  # noqa: E402
from gedi_nesy.semiring import BatchedGraphSemiring, BatchGradient  # noqa: E402
from gedi_nesy.shape_compiler import ShapeCompilation  # noqa: E402
from gedi_nesy.symbolic_weights import PARAMETERS  # noqa: E402


@dataclass
class _Evaluation:
    """One batch evaluated: every circuit answer's ``log p`` and where each query's answers are."""

    shapes: list[CompiledShape]
    circuit_logp: Tensor  # log p of the batch's circuit answers, query after query
    first: list[int]  # per query: index of its first circuit answer in circuit_logp
    fallback: dict[int, Result]  # queries evaluated by DeepProbLog's Solver: their Results


class BatchedSolver(ShapeCompilation, Solver):
    """A DeepProbLog ``Solver`` that evaluates a whole batch of queries with tensorised
    circuits (see ``docs/engine.md``).  ``disk_cache``: folder where compiled
    shapes are kept across runs (keyed by the program text).

    A query whose circuit the KLay path does not take (tensor-valued probabilities, outputs of
    deterministic nn/3 networks, a model with top-k networks) is evaluated as DeepProbLog's
    ``Solver`` evaluates it, in the same batch; the program's ``evidence/1,2`` conditions
    every query (DeepProbLog's ``ExactEngine`` grounds the query alone and drops it)."""

    def __init__(self, model, engine, cache: bool = True, cache_root: str | None = None,
                 disk_cache: str | Path | None = None, semiring: type = GraphSemiring,
                 shared_labels: bool = True, arithmetic: str = "auto", **kwargs) -> None:
        if semiring is GraphSemiring:
            semiring = BatchedGraphSemiring
        with quiet_stdout():
            super().__init__(model, engine, semiring=semiring, cache=cache, cache_root=cache_root, **kwargs)
        self.evidence = adapters.program_evidence(engine, self.program)
        self.init_shapes(model, disk_cache, shared_labels, arithmetic)
        self._terms: dict[tuple, tuple] = {}  # query -> its shape, ground neural inputs and answers
        self._args: dict[Term, list[Term]] = {}  # ground input term -> its arguments (term2list)
        self._pending: list[BatchGradient] = []  # solved batches whose loss gradients wait
        self._hooked: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()

    @classmethod
    def replacing(cls, solver, disk_cache: str | Path | None = None, shared_labels: bool = True,
                  arithmetic: str = "auto") -> "BatchedSolver":
        """A batched solver with the settings of DeepProbLog's ``solver`` (cache, cache root,
        semiring, SDD garbage collection), for the same model and engine."""
        return cls(solver.model, solver.engine, disk_cache=disk_cache, shared_labels=shared_labels,
                   arithmetic=arithmetic, **adapters.solver_settings(solver))

    # -- compilation
    def build_ac(self, q) -> ArithmeticCircuit:
        """DeepProbLog's ``Solver.build_ac``, with the program's evidence ground beside the
        query (so that the circuit is conditioned on it, as ProbLog's inference is)."""
        if not self.evidence:
            return super().build_ac(q)
        return adapters.build_ac_with_evidence(self, q, self.evidence)

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
            out = (shape, [(net, substitute(inputs, subst)) for net, inputs in shape.pairs], _answers(shape, subst))
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
        from gedi_nesy.network import GEDINetwork, input_images

        out: dict[str, tuple[list, Tensor]] = {}
        for name, inputs in per_net.items():
            if name == PARAMETERS:
                out[name] = (inputs, self._parameter_log_probs(inputs))
                continue
            net = self.model.networks[name]
            module = net.network_module
            if isinstance(module, GEDINetwork):
                x = input_images(self.model, name, inputs, self._input_args)
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
        adapters.clear_tensor_store(self)
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
                adapters.tag_result(result, (batch_grad, neural))
        return results

    def flush_gradients(self) -> None:
        """Send the gradients DeepProbLog's loss functions gave the results of solved batches
        to the networks now.  Automatic: when every answer of a batch has its loss, before
        the next ``solve`` and before each step of the networks' optimizers."""
        for pending in list(self._pending):
            pending.flush()

    def _hook_optimizers(self) -> None:
        """Flush pending gradients before each step of the networks' torch optimizers."""
        adapters.hook_optimizer_steps(self.model, self._hooked, self, BatchedSolver.flush_gradients)

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
        planned: OrderedDict[Term, list[int]] = OrderedDict()
        for i, s in enumerate(shapes):
            if s.indices is not None:
                groups.setdefault(s.key, []).append(i)
            elif s.plan is not None:  # plans that differ only in a known sum: one group
                planned.setdefault(s.plan.signature, []).append(i)
        live, first, pos = [], [-1] * len(batch), 0
        for members in groups.values():
            shape = shapes[members[0]]
            live.append((shape, members, shape.layout(), self._bases(batch, members, place)))
            pos = _place_answers(first, members, shape.n_circuit_answers, pos)
        parts = [evaluate_batch(live, flat)] if live else []
        for members in planned.values():
            shape = shapes[members[0]]
            values = torch.tensor([shapes[i].plan.values for i in members], dtype=torch.long)
            parts.append(self._evaluate_plan(shape, self._bases(batch, members, place), flat, values))
            pos = _place_answers(first, members, shape.n_circuit_answers, pos)
        logp = torch.cat(parts) if parts else flat.new_zeros(0)
        return _Evaluation(shapes, logp, first, self._evaluate_fallback(batch, shapes))

    def _bases(self, batch: Sequence, members: list[int], place: dict) -> np.ndarray:
        """(queries, pairs): where each neural input pair of each member query starts in the
        batch's flat network table."""
        pairs = self._query_terms(batch[members[0]])[0].pairs
        base = np.empty((len(members), len(pairs)), dtype=np.int64)
        for g, i in enumerate(members):
            for k, (net, ground) in enumerate(self.ground_inputs(batch[i])):
                try:
                    base[g, k] = place[net][ground]
                except KeyError:
                    raise GediError(f"batched engine: no output of network '{net}' for {ground}") from None
        return base

    @staticmethod
    def _evaluate_plan(shape: CompiledShape, base: np.ndarray, flat: Tensor, values: Tensor) -> Tensor:
        """``log p`` of every answer of the queries of planned shapes with ``shape``'s signature
        (query after query); ``values``: each query's event values."""
        probs = {}
        for op in shape.plan.ops:
            if op[0] == "digit":  # ("digit", register, pair, value slots): the pair's K outputs
                index = torch.as_tensor(base[:, op[2], None] + np.arange(len(op[3])), device=flat.device)
                probs[op[2]] = flat[index].double().exp()
        values = values.reshape(len(base), len(shape.plan.events))
        logp = evaluate_plan(shape.plan, probs, len(base), values).to(flat.dtype)
        return (logp - logp.clamp(min=0.0).detach()).reshape(-1)  # min(log p, 0), gradient kept

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


def _place_answers(first: list[int], members: list[int], n_answers: int, pos: int) -> int:
    """Set each member query's first answer position (from ``pos``); returns the next free one."""
    for g, i in enumerate(members):
        first[i] = pos + g * n_answers
    return pos + len(members) * n_answers


def _answers(shape: CompiledShape, subst: dict) -> list[Term]:
    """A shape's answers with a query's substitution applied; a planned shape whose answer is
    one argument of the query (every sum of a multi-digit addition) substitutes the query once."""
    plan = shape.plan
    if plan is None or plan.answer_arg is None:
        return [substitute(name, subst) for name in shape.answers]
    k = plan.answer_arg
    args = list(substitute(shape.answers[0], subst).args)
    out = []
    for name in shape.answers:
        args[k] = name.args[k]
        out.append(name.with_args(*args))
    return out
