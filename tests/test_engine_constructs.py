"""Constructs of DeepProbLog programs on the batched engine: ``evidence/1,2`` conditioned on as
ProbLog does (``P(q | e)``, where DeepProbLog's ``ExactEngine`` drops it), on the KLay path and
on DeepProbLog's evaluation path alike; an nn/3 network sending only its own queries to
DeepProbLog's evaluation; tensor-valued probabilities solved twice with the cache on; neural
predicates DeepProbLog does not take named in one line (fast, offline)."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn
from problog import get_evaluatable
from problog.logic import Constant, Term
from problog.program import PrologString

from gedi_nesy.deepproblog_import import import_deepproblog  # noqa: E402

import_deepproblog()
from deepproblog.engines import ExactEngine  # noqa: E402

from deepproblog.model import Model
from deepproblog.network import Network
from deepproblog.query import Query

from gedi_nesy.engine import BatchedEngine, is_batched

TOL = 1e-5
RULES = """{burglary} :: burglary.
0.2 :: earthquake.
alarm :- burglary.
alarm :- earthquake.
calls(X) :- alarm, t(X, 1).
calls(X) :- t(X, 2).
evidence(calls(a)).
evidence(calls(b), false).
"""
NEURAL = "nn(tri_net, [X], Y, [0, 1, 2]) :: t(X, Y).\n"
IMAGES = {"a": 0, "b": 1, "c": 2}


def tiny_model(engine, burglary: str) -> tuple[Model, nn.Module]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1))
    net = Network(module, "tri_net", batching=True)
    model = Model(NEURAL + RULES.format(burglary=burglary), [net], load=False)
    model.set_engine(engine(model), cache=True)
    model.add_tensor_source("img", {(Constant(i),): torch.randn(4, generator=torch.Generator().manual_seed(i))
                                    for i in IMAGES.values()})
    return model, module


def queries() -> list[Query]:
    sub = {Term(k): Term("tensor", Term("img", Constant(i))) for k, i in IMAGES.items()}
    return [Query(Term("burglary"), sub), Query(Term("alarm"), sub), Query(Term("calls", Term("c")), sub),
            Query(Term("calls", Term("a")), sub)]


def problog_probabilities(model: Model, module: nn.Module, burglary: str) -> list[float]:
    """ProbLog's own conditional inference on the program with the network's outputs written
    in as constant annotated disjunctions."""
    lines = [RULES.format(burglary=burglary.removeprefix("t(").removesuffix(")"))]
    for name, i in IMAGES.items():
        p = module(model.get_tensor(Term("tensor", Term("img", Constant(i))))).tolist()
        lines.append("; ".join(f"{v!r} :: t({name}, {j})" for j, v in enumerate(p)) + ".")
    lines += [f"query({t})." for t in ("burglary", "alarm", "calls(c)", "calls(a)")]
    result = get_evaluatable().create_from(PrologString("\n".join(lines))).evaluate()
    return [result[Term("burglary")], result[Term("alarm")], result[Term("calls", Term("c"))],
            result[Term("calls", Term("a"))]]


@pytest.mark.parametrize("burglary", ["0.3", "t(0.3)"])  # a constant; a learnable parameter
def test_evidence_conditions_queries_as_problog_does(burglary):
    model, module = tiny_model(BatchedEngine, burglary)
    assert is_batched(model)
    batch = queries()
    results = model.solve(batch)
    got = [float(r.result[q.substitute().query]) for r, q in zip(results, batch)]
    with torch.no_grad():
        want = problog_probabilities(model, module, burglary)
    assert got == pytest.approx(want, abs=TOL) and got[3] == pytest.approx(1.0, abs=TOL)
    assert all(model.solver.shape(q).fallback is None for q in batch)
    # DeepProbLog's ExactEngine grounds the query alone: the evidence never reaches the circuit
    exact, _ = tiny_model(ExactEngine, burglary)
    unconditioned = [float(r.result[q.substitute().query]) for r, q in zip(exact.solve(batch), batch)]
    assert abs(unconditioned[0] - want[0]) > 0.05 and unconditioned[3] < 0.9


def test_evidence_gradients_agree_with_deepproblogs_evaluation_of_the_same_circuit():
    model, module = tiny_model(BatchedEngine, "0.3")
    batch = queries()[:3]
    grads, values = [], []
    for klay in (True, False):
        module.zero_grad()
        if klay:
            probs = [r.result[q.substitute().query] for r, q in zip(model.solve(batch), batch)]
        else:  # DeepProbLog's evaluation of the evidence-conditioned circuit
            probs = [model.solver.cache.get(q).evaluate(model, q.substitution).result[q.substitute().query]
                     for q in batch]
        values.append([float(p) for p in probs])
        sum(torch.log(p) for p in probs).backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
    assert values[0] == pytest.approx(values[1], abs=TOL)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=TOL, rtol=1e-4)


DET = """nn(dummy1, [X], Y, [a, b, c]) :: net1(X, Y).
nn(dummy3, [X], Y) :: net3(X, Y).
test1(X1, Y1, X2, Y2) :- net1(X1, Y1), net1(X2, Y2).
test3(X, Y) :- net3(X, Y).
"""


def test_an_nn3_network_sends_only_its_own_queries_to_deepproblogs_evaluation():
    from deepproblog.utils.standard_networks import DummyNet

    values1 = {Term("i1"): [0.8, 0.15, 0.05], Term("i2"): [0.2, 0.3, 0.5]}
    values3 = {Term("i1"): [1.0, 2.0], Term("i2"): [-1.0, 0.0]}
    model = Model(DET, [Network(DummyNet(values1), "dummy1"), Network(DummyNet(values3), "dummy3")], load=False)
    model.set_engine(BatchedEngine(model), cache=True)
    from problog.logic import Var

    q1 = Query(Term("test1", Term("i1"), Term("a"), Term("i2"), Term("b")))
    q3 = Query(Term("test3", Term("i2"), Var("X")))
    r1, r3 = model.solve([q1, q3])
    assert float(r1.result[q1.query]) == pytest.approx(0.24)
    assert model.get_tensor(list(r3.result)[0].args[1]).tolist() == [-1.0, 0.0]
    assert model.solver.shape(q1).fallback is None and "deterministic" in model.solver.shape(q3).fallback


def test_tensor_probabilities_stay_right_when_a_cached_query_is_solved_again():
    """DeepProbLog's tensor-valued probability (its test_builtin.py::test_tensor_index) with the
    circuit cache on: ExactEngine fails the second time (the cached circuit names tensors of a
    cleared store); the batched engine grounds such a circuit again for each solve."""
    from problog.logic import Var

    program = "P :: a(I) :- list_to_tensor([0.25,0.1,0.4,0.15], T), between(0,3,I), tensor_index(T,[I],P).\n"
    model = Model(program, [], load=False)
    model.set_engine(BatchedEngine(model), cache=True)
    for _ in range(2):
        (r,) = model.solve([Query(Term("a", Var("X")))])
        assert {int(k.args[0]): float(v) for k, v in r.result.items()} == pytest.approx(
            {0: 0.25, 1: 0.1, 2: 0.4, 3: 0.15})
    exact = Model(program, [], load=False)
    exact.set_engine(ExactEngine(exact), cache=True)
    exact.solve([Query(Term("a", Var("X")))])
    with pytest.raises(KeyError):
        exact.solve([Query(Term("a", Var("X")))])


@pytest.mark.parametrize("clause, message", [
    ("nn(net, [X], Y, [0, 1], extra) :: d(X, Y).", "nn/5; DeepProbLog takes nn/2, nn/3 and nn/4"),
    ("nn(other, [X], Y, [0, 1]) :: d(X, Y).", "names network 'other', which the model does not have"),
])
def test_a_neural_predicate_deepproblog_does_not_take_is_one_error_line(clause, message):
    from gedi_core.errors import GediError

    model = Model(clause + "\n", [Network(nn.Linear(2, 2), "net")], load=False)
    with pytest.raises(GediError, match=message) as err:
        model.set_engine(BatchedEngine(model), cache=True)
    assert "\n" not in str(err.value) and "character" in str(err.value)


def test_top_k_networks_are_evaluated_as_deepproblog_does():
    """A top-k network (``Network(..., k=2)``) is read while grounding, so the model's queries
    take DeepProbLog's evaluation (ground again per solve without the cache, as ExactEngine):
    ExactEngine's probabilities in eval mode (top-k picks the k best outputs)."""
    program = "nn(net, [X], Y, [0, 1, 2, 3]) :: digit(X, Y).\nadd(X, Y, Z) :- digit(X, A), digit(Y, B), Z is A + B.\n"
    probs = {}
    for engine in (ExactEngine, BatchedEngine):
        torch.manual_seed(0)
        net = Network(nn.Sequential(nn.Linear(3, 4), nn.Softmax(-1)), "net", k=2, batching=True)
        model = Model(program, [net], load=False)
        model.set_engine(engine(model), cache=False)
        g = torch.Generator().manual_seed(0)
        model.add_tensor_source("img", {(Constant(i),): torch.randn(3, generator=g) for i in range(2)})
        model.eval()
        batch = [Query(Term("add", Term("tensor", Term("img", Constant(0))), Term("tensor", Term("img", Constant(1))),
                            Constant(s))) for s in range(7)]
        probs[engine] = [float(r.result.get(q.query, 0.0)) for _ in range(2)
                         for r, q in zip(model.solve(batch), batch)]  # solved twice
    assert probs[BatchedEngine] == pytest.approx(probs[ExactEngine], abs=TOL)
    assert sum(p > 0 for p in probs[ExactEngine]) >= 4
    assert all("top-k" in model.solver.shape(q).fallback for q in batch)


def test_log_probs_of_a_batch_mixing_both_paths():
    """``BatchedSolver.log_probs`` (the project's training loop) on a batch with a KLay query
    and a query DeepProbLog evaluates (a tensor-valued probability): log of ``solve``'s values."""
    program = NEURAL + "P :: heavy(X) :- list_to_tensor([0.3], T), tensor_index(T, [0], P), t(X, 1).\n"
    torch.manual_seed(0)
    net = Network(nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1)), "tri_net", batching=True)
    model = Model(program, [net], load=False)
    model.set_engine(BatchedEngine(model), cache=True)
    model.add_tensor_source("img", {(Constant(0),): torch.ones(4)})
    sub = {Term("a"): Term("tensor", Term("img", Constant(0)))}
    batch = [Query(Term("t", Term("a"), Constant(2)), sub), Query(Term("heavy", Term("a")), sub)]
    want = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(batch), batch)]
    logp, decided = model.solver.log_probs(batch)
    assert torch.exp(logp).tolist() == pytest.approx(want, abs=TOL) and decided == [False, False]
    assert [model.solver.shape(q).fallback is not None for q in batch] == [False, True]
