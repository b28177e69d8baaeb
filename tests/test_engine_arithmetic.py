"""Queries over neural integers evaluated on distributions (``gedi_nesy.arithmetic_plan``):
the same probabilities and gradients as DeepProbLog's ``ExactEngine`` on DeepProbLog's own
``addition.pl`` (N = 1, 2), the same as an enumeration of every world where ``ExactEngine``
cannot go (N = 4 in base 3), and programs outside the planner still evaluated exactly
(grounded, as before).  Fast, offline: tiny table networks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from problog.logic import Constant, Term, list2term
from problog.program import PrologString

from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()
from deepproblog.engines import ExactEngine  # noqa: E402
from deepproblog.model import Model  # noqa: E402
from deepproblog.network import Network  # noqa: E402
from deepproblog.query import Query  # noqa: E402

from gedi_core.errors import GediError  # noqa: E402
from gedi_nesy.arithmetic_plan import NotPlannable, clause_index, neural_ads, plan_query  # noqa: E402
from gedi_nesy.engine import BatchedEngine  # noqa: E402
from deepproblog_helpers import QueryList  # noqa: E402

TOL = 1e-5


class Table(nn.Module):
    """A network that is a table: input i -> softmax of row i."""

    def __init__(self, rows: int, k: int, seed: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(rows, k, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.w[x.long().view(-1)], -1)


def model_of(program: str, engine, k: int = 10, seed: int = 0, **engine_args) -> tuple[Model, Table]:
    module = Table(64, k, seed)
    net = Network(module, "mnist_net", batching=True)
    model = Model(program, [net], load=False)
    model.set_engine(ExactEngine(model) if engine is ExactEngine else BatchedEngine(model, **engine_args), cache=True)
    model.add_tensor_source("train", {(Constant(i),): torch.tensor(float(i)) for i in range(64)})
    return model, module


def image(i: int) -> Term:
    return Term("tensor", Term("train", Constant(i)))


def addition_query(n: int, label, first: int = 0) -> Query:
    """``multi_addition([p0..], [p(n)..], label)`` as DeepProbLog's MNISTOperator builds it."""
    slots = [Term(f"p{i}") for i in range(2 * n)]
    sub = {s: image(first + i) for i, s in enumerate(slots)}
    return Query(Term("multi_addition", list2term(slots[:n]), list2term(slots[n:]), label), sub)


def solved(model: Model, module: Table, queries: list[Query]) -> tuple[list[dict], torch.Tensor]:
    """Every query's answers and probabilities, and the gradient of sum -log p (first answers)."""
    module.w.grad = None
    results = model.solve(queries)
    loss = sum(-torch.log(next(iter(r.result.values()))) for r in results)
    loss.backward()
    return [{k: float(v) for k, v in r.result.items()} for r in results], module.w.grad.clone()


@pytest.fixture(scope="module")
def addition_pl() -> str:
    """DeepProbLog's own examples/MNIST/models/addition.pl, as installed."""
    import deepproblog

    return (Path(deepproblog.__file__).parent / "examples" / "MNIST" / "models" / "addition.pl").read_text()


@pytest.mark.parametrize("n", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_deepproblog_addition_matches_exact_engine(addition_pl, n):
    queries = [addition_query(n, Constant(s), first=k * 2 * n) for k, s in enumerate([3, 9, 11, 17] if n == 1
                                                                                       else [12, 44, 99, 150])]
    exact, exact_grad = solved(*model_of(addition_pl, ExactEngine), queries)
    model, module = model_of(addition_pl, BatchedEngine, arithmetic="always")
    planned, planned_grad = solved(model, module, queries)
    assert model.solver.stats["planned_shapes"] == len(queries)
    for a, b in zip(exact, planned):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < TOL for k in a)
    assert (exact_grad - planned_grad).abs().max() < TOL
    free = [addition_query(n, Constant(0), first=8).variable_output()]
    (exact_free,) = model_of(addition_pl, ExactEngine)[0].solve(free)
    (planned_free,) = model.solve(free)
    assert set(exact_free.result) == set(planned_free.result)  # every sum, and only possible ones
    assert max(abs(float(exact_free.result[k]) - float(planned_free.result[k])) for k in exact_free.result) < TOL


BASE3 = """nn(mnist_net, [X], Y, [0, 1, 2]) :: digit(X, Y).
number([], R, R).
number([H|T], Acc, R) :- digit(H, D), Acc2 is D + 3 * Acc, number(T, Acc2, R).
number(X, Y) :- number(X, 0, Y).
multi_addition(X, Y, Z) :- number(X, X2), number(Y, Y2), Z is X2 + Y2.
"""


@pytest.mark.slow
def test_long_numbers_match_an_enumeration_of_every_world():
    """N = 4 digits per number in base 3: 3^8 worlds enumerated by hand against the plan."""
    n, label = 4, 97
    model, module = model_of(BASE3, BatchedEngine, k=3)
    (result,) = model.solve([addition_query(n, Constant(label))])
    p = torch.softmax(module.w[: 2 * n].detach().double(), -1)
    total = 0.0
    for digits in itertools.product(range(3), repeat=2 * n):
        a = sum(d * 3 ** (n - 1 - i) for i, d in enumerate(digits[:n]))
        b = sum(d * 3 ** (n - 1 - i) for i, d in enumerate(digits[n:]))
        if a + b == label:
            total += math.prod(float(p[i, d]) for i, d in enumerate(digits))
    # auto: 3^8 worlds are few enough to ground; the answer is the same either way
    planned_model, _ = model_of(BASE3, BatchedEngine, k=3, arithmetic="always")
    (planned,) = planned_model.solve([addition_query(n, Constant(label))])
    assert planned_model.solver.stats["planned_shapes"] == 1 and model.solver.stats["planned_shapes"] == 0
    assert abs(float(next(iter(result.result.values()))) - total) < TOL
    assert abs(float(next(iter(planned.result.values()))) - total) < TOL


@pytest.mark.slow
def test_auto_plans_where_proofs_explode(addition_pl):
    """DeepProbLog's addition.pl: N = 2 is ground (10^4 worlds), N = 3 planned (10^6)."""
    for n, planned in ((2, 0), (3, 1)):
        model, _ = model_of(addition_pl, BatchedEngine)
        model.solve([addition_query(n, Constant(123))])
        assert model.solver.stats["planned_shapes"] == planned


def test_deepproblog_train_model_learns_at_n3(addition_pl):
    """DeepProbLog's own ``train_model`` over planned N = 3 queries: the loss goes down."""
    from deepproblog.dataset import DataLoader
    from deepproblog.train import train_model

    model, module = model_of(addition_pl, BatchedEngine)
    model.networks["mnist_net"].optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    truth = torch.randint(0, 10, (64,), generator=gen)
    queries = []
    for k in range(10):
        slots = list(range(6 * k % 60, 6 * k % 60 + 6))
        value = [int("".join(str(int(truth[i])) for i in slots[j:j + 3])) for j in (0, 3)]
        queries.append(addition_query(3, Constant(sum(value)), first=slots[0]))

    def loss() -> float:
        return sum(-math.log(max(float(next(iter(r.result.values()))), 1e-300)) for r in model.solve(queries))

    before = loss()
    train_model(model, DataLoader(QueryList(queries), 5, False), 20, log_iter=1000, profile=0)
    assert model.solver.stats["planned_shapes"] >= 1
    assert loss() < 0.5 * before


PROGRAMS = {
    "two clauses apply": "nn(mnist_net,[X],Y,[0,1,2]) :: digit(X,Y).\n"
                         "q(X,Y) :- digit(X,Y).\nq(X,Y) :- digit(X,A), Y is A + 1.\n",
    "one input twice": "nn(mnist_net,[X],Y,[0,1,2]) :: digit(X,Y).\nq(X,Z) :- digit(X,A), digit(X,B), Z is A + B.\n",
    "the integer picks a clause": "nn(mnist_net,[X],Y,[0,1,2]) :: digit(X,Y).\n"
                                  "f(0, zero).\nf(1, one).\nf(2, two).\nq(X,Z) :- digit(X,A), f(A,Z).\n",
    "negation": "nn(mnist_net,[X],Y,[0,1,2]) :: digit(X,Y).\nq(X,Z) :- digit(X,Z), \\+ digit(X,0).\n",
    "probabilistic fact": "nn(mnist_net,[X],Y,[0,1,2]) :: digit(X,Y).\n0.3 :: bias.\n"
                          "q(X,Z) :- digit(X,A), bias, Z is A + 1.\n",
}


@pytest.mark.parametrize("why", sorted(PROGRAMS))
def test_programs_outside_the_planner_are_ground_and_exact(why):
    program = PROGRAMS[why]
    parsed = list(PrologString(program))
    query = Term("q", Term("a"), Term("one") if why == "the integer picks a clause" else Constant(2))
    with pytest.raises(NotPlannable):
        plan_query(query, clause_index(parsed), neural_ads(parsed))
    sub = {Term("a"): image(0)}
    queries = [Query(query, sub)]
    exact, exact_grad = solved(*model_of(program, ExactEngine, k=3), queries)
    model, module = model_of(program, BatchedEngine, k=3, arithmetic="always")
    batched, batched_grad = solved(model, module, queries)
    assert model.solver.stats["planned_shapes"] == 0
    assert all(abs(exact[0][k] - batched[0][k]) < TOL for k in exact[0])
    assert (exact_grad - batched_grad).abs().max() < TOL


EVENTS = """nn(mnist_net,[X],Y,[0,1,2,3]) :: digit(X,Y).
less(X,Y) :- digit(X,A), digit(Y,B), A < B.
prod(X,Y,Z) :- digit(X,A), digit(Y,B), Z is A * B - 1.
three(X) :- digit(X,A), A = 3.
both(X,Y,Z) :- digit(X,A), A >= 1, digit(Y,B), Z is 2 * B.
"""


@pytest.mark.parametrize("query", ["less(a,b)", "prod(a,b,5)", "prod(a,b,Z)", "three(a)", "both(a,b,Z)",
                                   "both(a,b,4)", "prod(a,b,7)"])
def test_comparisons_products_and_events_match_exact_engine(query):
    term = Term.from_string(query)
    sub = {Term("a"): image(3), Term("b"): image(4)}
    queries = [Query(term, sub)]
    exact, _ = solved_any(*model_of(EVENTS, ExactEngine, k=4), queries)
    model, module = model_of(EVENTS, BatchedEngine, k=4, arithmetic="always")
    batched, _ = solved_any(model, module, queries)
    assert model.solver.stats["planned_shapes"] == 1
    assert exact[0].keys() == batched[0].keys()
    assert all(abs(exact[0][k] - batched[0][k]) < TOL for k in exact[0])


def solved_any(model: Model, module: Table, queries: list[Query]) -> tuple[list[dict], None]:
    """Answers and probabilities (no gradient: some answers are impossible)."""
    return [{k: float(v) for k, v in r.result.items()} for r in model.solve(queries)], None


def test_arithmetic_mode_is_checked(addition_pl):
    with pytest.raises(GediError, match="arithmetic 'sometimes'"):
        model_of(addition_pl, BatchedEngine, arithmetic="sometimes")
