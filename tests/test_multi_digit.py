"""programs/long_addition.pl and the multi-digit task: the probabilities of DeepProbLog's own
multi_addition (examples/MNIST/models/addition.pl) at N = 1, 2 and of a brute-force enumeration
at N = 3, one compiled circuit per N for every sum, both engines' gradients, and the queries
``--task multi_addition --digits N`` generates."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from deepproblog.model import Model
from deepproblog.network import Network

from gedi_nesy import cli
from gedi_nesy.data import example_query, image_rounds, task_queries
from gedi_nesy.engine import set_engine
from gedi_nesy.long_addition import number, query_numbers, sum_accuracy, sum_terms
from gedi_nesy.program import build_nesy_model

REPO = Path(__file__).resolve().parents[1]
LONG = REPO / "programs/long_addition.pl"
DEEPPROBLOG_ADDITION = Path(__import__("deepproblog").__file__).parent / "examples/MNIST/models/addition.pl"
TOL = 1e-5


class Identity(torch.nn.Module):
    """A 'network' whose input is already its output distribution."""

    def forward(self, x):
        return x


class Rows:
    """Tensor source: ``tensor(train(I))`` -> row I."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows

    def __getitem__(self, key):
        return self.rows[int(key[0])]


def random_digits(n: int, seed: int) -> torch.Tensor:
    """``n`` random digit distributions (softmax of Gaussian logits, some peaked)."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(n, 10, generator=g), dim=-1)


def model_of(program: Path, net: str, rows: torch.Tensor, engine: str):
    if program == LONG:
        model = build_nesy_model(program, [Network(Identity(), net, batching=True)], engine=engine)
    else:
        model = Model(str(program), [Network(Identity(), net, batching=True)])
        set_engine(model, engine)
    model.add_tensor_source("train", Rows(rows))
    return model


def probabilities(model, queries) -> list:
    return [next(iter(r.result.values())) for r in model.solve(queries)]


def random_queries(n_digits: int, n: int, seed: int, sum_digits: bool) -> list:
    """``n`` queries over images 0 .. 2N-1 with random sums (some impossible-looking, all provable)."""
    rng = random.Random(seed)
    images = list(range(2 * n_digits))
    return [example_query("multi_addition", images, rng.randrange(2 * 10**n_digits - 1), "train", sum_digits)
            for _ in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("n_digits", [1, 2])
def test_long_addition_gives_deepproblogs_multi_addition_probabilities(n_digits):
    rows = random_digits(2 * n_digits, seed=n_digits)
    ours = model_of(LONG, "gedi_net", rows, "batched")
    theirs = model_of(DEEPPROBLOG_ADDITION, "mnist_net", rows, "exact")
    seed, n = 10 + n_digits, 3 if n_digits == 2 else 6  # DeepProbLog compiles one circuit per sum
    p_ours = probabilities(ours, random_queries(n_digits, n, seed, sum_digits=True))
    p_theirs = probabilities(theirs, random_queries(n_digits, n, seed, sum_digits=False))
    assert min(float(p) for p in p_theirs) > 0
    for a, b in zip(p_ours, p_theirs):
        assert abs(float(a) - float(b)) < TOL
    assert ours.solver.stats["shapes"] == 1  # one circuit for every sum


def brute_force_sum(rows: torch.Tensor, n_digits: int) -> np.ndarray:
    """P(sum = s) of two N-digit numbers, by enumerating every digit combination."""
    p = rows.double().numpy()
    numbers = []
    for first in (0, n_digits):
        dist = np.zeros(10**n_digits)
        for digits in itertools.product(range(10), repeat=n_digits):
            dist[number(digits)] = np.prod([p[first + k, d] for k, d in enumerate(digits)])
        numbers.append(dist)
    joint = np.multiply.outer(numbers[0], numbers[1])
    totals = np.add.outer(np.arange(10**n_digits), np.arange(10**n_digits))
    return np.bincount(totals.ravel(), weights=joint.ravel(), minlength=2 * 10**n_digits - 1)


def test_long_addition_matches_brute_force_at_three_digits():
    rows = random_digits(6, seed=3)
    expected = brute_force_sum(rows, 3)
    model = model_of(LONG, "gedi_net", rows, "batched")
    totals = [0, 1998, int(np.argmax(expected)), 1000, 999, 555]
    queries = [example_query("multi_addition", list(range(6)), t, "train", sum_digits=True) for t in totals]
    for t, p in zip(totals, probabilities(model, queries)):
        assert abs(float(p) - expected[t]) < TOL
    assert abs(expected.sum() - 1) < 1e-5  # float32 rows
    assert model.solver.stats["shapes"] == 1


@pytest.mark.slow
def test_both_engines_give_the_same_gradients_on_long_addition():
    grads = {}
    for engine in ("batched", "exact"):
        logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(5)).requires_grad_()
        model = model_of(LONG, "gedi_net", torch.softmax(logits, -1), engine)
        queries = [example_query("multi_addition", [0, 1, 2, 3], t, "train", sum_digits=True) for t in (57, 140, 3)]
        loss = sum(torch.log(torch.as_tensor(p)) for p in probabilities(model, queries))
        loss.backward()
        grads[engine] = (loss.item(), logits.grad.clone())
    assert abs(grads["batched"][0] - grads["exact"][0]) < TOL
    assert torch.allclose(grads["batched"][1], grads["exact"][1], atol=TOL)
    assert grads["batched"][1].abs().sum() > 0


def test_sum_terms_and_query_numbers_round_trip():
    terms = sum_terms(1098, 3)
    assert [int(t.args[0].args[1].value) for t in terms] == [1, 0, 9, 8]
    assert [int(t.args[0].args[0].value) for t in terms] == [0, 1, 2, 3]  # distinct terms per position
    q = example_query("multi_addition", [4, 5, 6, 7, 8, 9], 1098, "train", sum_digits=True)
    xs, ys, total = query_numbers(q)
    assert total == 1098 and len(xs) == len(ys) == 3
    with pytest.raises(Exception, match="must lie in"):
        sum_terms(2000, 3)


def test_generated_long_queries_use_each_image_once_per_round_and_share_one_shape():
    labels = torch.arange(100) % 10
    n_digits, per_round = 4, 100 // 8
    queries = task_queries("multi_addition", labels, 30, seed=0, digits=n_digits, sum_digits=True)
    assert len(queries) == 30 and len({q.query for q in queries}) == 1
    used = []
    for q in queries:
        xs, ys, total = query_numbers(q)
        idx = [int(t.args[0].args[0].value) for t in xs + ys]
        assert len(set(idx)) == 2 * n_digits
        digits = [int(labels[i]) for i in idx]
        assert total == number(digits[:n_digits]) + number(digits[n_digits:])
        used.append(idx)
    first_round = [i for idx in used[:per_round] for i in idx]
    assert len(first_round) == len(set(first_round))  # no image twice in the first round
    later = {i for idx in used[per_round:] for i in idx}
    assert later & set(first_round)  # 30 queries of 8 images from 100: later rounds reuse images


def test_image_rounds_refuses_a_pool_smaller_than_one_query():
    with pytest.raises(Exception, match="needs 8 distinct images"):
        image_rounds(7, 1, 8, random.Random(0))


def test_every_length_draws_images_in_rounds_and_never_runs_out():
    labels = torch.arange(40) % 10
    for n_digits in (1, 2, 3):
        queries = task_queries("multi_addition", labels, 25, seed=0, digits=n_digits)
        assert len(queries) == 25 and len({q.query for q in queries}) > 1  # the constant sum: shapes per sum
        assert all(query_numbers(q)[2] < 2 * 10**n_digits for q in queries)


def test_sum_accuracy_reads_the_networks_most_likely_digits():
    labels = torch.tensor([3, 9, 4, 7, 0, 5, 1, 8, 2, 6, 9, 9])
    rows = torch.nn.functional.one_hot(labels, 10).float()
    model = model_of(LONG, "gedi_net", rows, "batched")
    queries = task_queries("multi_addition", labels, 6, seed=1, digits=3, sum_digits=True)
    assert sum_accuracy(model, queries) == 1.0
    model.add_tensor_source("train", Rows(rows.roll(1, dims=-1)))  # every digit read as d + 1
    assert sum_accuracy(model, queries) < 1.0


@pytest.mark.slow
def test_cli_trains_long_addition_with_one_circuit(tmp_path, capsys):
    rc = cli.main(["train", "--program", str(LONG), "--digits", "3", "--examples", "12", "--test-examples", "6",
                   "--epochs", "1", "--batch-size", "6", "--arm", "nesy", "--no-progress", "--seed", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["compiled_shapes"] == 1 and metrics["examples"] == 12


def test_cli_refuses_zero_digits(capsys):
    rc = cli.main(["train", "--program", str(LONG), "--digits", "0", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "digits" in err[0]
