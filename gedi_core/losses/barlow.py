"""Barlow Twins (Zbontar et al., 2021), the baseline of the paper's Tables 2-5."""

from __future__ import annotations

import torch
from torch import Tensor


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with ``C`` the cross-correlation
    matrix of the batch-standardised embeddings of two views, ``C = z1n^T z2n / B``.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"barlow_twins_loss: expects two (B, D) embeddings, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    z1n = (z1 - z1.mean(0)) / (z1.std(0) + eps)
    z2n = (z2 - z2.mean(0)) / (z2.std(0) + eps)
    c = z1n.T @ z2n / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag
