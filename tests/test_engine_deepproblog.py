"""gedi_nesy.engine.BatchedEngine inside DeepProbLog's own API: ``Model.set_engine``,
``train_model``, ``model.solve``, ``get_confusion_matrix``, free answer variables, negative
and soft targets, ``save_state``/``load_state``, ``eval``/``train``; and the numerics of
``log1mexp``, programs that define a DeepProbLog tensor builtin's name (fast, offline)."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
import torch.nn as nn

torch.set_num_threads(1)

from gedi_nesy.deepproblog_import import import_deepproblog  # noqa: E402

import_deepproblog()
from deepproblog.engines import ExactEngine  # noqa: E402

from deepproblog.dataset import DataLoader  # noqa: E402
from deepproblog.evaluate import get_confusion_matrix  # noqa: E402
from deepproblog.examples.MNIST.network import MNIST_Net  # noqa: E402
from deepproblog.model import Model  # noqa: E402
from deepproblog.network import Network  # noqa: E402
from deepproblog.query import Query  # noqa: E402
from deepproblog.semiring import Result  # noqa: E402
from deepproblog.semiring.graph_semiring import GraphSemiring  # noqa: E402
from deepproblog.train import TrainObject, train_model  # noqa: E402
from problog.logic import Constant, Term, Var  # noqa: E402

from deepproblog_helpers import QueryList  # noqa: E402
from gedi_nesy.data import ImagePool, embedded_digits, image_term  # noqa: E402
from gedi_nesy.circuits import log1mexp  # noqa: E402
from gedi_nesy.engine import BatchedEngine, is_batched, set_engine  # noqa: E402
from gedi_nesy.semiring import cross_entropy_and_grad as _cross_entropy, mse_and_grad as _mse  # noqa: E402
from gedi_nesy.losses import nesy_loss_log  # noqa: E402

TOL = 1e-5
# DeepProbLog's examples/MNIST/models/addition.pl (the single-digit part)
ADDITION = """nn(mnist_net,[X],Y,[0,1,2,3,4,5,6,7,8,9]) :: digit(X,Y).
addition(X,Y,Z) :- digit(X,X2), digit(Y,Y2), Z is X2+Y2.
"""
SUMS = (7, 8, 9)  # few labels: few query shapes to compile
_CIRCUITS: dict = {}  # DeepProbLog's compiled circuits of ADDITION, shared by the tests' models


# ----------------------------------------------------------------------------- data and models
def addition_queries(labels: torch.Tensor, n: int, source: str, seed: int, p: float = 1.0) -> list[Query]:
    """``n`` queries ``addition(p0_0, p1_0, Sum)`` in the shape of DeepProbLog's
    ``MNISTOperator.to_query``, on pairs of images whose digits sum to one of ``SUMS``."""
    rng = random.Random(seed)
    idx = list(range(len(labels)))
    rng.shuffle(idx)
    out: list[Query] = []
    for a, b in zip(idx[0::2], idx[1::2]):
        total = int(labels[a] + labels[b])
        if total in SUMS:
            subs = {Term("p0_0"): image_term(source, a), Term("p1_0"): image_term(source, b)}
            out.append(Query(Term("addition", Term("p0_0"), Term("p1_0"), Constant(total)), subs, p=p))
        if len(out) == n:
            break
    return out


@pytest.fixture(scope="module")
def pools():
    return embedded_digits(0.2, seed=0)


@pytest.fixture(scope="module")
def init_state():
    torch.manual_seed(0)
    return copy.deepcopy(MNIST_Net().state_dict())


def mnist_model(pools, engine: str, state: dict, program: str = ADDITION, module: nn.Module | None = None) -> Model:
    """DeepProbLog's MNIST-addition model (``MNIST_Net``, Adam) on the embedded digits,
    with ``ExactEngine`` or ``BatchedEngine`` set through ``Model.set_engine``."""
    if module is None:
        module = MNIST_Net()
        module.load_state_dict(state)
    net = Network(module, "mnist_net", batching=True)
    net.optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    model = Model(program, [net], load=False)
    model.set_engine((BatchedEngine if engine == "batched" else ExactEngine)(model), cache=True)
    model.add_tensor_source("train", ImagePool(pools.train_x, "train"))
    model.add_tensor_source("test", ImagePool(pools.test_x, "test"))
    if program == ADDITION:
        model.solver.cache.cache_dict = _CIRCUITS
    assert is_batched(model) == (engine == "batched")
    return model


def params(model: Model) -> list[torch.Tensor]:
    return [p for net in model.networks.values() for p in net.parameters()]


def loss_and_grads(model: Model, batch: list[Query], with_negatives: bool = False) -> tuple[float, torch.Tensor]:
    """DeepProbLog's own loss of one batch (``TrainObject.get_loss``, cross-entropy, one
    backward per query) and the networks' gradient."""
    model.optimizer.zero_grad()
    trainer = TrainObject(model)
    get_loss = trainer.get_loss_with_negatives if with_negatives else trainer.get_loss
    loss = get_loss(batch, model.solver.semiring.cross_entropy)
    return loss, torch.cat([p.grad.flatten() for p in params(model)])


def close(a, b, tol: float = TOL) -> bool:
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=1e-4)


# ----------------------------------------------------------------------------- engine through DeepProbLog's API
def test_deepproblog_set_engine_installs_the_batched_solver(pools, init_state):
    model = mnist_model(pools, "batched", init_state)
    assert is_batched(model) and model.solver.cache.cache  # cache=True passed through
    assert model.get_hyperparameters()["solver"]["engine"] == {"type": "BatchedEngine"}
    q = addition_queries(pools.train_y, 1, "train", 0)[0]
    (result,) = model.solve([q])
    assert list(result.result) == [q.substitute().query] and 0.0 < float(result.result[q.substitute().query]) < 1.0
    assert isinstance(result.ground_time, float) and isinstance(result.compile_time, float)
    assert isinstance(result.eval_time, float)
    assert not is_batched(mnist_model(pools, "exact", init_state))
    assert is_batched(model) and not any(k.startswith("_gedi") for k in vars(q))  # nothing hung on the query


def test_probabilities_and_gradients_agree_with_the_exact_engine(pools, init_state):
    exact, batched = mnist_model(pools, "exact", init_state), mnist_model(pools, "batched", init_state)
    queries = addition_queries(pools.train_y, 9, "train", 0)
    for start in range(0, 9, 3):  # three batches
        batch = queries[start : start + 3]
        pe = [float(r.result[q.substitute().query]) for r, q in zip(exact.solve(batch), batch)]
        pb = [float(r.result[q.substitute().query]) for r, q in zip(batched.solve(batch), batch)]
        assert close(pe, pb), (pe, pb)
        (le, ge), (lb, gb) = loss_and_grads(exact, batch), loss_and_grads(batched, batch)
        assert le == pytest.approx(lb, abs=TOL) and gb.abs().sum() > 0
        assert close(ge, gb), (ge - gb).abs().max()


def test_negative_and_soft_targets_agree_with_the_exact_engine(pools, init_state):
    exact, batched = mnist_model(pools, "exact", init_state), mnist_model(pools, "batched", init_state)
    queries = addition_queries(pools.train_y, 4, "train", 1)
    batch = [Query(q.query, q.substitution, p=p) for q, p in zip(queries, (0.0, 0.3, 1.0, 0.0))]
    (le, ge), (lb, gb) = loss_and_grads(exact, batch), loss_and_grads(batched, batch)
    assert le == pytest.approx(lb, abs=TOL) and close(ge, gb)
    # DeepProbLog's training with negatives: every other answer of each query as a false example
    (le, ge), (lb, gb) = loss_and_grads(exact, queries[:1], True), loss_and_grads(batched, queries[:1], True)
    assert le == pytest.approx(lb, abs=TOL) and close(ge, gb)


def test_train_model_runs_with_the_batched_engine_as_with_the_exact_engine(pools, init_state):
    queries = addition_queries(pools.train_y, 9, "train", 2)
    logs = {}
    for engine in ("exact", "batched"):
        model = mnist_model(pools, engine, init_state)
        trainer = train_model(model, DataLoader(QueryList(queries), 3, False), 1, log_iter=1)
        assert isinstance(trainer, TrainObject) and trainer.i == 4  # three iterations
        logs[engine] = trainer.logger
    assert logs["exact"].get_attribute("loss") == pytest.approx(logs["batched"].get_attribute("loss"), abs=1e-4)
    assert len(logs["batched"].get_attribute("loss")) == 3
    assert all(math.isfinite(t) for t in logs["batched"].get_attribute("ground_time"))


@pytest.fixture(scope="module")
def free_answers(pools, init_state):
    """Three test queries with a free answer variable, ExactEngine's results for them and a
    batched model sharing its circuits (the exact engine takes ~0.5 s per such query)."""
    exact, batched = mnist_model(pools, "exact", init_state), mnist_model(pools, "batched", init_state)
    queries = addition_queries(pools.test_y, 3, "test", 4)
    exact.eval()
    results = [exact.solve([q.variable_output()])[0] for q in queries]
    return queries, results, batched


class Replay:
    """Stands in for a model in ``get_confusion_matrix``: gives recorded results in order."""

    def __init__(self, results: list[Result]) -> None:
        self.results = iter(results)

    def eval(self) -> None:
        pass

    def solve(self, batch: list[Query]) -> list[Result]:
        return [next(self.results)]


def test_free_answer_variable_gives_every_answer(free_answers):
    queries, exact_results, batched = free_answers
    batch = [q.variable_output() for q in queries]
    for re, rb in zip(exact_results, batched.solve(batch)):
        assert list(rb.result) == list(re.result) and len(rb.result) == 19  # sums 0..18
        assert close([float(v) for v in re.result.values()], [float(v) for v in rb.result.values()])
        assert sum(float(v) for v in rb.result.values()) == pytest.approx(1.0, abs=1e-5)


def test_confusion_matrix_equals_the_exact_engines(free_answers):
    queries, exact_results, batched = free_answers
    want = get_confusion_matrix(Replay(exact_results), QueryList(queries))
    got = get_confusion_matrix(batched, QueryList(queries))
    assert (got.classes, got.matrix.tolist()) == (want.classes, want.matrix.tolist()) and got.matrix.sum() == 3


def test_save_load_state_and_eval_train_modes(pools, init_state, tmp_path):
    torch.manual_seed(5)
    module = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10),
                           nn.Softmax(-1))
    model = mnist_model(pools, "batched", init_state, module=module)
    queries = addition_queries(pools.train_y, 3, "train", 5)
    model.eval()
    assert not module.training
    before = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(queries), queries)]
    model.save_state(tmp_path / "model.mdl")
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5)
    model.load_state(tmp_path / "model.mdl")
    after = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(queries), queries)]
    assert after == pytest.approx(before, abs=1e-7)
    set_engine(model, "exact")  # the same network in eval mode, DeepProbLog's evaluation
    exact = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(queries), queries)]
    assert close(exact, before)
    set_engine(model, "batched")
    model.train()
    assert module.training and is_batched(model)


def test_losses_of_part_of_a_batch_reach_the_networks(pools, init_state):
    """DeepProbLog's per-query losses are sent through a batch's graph in one pass; when only
    some of the batch's queries get a loss, their gradient still arrives (before the next
    solve, before the optimizer's step, or on flush_gradients)."""
    exact, batched = mnist_model(pools, "exact", init_state), mnist_model(pools, "batched", init_state)
    batch = addition_queries(pools.train_y, 4, "train", 6)
    _, want = loss_and_grads(exact, batch[:2])
    for flush in ("flush_gradients", "step"):
        batched.optimizer.zero_grad()
        results = batched.solve(batch)
        for r, q in zip(results[:2], batch[:2]):
            batched.solver.semiring.cross_entropy(r, q.p, weight=0.5, q=q.substitute().query)
        if flush == "step":
            net = batched.networks["mnist_net"]
            lr = net.optimizer.param_groups[0]["lr"]
            net.optimizer.param_groups[0]["lr"] = 0.0  # a step that changes nothing
            batched.optimizer.step()
            net.optimizer.param_groups[0]["lr"] = lr
        else:
            batched.solver.flush_gradients()
        got = torch.cat([p.grad.flatten() for p in params(batched)])
        assert close(want, got), (flush, (want - got).abs().max())


MISC = """nn(tri_net, [X], Y, [0, 1, 2]) :: t(X, Y).
0.3 :: coin.
0.2 :: col(red); 0.5 :: col(blue).
notwo(X) :- \\+ t(X, 2), coin.
bigger(X, Y) :- t(X, A), t(Y, B), A > B.
painted(X, C) :- t(X, 1), col(C).
painted(X, none) :- t(X, 0), \\+ col(blue).
"""


@pytest.mark.parametrize("cache", [True, False])
def test_free_variables_negation_and_constant_facts_as_the_exact_engine(cache):
    """Answers of a free variable mixing networks, negation and constant (annotated) facts,
    with or without DeepProbLog's circuit cache: ExactEngine's answers, probabilities, value
    types (floats where no network is involved) and DeepProbLog's loss gradients."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1))
    images = {(Constant(i),): torch.randn(4, generator=torch.Generator().manual_seed(i)) for i in range(5)}
    img = {Term("a"): Term("tensor", Term("t", Constant(0))), Term("b"): Term("tensor", Term("t", Constant(1)))}
    queries = [Query(Term("bigger", Term("a"), Term("b")), img, p=0.3),
               Query(Term("painted", Term("a"), Var("C")), img),
               Query(Term("col", Var("C"))), Query(Term("notwo", Term("b")), img, p=0.0)]
    out = {}
    for engine in (ExactEngine, BatchedEngine):
        net = Network(module, "tri_net", batching=True)
        net.optimizer = torch.optim.SGD(module.parameters(), lr=0.0)
        model = Model(MISC, [net], load=False)
        model.set_engine(engine(model), cache=cache)
        model.add_tensor_source("t", images)
        assert is_batched(model) == (engine is BatchedEngine)
        answers = [{k: (isinstance(v, float), float(v)) for k, v in r.result.items()} for r in model.solve(queries)]
        batch = [queries[0], queries[3]]
        out[engine] = (answers, loss_and_grads(model, batch))
    (ae, (le, ge)), (ab, (lb, gb)) = out[ExactEngine], out[BatchedEngine]
    assert [list(a) for a in ab] == [list(a) for a in ae] and len(ab[1]) == 3  # painted: red, blue, none
    for a, b in zip(ae, ab):
        assert [t for t, _ in a.values()] == [t for t, _ in b.values()]
        assert close([v for _, v in a.values()], [v for _, v in b.values()])
    assert le == pytest.approx(lb, abs=TOL) and close(ge, gb)


# ----------------------------------------------------------------------------- numerics
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


@pytest.mark.parametrize("p", [0.0, 1e-30, 1e-9, 0.3, 0.5, 1 - 1e-7, 1.0, 1.0 + 1e-7, -1e-9])
@pytest.mark.parametrize("target", [0.0, 0.3, 1.0])
def test_batched_losses_follow_deepproblogs_loss_functions(p, target):
    """The batched solver's cross_entropy/mse give DeepProbLog's loss and gradient (clamps
    included) for one probability: guards the float version against DeepProbLog's."""
    for loss_fn, ours in ((GraphSemiring.cross_entropy, _cross_entropy), (GraphSemiring.mse, _mse)):
        t = torch.tensor(p, dtype=torch.float64, requires_grad=True)
        want = loss_fn(Result({Term("q"): t}, None), target, 0.5, q=Term("q"))
        value, grad = ours(p, target)
        assert 0.5 * value == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert 0.5 * grad == pytest.approx(float(t.grad), rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- DeepProbLog's builtin names
BUILTIN_NAMES = """nn(mnist_net,[X],Y,[0,1,2,3,4,5,6,7,8,9]) :: digit(X,Y).
add(X,Y,Z) :- digit(X,A), digit(Y,B), Z is A+B.
max(X,Y) :- digit(X,Y).
both(X,Y,Z) :- add(X,Y,Z), max(X,D), D > 2.
"""


def test_a_program_may_define_a_tensor_builtins_name(pools, init_state):
    """``add/3`` and ``max/2`` are DeepProbLog tensor builtins: the program's definitions win
    (DeepProbLog alone runs both and fails: Term + Term)."""
    q0 = addition_queries(pools.train_y, 2, "train", 7)
    queries = [Query(Term(f, *q.query.args), q.substitution) for q in q0 for f in ("add", "both")]
    probs, circuits = {}, None
    for engine in ("exact", "batched"):
        model = mnist_model(pools, engine, init_state, program=BUILTIN_NAMES)
        set_engine(model, engine)  # gedi_nesy's exact engine: the program wins too
        if circuits is not None:
            model.solver.cache.cache_dict = circuits
        probs[engine] = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(queries), queries)]
        circuits = model.solver.cache.cache_dict
    assert close(probs["exact"], probs["batched"]) and all(0 < p < 1 for p in probs["batched"])
    # a program that only calls a builtin still gets it
    model = mnist_model(pools, "batched", init_state, program=ADDITION + "s(X,Y,Z) :- mul(X,Y,Z).\n")
    node = model.solver.program.find(Term("mul", None, None, None))
    assert type(model.solver.program.get_node(node)).__name__ == "extern"
