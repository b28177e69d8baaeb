"""SwAV (Caron et al., 2020): Sinkhorn-Knopp codes and the swapped-prediction loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iters: int = 3) -> Tensor:
    """Equipartitioned soft assignments ``Q`` (B x K) from prototype scores (B x K).

    Solves ``max_Q tr(Q^T S) + epsilon H(Q)`` over the transportation polytope by
    Sinkhorn-Knopp: each row of the result sums to 1 and each column to ``B / K``.
    Computed without gradients (SwAV's stop-gradient on the codes), in log space.
    """
    b, k = scores.shape
    log_q = scores.float() / epsilon
    for _ in range(iters):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) + torch.log(torch.tensor(b / k))
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q.exp()


def swav_loss(logits1: Tensor, logits2: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    """Swapped prediction: ``-1/2 E[ q1 . log softmax(logits2) + q2 . log softmax(logits1) ]``,
    where ``q1, q2`` are the (stop-gradient) Sinkhorn codes of the two views.
    """
    l12 = -(q1 * F.log_softmax(logits2, dim=-1)).sum(-1).mean()
    l21 = -(q2 * F.log_softmax(logits1, dim=-1)).sum(-1).mean()
    return 0.5 * (l12 + l21)
