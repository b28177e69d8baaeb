"""DeepProbLog's shipped example programs (``deepproblog/examples``: MNIST addition and noisy
addition, Coins, HWF, Forth sort/add/WAP, Poker) on small synthetic inputs (random tensors,
tiny networks): ``BatchedEngine`` gives ``ExactEngine``'s query probabilities and gradients
(networks and learnable ``t(_)`` parameters) to 1e-5, and each query takes the path expected
(KLay circuits, or DeepProbLog's evaluation for nn/3 networks).  CLUTRR's program is
written for DeepProbLog's ApproximateEngine (SWI-Prolog lambdas), which ExactEngine does not
run (fast, offline)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn as nn
from problog.logic import Constant, Term, list2term

torch.set_num_threads(1)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="ApproximateEngine is not available")
    import deepproblog.examples
    from deepproblog.engines import ExactEngine

from deepproblog.model import Model
from deepproblog.network import Network
from deepproblog.optimizer import SGD
from deepproblog.query import Query
from deepproblog.train import TrainObject

from gedi_nesy.engine import BatchedEngine

EXAMPLES = Path(deepproblog.examples.__file__).parent
TOL = 1e-5
DIM = 6  # size of the synthetic "images"


class TermNet(nn.Module):
    """A tiny network on DeepProbLog's non-tensor inputs (integers, atoms): each input term
    is embedded by a fixed random vector, the vectors are concatenated, then linear + softmax
    (or, with ``softmax=False``, the vector itself: a deterministic nn/3 embedding)."""

    def __init__(self, n_inputs: int, n_out: int, softmax: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(n_inputs * DIM, n_out)
        self.softmax = softmax

    def forward(self, *terms) -> torch.Tensor:
        codes = []
        for t in terms:
            seed = sum(ord(c) * 31 ** i for i, c in enumerate(str(t))) % (2 ** 31)
            codes.append(torch.randn(DIM, generator=torch.Generator().manual_seed(seed)))
        out = self.linear(torch.cat(codes))
        return torch.softmax(out, -1) if self.softmax else torch.tanh(out)


class EmbeddingNet(nn.Module):
    """Linear + softmax over a (deterministic network's) embedding tensor."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), -1)


def image_net(name: str, n_out: int) -> Network:
    module = nn.Sequential(nn.Linear(DIM, n_out), nn.Softmax(-1))
    return Network(module, name, batching=True)


def images(n: int) -> dict:
    """A tensor source of ``n`` random images ``tensor(img(i))``."""
    g = torch.Generator().manual_seed(123)
    return {(Constant(i),): torch.randn(DIM, generator=g) for i in range(n)}


def img(i: int) -> Term:
    return Term("tensor", Term("img", Constant(i)))


def ints(*xs: int) -> Term:
    return list2term([Constant(x) for x in xs])


def run(program: Path, make_nets: Callable[[], list[Network]], batch: list[Query], n_images: int = 0,
        learnable: bool = False, share: bool = False) -> dict:
    """Per engine: the batch's probabilities, DeepProbLog's cross-entropy gradients of all
    network parameters and t(_) parameters (``TrainObject.get_loss``), and (batched engine)
    which queries took DeepProbLog's evaluation.  ``share``: the batched engine reuses the
    circuits ExactEngine compiled (for programs slow to ground)."""
    out, circuits = {}, None
    for engine in (ExactEngine, BatchedEngine):
        torch.manual_seed(0)
        nets = make_nets()
        model = Model(str(program), nets)
        if learnable:
            model.optimizer = SGD(model, 0.0)
        model.set_engine(engine(model), cache=True)
        if share and circuits is not None:
            model.solver.cache.cache_dict = circuits
        circuits = model.solver.cache.cache_dict
        model.add_tensor_source("img", images(n_images))
        probs = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(batch), batch)]
        model.optimizer.zero_grad()
        for net in nets:
            for p in net.parameters():
                p.grad = None
        TrainObject(model).get_loss(batch, model.solver.semiring.cross_entropy)
        grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                           for net in nets for p in net.parameters()])
        t_grads = [float(model.optimizer._params_grad[i]) for i in range(len(model.parameters))]
        fallback = [model.solver.shape(q).fallback is not None for q in batch] if engine is BatchedEngine else None
        out[engine.__name__] = (probs, grads, t_grads, fallback)
    return out


def check(out: dict, fallback: list[bool]) -> None:
    (pe, ge, te, _), (pb, gb, tb, fb) = out["ExactEngine"], out["BatchedEngine"]
    assert pb == pytest.approx(pe, abs=TOL) and any(p > 1e-6 for p in pb), (pe, pb)
    assert ge.abs().sum() > 0 and torch.allclose(ge, gb, atol=TOL, rtol=1e-4), (ge - gb).abs().max()
    assert tb == pytest.approx(te, abs=TOL, rel=1e-4)
    assert fb == fallback


def test_mnist_addition_and_multi_digit_addition():
    sub = [Query(Term("addition", img(0), img(1), Constant(7))),
           Query(Term("multi_addition", list2term([img(2)]), list2term([img(3)]), Constant(9))),
           Query(Term("multi_addition", list2term([img(0), img(1)]), list2term([img(2), img(3)]), Constant(44)))]
    out = run(EXAMPLES / "MNIST/models/addition.pl", lambda: [image_net("mnist_net", 10)], sub, n_images=4)
    check(out, [False, False, False])


def test_noisy_addition_learns_its_noise_parameter():
    batch = [Query(Term("addition_noisy", img(0), img(1), Constant(7))),
             Query(Term("addition", img(2), img(3), Constant(5)))]
    out = run(EXAMPLES / "MNIST/models/noisy_addition.pl", lambda: [image_net("mnist_net", 10)], batch,
              n_images=4, learnable=True)
    check(out, [False, False])
    assert abs(out["BatchedEngine"][2][0]) > 0  # the gradient reaches t(0.1) :: noisy


def test_coins():
    batch = [Query(Term("game", img(0), Term("win"))), Query(Term("game", img(1), Term("loss")))]
    out = run(EXAMPLES / "Coins/model.pl", lambda: [image_net("net1", 2), image_net("net2", 2)], batch, n_images=2)
    check(out, [False, False])


def test_hwf_formulas():
    batch = [Query(Term("expression", list2term([img(0), img(1), img(2)]), Constant(6))),
             Query(Term("expression", list2term([img(3), img(4), img(5)]), Constant(2)))]
    out = run(EXAMPLES / "HWF/model.pl", lambda: [image_net("net1", 10), image_net("net2", 4)], batch, n_images=6)
    check(out, [False, False])


def test_forth_sort_and_add():
    batch = [Query(Term("forth_sort", ints(3, 1, 2), ints(1, 2, 3))),
             Query(Term("forth_sort", ints(2, 0, 1, 3), ints(0, 1, 2, 3)))]
    out = run(EXAMPLES / "Forth/Sort/compare.pl", lambda: [Network(TermNet(2, 2), "swap_net")], batch)
    check(out, [False, False])
    batch = [Query(Term("add", ints(2, 5), ints(3, 7), Constant(0), ints(0, 6, 2))),
             Query(Term("add", ints(9), ints(4), Constant(1), ints(1, 4)))]
    out = run(EXAMPLES / "Forth/Add/choose.pl",
              lambda: [Network(TermNet(3, 10), "neural1"), Network(TermNet(3, 2), "neural2")], batch)
    check(out, [False, False])


def test_forth_wap_with_a_deterministic_network():
    def nets() -> list[Network]:
        return [Network(TermNet(1, DIM, softmax=False), "rnn"), Network(EmbeddingNet(6), "nn_permute"),
                Network(EmbeddingNet(4), "nn_op1"), Network(EmbeddingNet(2), "nn_swap"),
                Network(EmbeddingNet(4), "nn_op2")]

    batch = [Query(Term("wap", Term("'some text'"), Constant(2), Constant(3), Constant(4), Constant(9))),
             Query(Term("wap", Term("'other text'"), Constant(6), Constant(2), Constant(1), Constant(4)))]
    check(run(EXAMPLES / "Forth/WAP/wap.pl", nets, batch), [True, True])


def test_poker_with_a_learnable_annotated_disjunction():
    batch = [Query(Term("game", list2term([img(i) for i in range(4)]), Term("win"))),
             Query(Term("game", list2term([img(i) for i in (3, 2, 1, 0)]), Term("draw")))]
    out = run(EXAMPLES / "Poker/model.pl", lambda: [image_net("net1", 4)], batch, n_images=4, learnable=True,
              share=True)
    check(out, [False, False])
    assert sum(abs(g) for g in out["BatchedEngine"][2]) > 0  # gradients reach the house's t(1/4)s


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
