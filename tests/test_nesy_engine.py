"""gedi_nesy.engine: the batched engine gives DeepProbLog's ExactEngine probabilities and
gradients (to 1e-5) on several programs, caches compiled shapes, and trains (fast, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from gedi_core.config import ModelConfig  # noqa: E402
from gedi_core.errors import GediError  # noqa: E402
from gedi_nesy import cli  # noqa: E402
from gedi_nesy.data import Pools, abstract_query, embedded_digits, example_query, image_term  # noqa: E402
from gedi_nesy.engine import is_batched, set_engine  # noqa: E402
from gedi_nesy.network import gedi_network  # noqa: E402
from gedi_nesy.program import build_nesy_model  # noqa: E402
from gedi_nesy.losses import nesy_loss, nesy_loss_log  # noqa: E402
from gedi_nesy.step import query_probabilities  # noqa: E402
from problog.logic import Term  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5


def small(k: int) -> ModelConfig:
    return ModelConfig(backbone="mlp", hidden=8, feature_dim=4, proj_hidden=4, proj_dim=4, num_clusters=k, tau=0.5)


TINY = """nn(bit_net, [X], Y, [0, 1]) :: bit(X, Y).
both(X, Y) :- bit(X, 1), bit(Y, 1).
differ(X, Y) :- bit(X, A), bit(Y, B), A =\\= B.
"""

TWO_NETS = """nn(net_a, [X], Y, [0, 1]) :: a(X, Y).
nn(net_b, [X], Y, [0, 1, 2]) :: b(X, Y).
pair(X, Y) :- a(X, 1), b(Y, 2).
mix(X, Y, Z) :- a(X, A), b(Y, B), b(Z, C), A + B =:= C.
"""

# negation, a constant fact, a constant annotated disjunction, an image used twice
MISC = """nn(tri_net, [X], Y, [0, 1, 2]) :: t(X, Y).
0.3 :: coin.
0.2 :: col(red); 0.5 :: col(blue).
notwo(X) :- \\+ t(X, 2), coin.
bigger(X, Y) :- t(X, A), t(Y, B), A > B.
same(X, Y) :- t(X, A), t(Y, A).
painted(X) :- t(X, 1), col(red).
painted(X) :- t(X, 0), \\+ col(blue).
"""


def pools_of(n: int = 8, side: int = 4) -> Pools:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, side, side, generator=g) * 2 - 1
    y = torch.arange(n) % 2
    return Pools(x, y, x.clone(), y.clone(), "tiny")


def q(functor: str, *idx: int, p: float = 1.0):
    return abstract_query(Term(functor, *(image_term("train", i) for i in idx)), p=p)


def both_engines(program, networks, pools, batch):
    """p(q) and the gradient of sum log p(q) w.r.t. all network parameters, per engine."""
    model = build_nesy_model(program, networks, pools, engine="exact")
    params = [p for net in networks for p in net.network_module.parameters()]
    out = {}
    compiled = None
    for engine in ("exact", "batched"):
        solver = set_engine(model, engine)
        if compiled is not None:  # reuse the SDDs DeepProbLog compiled for the exact run
            solver.cache.cache_dict = compiled
        for p in params:
            p.grad = None
        probs = [torch.as_tensor(p) for p in query_probabilities(model, batch)]
        sum(torch.log(p) for p in probs if float(p) > 1e-12).backward()  # impossible queries: no gradient
        out[engine] = (torch.stack([p.detach() for p in probs]), torch.cat([p.grad.flatten() for p in params]))
        compiled = model.solver.cache.cache_dict
    assert is_batched(model)
    return out


def check(out):
    (pe, ge), (pb, gb) = out["exact"], out["batched"]
    assert torch.allclose(pe, pb, atol=TOL, rtol=0), (pe, pb)
    assert not torch.isnan(gb).any()
    assert torch.allclose(ge, gb, atol=TOL, rtol=1e-4), (ge - gb).abs().max()


def test_tiny_program(tmp_path):
    torch.manual_seed(0)
    prog = tmp_path / "tiny.pl"
    prog.write_text(TINY)
    net = gedi_network("bit_net", small(2), (1, 4, 4))
    check(both_engines(prog, [net], pools_of(), [q("both", 0, 1), q("differ", 2, 3), q("differ", 4, 4), q("both", 5, 6)]))


def test_two_networks(tmp_path):
    torch.manual_seed(1)
    prog = tmp_path / "two.pl"
    prog.write_text(TWO_NETS)
    nets = [gedi_network("net_a", small(2), (1, 4, 4)), gedi_network("net_b", small(3), (1, 4, 4))]
    batch = [q("pair", 0, 1), q("mix", 0, 1, 2), q("mix", 3, 3, 3), q("pair", 4, 4), q("mix", 5, 6, 7)]
    check(both_engines(prog, nets, pools_of(), batch))


def test_negation_constants_and_an_image_used_twice(tmp_path):
    torch.manual_seed(2)
    prog = tmp_path / "misc.pl"
    prog.write_text(MISC)
    net = gedi_network("tri_net", small(3), (1, 4, 4))
    batch = [q("notwo", 0), q("bigger", 1, 2), q("bigger", 3, 3), q("same", 4, 4), q("same", 5, 6),
             q("painted", 7), q("notwo", 1)]
    out = both_engines(prog, [net], pools_of(), batch)
    check(out)
    assert float(out["batched"][0][3]) == pytest.approx(1.0, abs=1e-6)  # same(x, x)
    assert float(out["batched"][0][2]) == pytest.approx(0.0, abs=1e-6)  # bigger(x, x)


@pytest.fixture(scope="module")
def digits():
    return embedded_digits(0.2, seed=0)


@pytest.mark.slow
def test_addition_sum_and_multi_digit_addition(digits):
    torch.manual_seed(3)
    net = gedi_network("gedi_net", small(10), digits.input_shape)
    add = [example_query("addition", [0, 1, 2], None, "train"), example_query("addition", [3, 3, 4], None, "train"),
           example_query("addition", [5, 6, 5], None, "train")]
    check(both_engines(REPO / "programs/addition.pl", [net], digits, add))
    sums = [example_query("sum", [0, 1], 7, "train"), example_query("sum", [2, 2], 4, "train"),
            example_query("sum", [3, 4], 7, "train"), example_query("sum", [5, 6], 0, "train")]
    check(both_engines(REPO / "programs/sum.pl", [net], digits, sums))
    multi = [example_query("multi_addition", [0, 1, 2, 3], 98, "train"),
             example_query("multi_addition", [4, 5, 4, 6], 98, "train"),
             example_query("multi_addition", [7, 8, 9, 7], 31, "train")]
    check(both_engines(REPO / "programs/multi_addition.pl", [net], digits, multi))


def test_nesy_loss_in_log_space_equals_exact_loss(tmp_path):
    torch.manual_seed(4)
    prog = tmp_path / "tiny.pl"
    prog.write_text(TINY)
    net = gedi_network("bit_net", small(2), (1, 4, 4))
    model = build_nesy_model(prog, [net], pools_of())
    batch = [q("both", 0, 1), q("differ", 2, 3, p=0.3), q("differ", 4, 5, p=0.0)]
    logp, decided = model.solver.log_probs(batch)
    got, skipped = nesy_loss_log(logp, decided, batch)
    want, _ = nesy_loss(query_probabilities(model, batch), batch)
    assert skipped == 0 and float(got) == pytest.approx(float(want), abs=1e-5)


def test_compiled_shapes_are_cached_in_memory_and_on_disk(tmp_path, digits):
    net = gedi_network("gedi_net", small(10), digits.input_shape)
    cache = tmp_path / "shapes"
    model = build_nesy_model(REPO / "programs/sum.pl", [net], digits, compile_cache=cache)
    batch = [example_query("sum", [i, i + 1], 5, "train") for i in range(0, 8, 2)]
    first = torch.stack([p.detach() for p in query_probabilities(model, batch)])
    st = model.solver.stats
    assert st["shapes"] == 1 and st["compile_seconds"] > 0 and st["disk_hits"] == 0  # one shape for 4 queries
    query_probabilities(model, batch)
    assert model.solver.stats["shapes"] == 1
    again = build_nesy_model(REPO / "programs/sum.pl", [net], digits, compile_cache=cache)
    second = torch.stack([p.detach() for p in query_probabilities(again, batch)])
    assert again.solver.stats["disk_hits"] == 1 and torch.allclose(first, second)


def test_learnable_probabilities_on_the_klay_path(tmp_path):
    """A learnable t(_) is a leaf of the KLay circuit: the same probabilities and gradients as
    the exact engine."""
    torch.manual_seed(5)
    prog = tmp_path / "param.pl"
    prog.write_text(TINY + "t(0.3) :: flip.\nf(X) :- bit(X, 1), flip.\n")
    net = gedi_network("bit_net", small(2), (1, 4, 4))
    check(both_engines(prog, [net], pools_of(), [q("f", 0), q("both", 1, 2), q("f", 3)]))
    model = build_nesy_model(prog, [net], pools_of())
    batch = [q("f", 0), q("both", 1, 2)]
    probs = torch.stack([torch.as_tensor(p).detach() for p in query_probabilities(model, batch)])
    assert model.solver.stats["fallback_shapes"] == 0 and model.solver.stats["shapes"] == 2
    logp, decided = model.solver.log_probs(batch)  # the project's loop: t(_) read inside
    assert torch.allclose(logp.exp().detach(), probs, atol=TOL) and decided == [False, False]
    with pytest.raises(GediError, match="unknown engine"):
        set_engine(model, "magic")


FAST = ["--examples", "12", "--test-examples", "6", "--epochs", "1", "--batch-size", "6", "--sgld-steps", "2",
        "--no-progress", "--seed", "0"]


@pytest.mark.slow
def test_cli_engines_train_to_the_same_numbers(capsys):
    metrics = {}
    for engine in ("exact", "batched", None):
        args = ["train", "--arm", "gedi+nesy", *FAST] + (["--engine", engine] if engine else [])
        assert cli.main(args) == 0
        metrics[engine] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics[None]["engine"] == "batched"  # the default
    assert metrics["exact"]["engine"] == "exact" and metrics["batched"]["compiled_shapes"] == 1
    for key in ("digit_acc", "nmi", "query_acc"):
        assert metrics["exact"][key] == pytest.approx(metrics["batched"][key], abs=1e-6)
