"""One ground circuit per query structure for all its labels (``gedi_nesy.shared_labels``):
the same probabilities and gradients as per-label compilation and as ExactEngine, one
grounding for many labels, DeepProbLog's per-label circuits released, and per-label
compilation kept where freeing the label could change a probability (fast, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from problog.logic import Constant, Term, list2term
from problog.program import PrologFile

torch.set_num_threads(1)

from gedi_nesy.deepproblog_import import import_deepproblog  # noqa: E402

import_deepproblog()
import deepproblog.examples  # noqa: E402
from deepproblog.engines import ExactEngine  # noqa: E402

from deepproblog.model import Model
from deepproblog.network import Network
from deepproblog.query import Query
from deepproblog.train import TrainObject

from gedi_nesy.engine import BatchedEngine
from gedi_nesy.shared_labels import order_sensitive

EXAMPLES = Path(deepproblog.examples.__file__).parent
TOL = 1e-5


def img(i: int) -> Term:
    return Term("tensor", Term("img", Constant(i)))


def queries() -> list[Query]:
    """DeepProbLog's MNISTOperator queries (placeholders p{i}_{j}), several sums, one impossible."""
    out = []
    for k, total in enumerate((3, 7, 7, 12, 25)):
        sub = {Term("p0_0"): img(2 * k), Term("p1_0"): img(2 * k + 1)}
        out.append(Query(Term("multi_addition", list2term([Term("p0_0")]), list2term([Term("p1_0")]),
                              Constant(total)), sub))
        out.append(Query(Term("addition", Term("p0_0"), Term("p1_0"), Constant(total)), sub))
    return out


def solve(engine, eager: bool = True) -> tuple[list[float], torch.Tensor, Model]:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 10), nn.Softmax(-1))
    model = Model(str(EXAMPLES / "MNIST/models/addition.pl"), [Network(module, "mnist_net", batching=True)])
    model.set_engine(engine(model), cache=True)
    if not eager:  # every structure keeps its shared circuit until all its labels are asked for
        model.solver.max_eager_answers = 0
    g = torch.Generator().manual_seed(1)
    model.add_tensor_source("img", {(Constant(i),): torch.randn(5, generator=g) for i in range(10)})
    batch = queries()
    probs = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(batch), batch)]
    module.zero_grad()
    TrainObject(model).get_loss(batch[:-2], model.solver.semiring.cross_entropy)
    return probs, torch.cat([p.grad.flatten() for p in module.parameters()]), model


@pytest.mark.slow
def test_one_grounding_per_query_structure_gives_per_label_results():
    pe, ge, _ = solve(ExactEngine)
    pb, gb, model = solve(BatchedEngine)
    pl, gl, per_label = solve(lambda m: BatchedEngine(m, shared_labels=False))
    assert pb == pytest.approx(pe, abs=TOL) and pl == pytest.approx(pe, abs=TOL) and pb[-1] == 0.0
    assert torch.allclose(gb, ge, atol=TOL, rtol=1e-4) and torch.allclose(gl, ge, atol=TOL, rtol=1e-4)
    st = model.solver.stats
    assert st["shapes"] == 8 and st["joint_circuits"] == 2  # 4 sums x 2 predicates, one grounding each
    assert per_label.solver.stats["joint_circuits"] == 0 and per_label.solver.stats["shapes"] == 8
    # the batched solver keeps no DeepProbLog circuit per label (only the impossible sum's), and
    # no shared one: 19 answers, all compiled at once
    assert len(model.solver.cache.cache_dict) <= 2 and len(per_label.solver.cache.cache_dict) == 0
    assert list(model.solver._joint.values()) == [None, None]
    pz, gz, lazy = solve(BatchedEngine, eager=False)
    assert pz == pytest.approx(pe, abs=TOL) and torch.allclose(gz, ge, atol=TOL, rtol=1e-4)
    assert lazy.solver.stats["joint_circuits"] == 2 and None not in lazy.solver._joint.values()


def test_programs_that_test_bindings_keep_per_label_compilation():
    assert not order_sensitive(PrologFile(str(EXAMPLES / "MNIST/models/addition.pl")))
    assert order_sensitive(PrologFile(str(EXAMPLES / "HWF/model.pl")))  # var/1, ground/1
    assert order_sensitive(PrologFile(str(EXAMPLES / "Coins/model.pl")))  # \+


def test_a_free_label_that_cannot_be_ground_falls_back_to_per_label_compilation():
    """``D > N`` with the label N free is an instantiation error in ProbLog: that structure's
    labels are compiled one by one, and ProbLog's engine still grounds the next queries."""
    program = "nn(net, [X], Y, [0, 1, 2]) :: digit(X, Y).\nabove(X, N) :- digit(X, D), D > N.\n"
    probs = {}
    for engine in (ExactEngine, BatchedEngine):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(5, 3), nn.Softmax(-1))
        model = Model(program, [Network(module, "net", batching=True)], load=False)
        model.set_engine(engine(model), cache=True)
        model.add_tensor_source("img", {(Constant(0),): torch.ones(5)})
        batch = [Query(Term("above", Term("p"), Constant(n)), {Term("p"): img(0)}) for n in (0, 1)]
        probs[engine] = [float(r.result[q.substitute().query]) for r, q in zip(model.solve(batch), batch)]
    assert probs[BatchedEngine] == pytest.approx(probs[ExactEngine], abs=TOL) and probs[ExactEngine][0] > 0
    assert model.solver.stats["joint_circuits"] == 0 and model.solver.stats["shapes"] == 2


def test_the_free_label_bound_leaves_a_running_limit_in_charge():
    """The bound on grounding with free labels is a wall-clock limit of its own, unless one is
    already running (``--ground-timeout`` around the grounding): that one is not replaced."""
    import signal
    import time

    from gedi_core.errors import GediError
    from gedi_nesy.limits import time_limit
    from gedi_nesy.shared_labels import time_bound

    with time_limit(30, "outer"):
        with time_bound(0.05):
            time.sleep(0.3)  # no error: the outer limit (30 s) is in charge
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 20
    with pytest.raises(GediError, match="labels free"):
        with time_bound(0.05):
            while True:
                time.sleep(0.01)
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
