"""The three GEDI loss terms as pure functions of tensors.

Notation (paper "Unifying Self-Supervised Clustering and Energy-Based Models"):
``p(y|x) = softmax(U^T g(x) / tau)`` over ``c`` clusters, energy
``E(x) = -logsumexp_y U^T g(x) / tau``, augmented view ``x' ~ A(x'|x)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gen_loss(energy_data: Tensor, energy_samples: Tensor) -> Tensor:
    """Contrastive-divergence surrogate of the negative log-likelihood (paper Eq. 7).

    ``L_GEN = E_{x ~ p_data}[E(x)] - E_{x~ ~ q}[E(x~)]`` where ``x~`` are SGLD samples
    (drawn from the persistent replay buffer and detached from the graph). Its gradient
    is the maximum-likelihood gradient of ``log p(x) = -E(x) - log Z`` when ``q`` is the model.
    """
    return energy_data.mean() - energy_samples.mean()


def inv_loss(logits: Tensor, logits_aug: Tensor) -> Tensor:
    """Invariance term (paper Eq. 3): cross-entropy between ``p(y|x')`` and ``p(y|x)``.

    ``L_INV = -E_x E_{x'|x} sum_y p(y|x') log p(y|x)``; gradients flow through both views.
    Its global optimum is 0, reached exactly when the two views give the same one-hot
    prediction; ``L_INV > 0`` at convergence signals label inconsistency.
    """
    if logits.shape != logits_aug.shape:
        raise ValueError(f"inv_loss: logits shapes differ: {tuple(logits.shape)} vs {tuple(logits_aug.shape)}")
    return -(F.softmax(logits_aug, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def batch_mean_probs(logits: Tensor) -> Tensor:
    """``p_bar(y) = 1/B sum_i p(y|x_i)``: the batch estimate of the marginal of the clusters."""
    return F.softmax(logits, dim=-1).mean(0)


def prior_cross_entropy(p_bar: Tensor, target: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """``-sum_y pi(y) log p_bar(y)`` of a class marginal ``p_bar`` (``pi`` uniform for ``target=None``)."""
    log_p = torch.log(p_bar + eps)
    return -log_p.mean() if target is None else -(target.to(log_p) * log_p).sum()


def prior_neg_entropy(p_bar: Tensor, target: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """``-H(p_bar) = sum_y p_bar(y) log p_bar(y)``, or ``KL(p_bar || pi) - ln c`` with ``target = pi``."""
    if target is None:
        return (p_bar * torch.log(p_bar + eps)).sum()
    scaled = target.to(p_bar) * p_bar.shape[-1]
    return (p_bar * (torch.log(p_bar + eps) - torch.log(scaled + eps))).sum()


def prior_loss(logits: Tensor, target: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Prior term (paper Eq. 3): cross-entropy between a prior ``pi`` and ``p_bar``.

    ``L_PRIOR = -sum_y pi(y) log p_bar(y)`` with ``p_bar`` the batch mean of ``p(y|x)`` and
    ``pi`` uniform (``target=None``, the paper's: ``-(1/c) sum_y log p_bar(y)``) or ``target``.
    Its global optimum is ``H(pi)`` (``ln c`` for the uniform prior), reached at
    ``p_bar = pi``; a value far above it signals cluster collapse.
    """
    return prior_cross_entropy(batch_mean_probs(logits), target, eps)


def prior_entropy_loss(logits: Tensor, target: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Entropy variant of the prior term: ``-H(p_bar) = sum_y p_bar(y) log p_bar(y)``.

    Used in the paper's NeSy experiments (appendix O); global optimum ``-ln c``. With a prior
    ``target`` = ``pi`` it is ``KL(p_bar || pi) - ln c = sum_y p_bar(y) log(p_bar(y) / (c pi(y)))``,
    the same function for the uniform ``pi`` and with its optimum at ``p_bar = pi`` otherwise.
    """
    return prior_neg_entropy(batch_mean_probs(logits), target, eps)


def running_marginal(previous: Tensor | None, batch_mean: Tensor, n: int, window: float) -> Tensor:
    """The class marginal over about the last ``window`` inputs: ``r = l r' + (1 - l) b`` with
    ``b`` the batch mean of ``n`` inputs and ``l = max(0, 1 - n / window)`` (detached; the first
    batch starts it, and a batch of ``window`` inputs or more replaces it)."""
    b = batch_mean.detach()
    if previous is None:
        return b
    keep = max(0.0, 1.0 - n / window)
    return keep * previous.to(b) + (1.0 - keep) * b


def prior_at_marginal(prior_fn, p_bar: Tensor, marginal: Tensor, target: Tensor | None = None) -> Tensor:
    """A prior term whose value is ``prior_fn`` at the class marginal ``marginal`` (e.g. estimated
    over many batches by :func:`running_marginal`) and whose gradient is the batch's share of it:
    ``f(r) + <grad f(r), p_bar - sg(p_bar)>`` (``sg``: stop-gradient, ``p_bar`` the batch mean of
    ``p(y|x)``, :func:`batch_mean_probs`). For ``r = p_bar`` it is the batch term itself; for a small batch the gradient
    pushes its images by the marginal of many inputs, not by the few the batch holds (a batch of
    two images has a marginal entropy of at most ``ln 2``)."""
    r = marginal.detach().to(p_bar).requires_grad_(True)
    with torch.enable_grad():
        value = prior_fn(r, target)
        (grad,) = torch.autograd.grad(value, r)
    return value.detach() + (grad * (p_bar - p_bar.detach())).sum()


def prior_optimum(num_clusters: int) -> float:
    """The known global optimum of :func:`prior_loss`: ``ln c``."""
    return math.log(num_clusters)
