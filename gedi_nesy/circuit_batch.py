"""Evaluating a batch: all instances of all query shapes as one block-diagonal circuit.

One gather puts every network's log-probabilities into the weights of every query, then one
KLay layer per depth (sum and log-sum-exp, alternating) evaluates the whole batch at once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from problog.logic import Term
from torch import Tensor

from gedi_nesy.circuits import FLOOR, log1mexp

def network_table(outputs: dict[str, tuple[list, Tensor]]) -> tuple[Tensor, dict[str, dict[Term, int]]]:
    """All networks' log-probabilities as one flat vector, and for each network and input
    term the position of its first output in it."""
    tables, place, total = [], {}, 0
    for name, (inputs, logp) in outputs.items():
        width = logp.shape[-1]
        place[name] = {t: total + i * width for i, t in enumerate(inputs)}
        tables.append(logp.reshape(-1))
        total += logp.numel()
    return (torch.cat(tables) if tables else torch.zeros(0)), place


def evaluate_batch(live: list, flat: Tensor) -> Tensor:
    """All instances of all shapes of a batch as one block-diagonal circuit: one gather for
    the weights, then one layer per depth of the KLay circuits (log semiring) for the whole
    batch.  Returns ``log p`` of every circuit answer (group after group, instance after
    instance)."""
    table, per_group = _weight_table(live, flat)
    x, starts = _input_layer(live, per_group, table)
    x, starts = _circuit_layers(live, x, starts)
    out = []
    for (shape, members, lay, _), start in zip(live, starts):
        roots = x[start : start + len(members) * lay["roots"]].view(len(members), lay["roots"])
        logp = roots[:, :-1] - roots[:, -1:]
        out.append((logp - logp.clamp(min=0.0).detach()).reshape(-1))  # min(log p, 0), gradient kept
    return torch.cat(out)


def _weight_table(live: list, flat: Tensor) -> tuple[Tensor, list[tuple[int, ...]]]:
    """The weights of all instances: ``[log p | log(1-p) (leaves) | log comp | log consts |
    -inf, 0]`` and, per group, ``(instances, first leaf, leaves, first comp, comps, first const)``."""
    leaf_idx, comp_idx, consts, per_group = [], [], [], []
    n_p = n_r = n_c = 0
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
    return torch.cat(feats), per_group


def _input_layer(live: list, per_group: list, table: Tensor) -> tuple[Tensor, list[int]]:
    """KLay's input encoding ``[zero, one, pos_1, neg_1, ...]`` of every instance, gathered
    from the weight table; and where each group starts in it."""
    n_p = sum(g * n_leaf for g, _, n_leaf, *_ in per_group)
    n_r = sum(g * n_comp for g, _, _, _, n_comp, _ in per_group)
    n_c = sum(len(lay["consts"]) for _, _, lay, _ in live)
    kind_base0 = np.array([0, n_p, 2 * n_p, 2 * n_p + n_r, 2 * n_p + n_r + n_c])
    inputs, starts, in_base = [], [], 0
    for (shape, members, lay, base), (g, p0, n_leaf, r0, n_comp, c0) in zip(live, per_group):
        kb = kind_base0 + np.array([p0, p0, r0, c0, 0])
        stride = np.array([n_leaf, n_leaf, n_comp, 0, 0])
        k, loc = lay["kind"], lay["local"]
        idx = kb[k][None] + np.arange(g)[:, None] * stride[k][None] + loc[None]
        inputs.append(idx.ravel())
        starts.append(in_base)
        in_base += idx.size
    return table[torch.from_numpy(np.concatenate(inputs)).to(table.device)], starts


def _circuit_layers(live: list, x: Tensor, starts: list[int]) -> tuple[Tensor, list[int]]:
    """The circuit layers of all groups, depth by depth (a shallower shape passes its roots
    through): product layers (sums of logs) and sum layers (log-sum-exp) alternate, as in
    KLay's log semiring.  Returns the roots of all instances and where each group starts."""
    device = x.device
    plans = [(len(members), shape.replicated(len(members)), lay["roots"]) for shape, members, lay, _ in live]
    depth = max(len(plan) for _, plan, _ in plans)
    for level in range(depth):
        ix_parts, end_parts, ix_shift, end_shift, new_starts = [], [], [], [], []
        edge_base = out_base = 0
        for (g, plan, roots), start in zip(plans, starts):
            if level < len(plan):
                ix_rel, ends_rel, n_out = plan[level]
            else:  # shallower shape: pass its roots through
                ix_rel = np.arange(g * roots)
                ends_rel, n_out = ix_rel + 1, g * roots
            ix_parts.append(ix_rel)
            end_parts.append(ends_rel)
            ix_shift.append(start)
            end_shift.append(edge_base)
            new_starts.append(out_base)
            edge_base += len(ix_rel)
            out_base += n_out
        ix = np.concatenate(ix_parts) + np.repeat(ix_shift, [len(a) for a in ix_parts])
        ends = np.concatenate(end_parts) + np.repeat(end_shift, [len(a) for a in end_parts])
        offsets = torch.from_numpy(np.concatenate([[0], ends])).to(device)
        inputs = x[torch.from_numpy(ix).to(device)]
        x = _segment_sum(inputs, offsets) if level % 2 == 0 else _segment_logsumexp(inputs, offsets)
        starts = new_starts
    return x, starts


def _segment_sum(x: Tensor, offsets: Tensor) -> Tensor:
    """Sum of each segment ``x[offsets[i]:offsets[i+1]]`` (a product in log space)."""
    return torch.segment_reduce(x, "sum", offsets=offsets, axis=0, unsafe=True)


def _segment_logsumexp(x: Tensor, offsets: Tensor) -> Tensor:
    """Log-sum-exp of each segment, stable (KLay's LogSumLayer: an all ``-inf`` segment
    gives ``-inf``, no nan)."""
    top = torch.segment_reduce(x.detach(), "amax", offsets=offsets, axis=0, unsafe=True)
    seg = torch.repeat_interleave(torch.arange(len(top), device=x.device), offsets.diff())
    shifted = (x - top[seg]).nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
    return _segment_sum(shifted.exp(), offsets).log() + top
