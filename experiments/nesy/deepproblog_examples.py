"""DeepProbLog's shipped example programs on small synthetic inputs, and their throughput with
``ExactEngine`` and ``BatchedEngine``.

Each :class:`Example` is one of ``deepproblog/examples``' programs (MNIST addition and noisy
addition, Coins, HWF, Forth sort/add/WAP, Poker) with tiny networks (linear + softmax on random
"images", or on fixed random codes of integer and atom inputs) and a few queries in the shape the
example's data set writes them.  ``tests/test_deepproblog_examples.py`` checks that both engines
give the same probabilities and gradients on them; run as a script, this prints each program's
training throughput (DeepProbLog's ``TrainObject.get_loss``: solve + cross-entropy backward, the
queries repeated, circuits compiled before timing) with both engines, one run:

    OMP_NUM_THREADS=1 python -m experiments.nesy.deepproblog_examples --seconds 3

CLUTRR's program is written for DeepProbLog's ApproximateEngine (SWI-Prolog lambdas,
``findall``/``maplist`` over ``>>``), which ExactEngine does not run: it is not among them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from problog.logic import Constant, Term, list2term

from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()
import deepproblog.examples  # noqa: E402
from deepproblog.engines import ExactEngine  # noqa: E402

from deepproblog.model import Model  # noqa: E402
from deepproblog.network import Network  # noqa: E402
from deepproblog.optimizer import SGD  # noqa: E402
from deepproblog.query import Query  # noqa: E402
from deepproblog.train import TrainObject  # noqa: E402

from gedi_nesy.engine import BatchedEngine  # noqa: E402

EXAMPLES = Path(deepproblog.examples.__file__).parent
DIM = 6  # size of the synthetic "images" and codes


class TermNet(nn.Module):
    """A tiny network on DeepProbLog's non-tensor inputs (integers, atoms): each input term
    is embedded by a fixed random vector, the vectors are concatenated, then linear + softmax
    (or, with ``softmax=False``, tanh: a deterministic nn/3 embedding)."""

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
    """Linear + softmax on the synthetic images, batched."""
    return Network(nn.Sequential(nn.Linear(DIM, n_out), nn.Softmax(-1)), name, batching=True)


def images(n: int) -> dict:
    """A tensor source of ``n`` random images ``tensor(img(i))``."""
    g = torch.Generator().manual_seed(123)
    return {(Constant(i),): torch.randn(DIM, generator=g) for i in range(n)}


def img(i: int) -> Term:
    return Term("tensor", Term("img", Constant(i)))


def ints(*xs: int) -> Term:
    return list2term([Constant(x) for x in xs])


def imgs(*idx: int) -> Term:
    return list2term([img(i) for i in idx])


@dataclass
class Example:
    """One example program with its synthetic networks and queries.  ``fallback``: for each
    query, whether the batched engine is expected to evaluate it as DeepProbLog does (nn/3);
    ``share``: the batched engine reuses ExactEngine's circuits (programs slow to ground)."""

    name: str
    program: Path
    networks: Callable[[], list[Network]]
    queries: list[Query]
    fallback: list[bool]
    n_images: int = 0
    learnable: bool = False
    share: bool = False
    notes: list[str] = field(default_factory=list)


def wap_networks() -> list[Network]:
    return [Network(TermNet(1, DIM, softmax=False), "rnn"), Network(EmbeddingNet(6), "nn_permute"),
            Network(EmbeddingNet(4), "nn_op1"), Network(EmbeddingNet(2), "nn_swap"), Network(EmbeddingNet(4), "nn_op2")]


def examples() -> dict[str, Example]:
    """The example programs, by name."""
    q = Query
    out = [
        Example("mnist_addition", EXAMPLES / "MNIST/models/addition.pl", lambda: [image_net("mnist_net", 10)],
                [q(Term("addition", img(0), img(1), Constant(7))),
                 q(Term("multi_addition", imgs(2), imgs(3), Constant(9))),
                 q(Term("multi_addition", imgs(0, 1), imgs(2, 3), Constant(44)))], [False] * 3, n_images=4),
        Example("mnist_noisy_addition", EXAMPLES / "MNIST/models/noisy_addition.pl",
                lambda: [image_net("mnist_net", 10)],
                [q(Term("addition_noisy", img(0), img(1), Constant(7))),
                 q(Term("addition", img(2), img(3), Constant(5)))],
                [False] * 2, n_images=4, learnable=True),
        Example("coins", EXAMPLES / "Coins/model.pl", lambda: [image_net("net1", 2), image_net("net2", 2)],
                [q(Term("game", img(0), Term("win"))), q(Term("game", img(1), Term("loss")))], [False] * 2, n_images=2),
        Example("hwf", EXAMPLES / "HWF/model.pl", lambda: [image_net("net1", 10), image_net("net2", 4)],
                [q(Term("expression", imgs(0, 1, 2), Constant(6))), q(Term("expression", imgs(3, 4, 5), Constant(2)))],
                [False] * 2, n_images=6),
        Example("forth_sort", EXAMPLES / "Forth/Sort/compare.pl", lambda: [Network(TermNet(2, 2), "swap_net")],
                [q(Term("forth_sort", ints(3, 1, 2), ints(1, 2, 3))),
                 q(Term("forth_sort", ints(2, 0, 1, 3), ints(0, 1, 2, 3)))],
                [False] * 2),
        Example("forth_add", EXAMPLES / "Forth/Add/choose.pl",
                lambda: [Network(TermNet(3, 10), "neural1"), Network(TermNet(3, 2), "neural2")],
                [q(Term("add", ints(2, 5), ints(3, 7), Constant(0), ints(0, 6, 2))),
                 q(Term("add", ints(9), ints(4), Constant(1), ints(1, 4)))], [False] * 2),
        Example("forth_wap", EXAMPLES / "Forth/WAP/wap.pl", wap_networks,
                [q(Term("wap", Term("'some text'"), Constant(2), Constant(3), Constant(4), Constant(9))),
                 q(Term("wap", Term("'other text'"), Constant(6), Constant(2), Constant(1), Constant(4)))], [True] * 2),
        Example("poker", EXAMPLES / "Poker/model.pl", lambda: [image_net("net1", 4)],
                [q(Term("game", imgs(0, 1, 2, 3), Term("win"))), q(Term("game", imgs(3, 2, 1, 0), Term("draw")))],
                [False] * 2, n_images=4, learnable=True, share=True),
    ]
    return {e.name: e for e in out}


def build(example: Example, engine: type, circuits: dict | None = None) -> tuple[Model, list[Network]]:
    """The example's model with ``engine`` (``cache=True``), fresh seeded networks and its
    images; ``circuits``: DeepProbLog circuit cache to start from."""
    torch.manual_seed(0)
    nets = example.networks()
    model = Model(str(example.program), nets)
    if example.learnable:
        model.optimizer = SGD(model, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # DeepProbLog prints "Caching ACs"
        model.set_engine(engine(model), cache=True)
    if circuits is not None:
        model.solver.cache.cache_dict = circuits
    model.add_tensor_source("img", images(example.n_images))
    return model, nets


def probabilities_and_gradients(example: Example) -> dict:
    """Per engine (by name): the queries' probabilities, DeepProbLog's cross-entropy
    gradients of all network parameters and of the t(_) parameters (``TrainObject.get_loss``),
    and (batched engine) which queries took DeepProbLog's evaluation."""
    out, circuits = {}, None
    for engine in (ExactEngine, BatchedEngine):
        model, nets = build(example, engine, circuits if example.share else None)
        circuits = model.solver.cache.cache_dict
        batch = example.queries
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


def throughput(example: Example, engine: type, seconds: float) -> float:
    """Training queries per second (solve + loss backward, circuits compiled before)."""
    model, _ = build(example, engine)
    trainer = TrainObject(model)
    loss = model.solver.semiring.cross_entropy
    trainer.get_loss(example.queries, loss)  # compile
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.optimizer.zero_grad()
        trainer.get_loss(example.queries * 8, loss)
        n += 8 * len(example.queries)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed training per program and engine")
    ap.add_argument("--examples", nargs="+", default=None, help="names (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    chosen = examples()
    names = args.examples or list(chosen)
    print("| program | queries | batched path | ExactEngine q/s | BatchedEngine q/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name in names:
        ex = chosen[name]
        exact, batched = throughput(ex, ExactEngine, args.seconds), throughput(ex, BatchedEngine, args.seconds)
        path = "DeepProbLog's evaluation (nn/3)" if all(ex.fallback) else "KLay"
        print(f"| {name} | {len(ex.queries)} x 8 | {path} | {exact:.1f} | {batched:.1f} | {batched / exact:.1f}x |",
              flush=True)


if __name__ == "__main__":
    main()
