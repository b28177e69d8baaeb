"""gedi_nesy.engine's numerics: ``log1mexp`` near 0 and the NeSy loss of a query that should
be false while ``log p`` is just below 0 (fast, offline)."""

from __future__ import annotations

import math

import pytest
import torch
from deepproblog.query import Query
from deepproblog.semiring import Result
from deepproblog.semiring.graph_semiring import GraphSemiring
from problog.logic import Term

from gedi_nesy.engine import log1mexp
from gedi_nesy.training import nesy_loss_log


def test_log1mexp_is_accurate_finite_and_has_a_gradient_near_zero():
    xs = [-60.0, -5.0, -1.0, -0.7, -0.69, -0.1, -1e-3, -1e-6, -3e-8, -1e-10]
    x = torch.tensor(xs, requires_grad=True)
    y = log1mexp(x)
    ref = torch.log(-torch.expm1(torch.tensor(xs, dtype=torch.float64)))
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert torch.allclose(x.grad.double(), -1 / torch.expm1(-torch.tensor(xs, dtype=torch.float64)), rtol=1e-4)
    # 1 - p below DeepProbLog's eps (p rounded to 1): its log(eps), a finite pushing gradient
    z = torch.tensor([0.0, -1e-13, -math.inf], requires_grad=True)
    v = log1mexp(z)
    v[:2].sum().backward()
    assert v[:2].tolist() == pytest.approx([math.log(1e-12)] * 2, abs=1e-3) and float(v[2]) == 0.0
    assert torch.isfinite(z.grad).all() and (z.grad[:2] < -1e11).all()


def test_soft_and_negative_targets_near_certainty_give_deepproblogs_loss():
    """A query that should be false (target 0 or 0.3) while log p is just below 0: the batched
    NeSy loss is finite with a gradient, and equals DeepProbLog's cross-entropy (computed
    precisely, in float64)."""
    lps, targets = [-3e-8, -3e-8, -1e-9, 0.0], [0.0, 0.3, 0.3, 0.3]
    batch = [Query(Term("q"), p=t) for t in targets]
    lp = torch.tensor(lps, requires_grad=True)
    loss, skipped = nesy_loss_log(lp, [False] * 4, batch)
    loss.backward()
    want = 0.0
    for value, t in zip(lps, targets):
        p = torch.tensor(value, dtype=torch.float64).exp().requires_grad_()
        want += GraphSemiring.cross_entropy(Result({Term("q"): p}, None), t, weight=1 / 4, q=Term("q"))
    assert skipped == 0 and math.isfinite(float(loss)) and float(loss) == pytest.approx(want, rel=1e-4)
    assert torch.isfinite(lp.grad).all() and (lp.grad[:3] > 0).all()  # pushes log p down
