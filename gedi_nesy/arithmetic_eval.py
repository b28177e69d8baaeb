"""Evaluating :class:`gedi_nesy.arithmetic_plan.ArithmeticPlan` s on a batch: distributions as tensors.

Each register is a ``(G, L)`` tensor of probabilities (float64) over its integer values, one row
per query of the group; sums of independent integers are convolutions (direct for a short
operand, by FFT otherwise), a known sum is a sum over one operand.  Differentiable throughout:
the gradients reach the networks' log-probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gedi_nesy.arithmetic_plan import ArithmeticPlan

TINY = 1e-300  # smallest probability taken before the log (float64)
_DIRECT_TAPS = 64  # convolutions with an operand this short are computed directly


def convolve(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise full linear convolution of ``x`` (G, Lx) and ``y`` (G, Ly): the distribution
    of the sum of two independent integers."""
    if x.shape[1] < y.shape[1]:
        x, y = y, x
    n, taps = x.shape[1] + y.shape[1] - 1, y.shape[1]
    if taps <= _DIRECT_TAPS:
        return sum(F.pad(x * y[:, j : j + 1], (j, taps - 1 - j)) for j in range(taps))
    out = torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(y, n), n)
    return out.clamp_min(0.0)


def _place(values: Tensor, index: Tensor, length: int) -> Tensor:
    """Probabilities ``values`` (G, M) summed into ``length`` slots at ``index`` (M,)."""
    return values.new_zeros(values.shape[0], length).index_add(1, index, values)


def evaluate_plan(plan: ArithmeticPlan, probs: dict[int, Tensor], g: int, values: Tensor | None = None) -> Tensor:
    """``log p`` (G, answers) of a plan's answers for ``g`` queries; ``probs[k]``: the (G, K)
    output probabilities (float64) of the plan's neural input ``k`` for each query;
    ``values`` (G, events): each query's own event values (queries of plans with one signature:
    a different known sum each), default the plan's."""
    device = next(iter(probs.values())).device if probs else None
    regs: dict[int, Tensor] = {}
    for op in plan.ops:
        kind, out = op[0], op[1]
        length = len(plan.regs[out].mask)
        if kind == "digit":
            regs[out] = _place(probs[op[2]], torch.as_tensor(op[3], device=device), length)
        elif kind == "const":
            regs[out] = torch.ones(g, 1, dtype=torch.float64, device=device)
        elif kind == "affine":
            src, scale, shift = plan.regs[op[2]], op[3], op[4]
            index = torch.as_tensor(src.values * scale + shift - plan.regs[out].lo, device=device)
            regs[out] = _place(regs[op[2]], index, length)
        elif kind == "place":  # scale * x + y, y narrower than scale: the outer product, row after row
            x, y, scale = regs[op[2]], regs[op[3]], op[4]
            joint = F.pad(x[:, :, None] * y[:, None, :], (0, scale - y.shape[1]))
            regs[out] = joint.reshape(g, -1)[:, :length]
        elif kind == "add":
            regs[out] = convolve(regs[op[2]], regs[op[3]])
        elif kind == "outer":
            table, possible = op[4], op[5]
            joint = regs[op[2]][:, :, None] * regs[op[3]][:, None, :]
            joint = joint * torch.as_tensor(possible, device=device)
            regs[out] = _place(joint.reshape(g, -1), torch.as_tensor(table.reshape(-1), device=device), length)
    if values is None:
        values = torch.tensor([plan.values] * g, dtype=torch.long).reshape(g, len(plan.events))
    logp = torch.zeros(g, 1, dtype=torch.float64, device=device)
    for e, ev in enumerate(plan.events):
        logp = logp + torch.log(_event(plan, regs, ev, values[:, e].to(device)).clamp_min(TINY))[:, None]
    if plan.answer is None:
        return logp
    index = torch.as_tensor(plan.answer_index, device=device)
    return logp + torch.log(regs[plan.answer].index_select(1, index).clamp_min(TINY))


def _event(plan: ArithmeticPlan, regs: dict[int, Tensor], ev: tuple, value: Tensor) -> Tensor:
    """The probability (G,) of one event of the plan; ``value`` (G,): each query's value of an
    ``at`` event (an index into the register) or a ``sum_at`` one (the sum)."""
    kind = ev[0]
    if kind == "at":
        return regs[ev[1]].gather(1, value[:, None]).squeeze(1)
    if kind == "sum_at":  # P(x + y = c) = sum_a P(x = a) P(y = c - a)
        x, y = plan.regs[ev[1]], plan.regs[ev[2]]
        px, py = regs[ev[1]], regs[ev[2]]
        a = torch.arange(len(x.mask), device=px.device)
        b = value[:, None] - (x.lo + a)[None, :] - y.lo  # (G, Lx): the index of c - a in y
        ok = (b >= 0) & (b < len(y.mask))
        return (px * py.gather(1, b.clamp(0, len(y.mask) - 1)) * ok).sum(1)
    holds = torch.as_tensor(ev[3], dtype=torch.float64, device=regs[ev[1]].device)
    return torch.einsum("gi,ij,gj->g", regs[ev[1]], holds, regs[ev[2]])
