"""DeepProbLog's shipped example programs (``deepproblog/examples``: MNIST addition and noisy
addition, Coins, HWF, Forth sort/add/WAP, Poker) on small synthetic inputs (random tensors,
tiny networks): ``BatchedEngine`` gives ``ExactEngine``'s query probabilities and gradients
(networks and learnable ``t(_)`` parameters) to 1e-5, and each query takes the path expected
(KLay circuits, or DeepProbLog's evaluation for nn/3 networks).  The examples' synthetic
networks and queries are defined in ``experiments/nesy/deepproblog_examples.py`` (also their
benchmark).  CLUTRR's program is written for DeepProbLog's ApproximateEngine (SWI-Prolog
lambdas), which ExactEngine does not run (fast, offline)."""

from __future__ import annotations

import pytest
import torch
from problog.logic import Constant, Term

torch.set_num_threads(1)

from experiments.nesy.deepproblog_examples import (EXAMPLES, ExactEngine, Query, SGD, examples, image_net,  # noqa: E402
                                                   images, img, probabilities_and_gradients)
from gedi_nesy.engine import BatchedEngine  # noqa: E402

from deepproblog.model import Model  # noqa: E402

pytestmark = pytest.mark.slow  # DeepProbLog's example programs on both engines

TOL = 1e-5


@pytest.mark.parametrize("name", list(examples()))
def test_batched_engine_agrees_with_the_exact_engine(name):
    example = examples()[name]
    (pe, ge, te, _), (pb, gb, tb, fb) = probabilities_and_gradients(example).values()
    assert pb == pytest.approx(pe, abs=TOL) and any(p > 1e-6 for p in pb), (pe, pb)
    assert ge.abs().sum() > 0 and torch.allclose(ge, gb, atol=TOL, rtol=1e-4), (ge - gb).abs().max()
    assert tb == pytest.approx(te, abs=TOL, rel=1e-4)
    assert fb == example.fallback
    if example.learnable:  # the gradient reaches t(0.1) :: noisy, the house's t(1/4)s
        assert sum(abs(g) for g in tb) > 0


def test_train_model_updates_learnable_parameters_as_with_the_exact_engine():
    """DeepProbLog's train_model with its SGD on noisy_addition.pl's t(0.1) :: noisy and the
    network: the same parameters after three iterations with either engine."""
    from deepproblog.dataset import DataLoader
    from deepproblog.train import train_model
    from deepproblog_helpers import QueryList

    batch = [Query(Term("addition_noisy", img(2 * k), img(2 * k + 1), Constant(s)))
             for k, s in enumerate((3, 9, 14, 5, 7, 11))]
    params = {}
    for engine in (ExactEngine, BatchedEngine):
        torch.manual_seed(0)
        net = image_net("mnist_net", 10)
        net.optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        model = Model(str(EXAMPLES / "MNIST/models/noisy_addition.pl"), [net])
        model.optimizer = SGD(model, 0.5)
        model.set_engine(engine(model), cache=True)
        model.add_tensor_source("img", images(12))
        train_model(model, DataLoader(QueryList(batch), 2, False), 1, log_iter=100)
        params[engine] = (list(model.parameters), torch.cat([p.detach().flatten() for p in net.parameters()]))
    (te, we), (tb, wb) = params[ExactEngine], params[BatchedEngine]
    assert tb == pytest.approx(te, abs=TOL) and abs(tb[0] - 0.1) > 1e-4  # t(0.1) moved, the same way
    assert torch.allclose(we, wb, atol=TOL)
