"""DeepProbLog's loss functions over a batched solve: one backward pass per batch.

DeepProbLog back-propagates each query's loss on its own; the batch's probabilities come from one
circuit and one network call, so :class:`BatchedGraphSemiring` computes DeepProbLog's formulas in
floats, adds up the gradients and sends them through the batch's graph once.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from problog.logic import Term
from torch import Tensor

from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()
from deepproblog.semiring.graph_semiring import GraphSemiring  # noqa: E402

from gedi_nesy.adapters import result_tag  # noqa: E402

class BatchGradient:
    """The circuit answers' probabilities of one solved batch and the gradient DeepProbLog's
    loss functions gave them, sent through the batch's graph in one backward pass.

    DeepProbLog back-propagates each query's loss on its own (``loss.backward(retain_graph=
    True)`` per query); the batch's probabilities come from one circuit and one network call,
    so that would run the whole batch's backward once per query.  The gradients are sent on
    when every answer of the batch that depends on a network has its loss, else before the
    next ``solve``, before any network optimizer's step or on
    :meth:`BatchedSolver.flush_gradients`."""

    def __init__(self, probs: Tensor, n_answers: int, pending: list["BatchGradient"]) -> None:
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


def _same_term(a, b) -> bool:
    """``a == b`` for terms, quicker than ProbLog's comparison where they share subterms
    (an answer and DeepProbLog's ``q.substitute().query`` share the substituted images)."""
    if a is b:
        return True
    if type(a) is Term and type(b) is Term and a.probability is None and b.probability is None:
        return (a.functor == b.functor and a.arity == b.arity
                and all(_same_term(x, y) for x, y in zip(a.args, b.args)))
    return a == b


def cross_entropy_and_grad(p: float, target: float, eps: float = 1e-12) -> tuple[float, float]:
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


def mse_and_grad(p: float, target: float) -> tuple[float, float]:
    """DeepProbLog's ``GraphSemiring.mse`` for one probability, with weight 1: loss, gradient."""
    return (p - target) ** 2, 2.0 * (p - target)


def _batched_loss(loss_fn, value_and_grad):
    """DeepProbLog's loss function ``loss_fn`` (loss of one result and its backward pass)
    where, for a result of :class:`BatchedSolver`, the loss and its gradient are computed
    by ``value_and_grad`` (the same formula) and the gradient is handed to the batch."""

    @functools.wraps(loss_fn)
    def loss(result, target, weight, q=None, **kwargs):
        entry = result_tag(result)
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
    ``train_model`` calls per query) send a batched solve's gradients in one backward pass.

    ``batch_entry`` (set by :meth:`BatchedSolver.solve` on each result's semiring): the result's
    batch and, for each answer read off networks, its position in the batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_entry: tuple[BatchGradient, list[tuple[Term, int]]] | None = None

    cross_entropy = _batched_loss(GraphSemiring.cross_entropy, cross_entropy_and_grad)
    mse = _batched_loss(GraphSemiring.mse, mse_and_grad)
