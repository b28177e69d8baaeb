"""The NeSy loss ``L_NESY``: cross-entropy between each query's target probability and ``p(q)``.

``L_NESY = mean_q -[t_q log p(q) + (1 - t_q) log(1 - p(q))]`` over the batch's queries with a
proof (DeepProbLog's loss for a query ``t_q :: q``; for ``t_q = 1`` it is ``-log p(q)``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from gedi_nesy.circuits import log1mexp


def nesy_loss(probs: Sequence[Tensor | float | None], batch: Sequence, eps: float = 1e-12) -> tuple[Tensor | None, int]:
    """``L_NESY`` from probabilities (DeepProbLog's exact engine). Queries without a proof
    (``None``) or decided without networks (a float) are skipped; their number is returned."""
    terms = []
    skipped = 0
    for p, q in zip(probs, batch):
        if p is None or not torch.is_tensor(p):
            skipped += 1
            continue
        p = p.clamp(0.0, 1.0)
        t = float(q.p)
        loss = -torch.log(p + eps) if t == 1.0 else -(t * torch.log(p + eps) + (1 - t) * torch.log(1 - p + eps))
        terms.append(loss)
    if not terms:
        return None, skipped
    return torch.stack(terms).mean(), skipped


def nesy_loss_log(logp: Tensor, decided: Sequence[bool], batch: Sequence) -> tuple[Tensor | None, int]:
    """``L_NESY`` from ``log p(q)`` (the batched engine), computed in log space; queries
    decided without networks are skipped (their number is returned)."""
    keep = [i for i, d in enumerate(decided) if not d]
    if not keep:
        return None, len(batch)
    idx = torch.tensor(keep, device=logp.device)
    lp = logp[idx]  # the engine gives min(log p, 0) with its gradient kept
    t = torch.tensor([float(batch[i].p) for i in keep], dtype=lp.dtype, device=lp.device)
    if bool((t == 1.0).all()):
        loss = -lp
    else:
        loss = -(t * lp + (1 - t) * log1mexp(lp))
    return loss.mean(), len(batch) - len(keep)
