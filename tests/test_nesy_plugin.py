"""gedi_nesy: the DeepProbLog plugin, its training arms and its input errors (fast, offline)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from gedi_core.config import ModelConfig  # noqa: E402
from gedi_core.errors import GediError  # noqa: E402
from gedi_nesy import cli  # noqa: E402
from gedi_nesy.data import (  # noqa: E402
    ADDITION_PAIRS,
    Pools,
    abstract_query,
    embedded_digits,
    image_term,
    mnist,
    read_query_file,
    task_examples,
)
from gedi_nesy.network import gedi_network  # noqa: E402
from gedi_nesy.program import build_nesy_model  # noqa: E402
from gedi_nesy.step import batch_inputs, clear_caches, forward_batch, query_probabilities  # noqa: E402
from problog.logic import Term  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = ModelConfig(backbone="mlp", hidden=8, feature_dim=4, proj_hidden=4, proj_dim=4, num_clusters=2, tau=0.5)

TINY = """% a tiny program with one network of two outputs
nn(bit_net, [X], Y, [0, 1]) :: bit(X, Y).
both(X, Y) :- bit(X, 1), bit(Y, 1).
differ(X, Y) :- bit(X, A), bit(Y, B), A =\\= B.
"""

TWO_NETS = """nn(net_a, [X], Y, [0, 1]) :: a(X, Y).
nn(net_b, [X], Y, [0, 1, 2]) :: b(X, Y).
pair(X, Y) :- a(X, 1), b(Y, 2).
"""


def tiny_pools(n: int = 6) -> Pools:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
    y = torch.arange(n) % 2
    return Pools(x, y, x.clone(), y.clone(), "tiny")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def q(functor: str, *idx: int, source: str = "train"):
    return abstract_query(Term(functor, *(image_term(source, i) for i in idx)))


# ----------------------------------------------------------------------------- plugin
def test_probabilities_match_hand_computation(tmp_path):
    torch.manual_seed(0)
    pools = tiny_pools()
    net = gedi_network("bit_net", SMALL, (1, 4, 4))
    model = build_nesy_model(write(tmp_path, "tiny.pl", TINY), [net], pools)
    with torch.no_grad():
        p = net.network_module(pools.train_x)  # (6, 2)
    expected_both = float(p[0, 1] * p[1, 1])
    expected_differ = float(p[2, 0] * p[3, 1] + p[2, 1] * p[3, 0])
    batch = [q("both", 0, 1), q("differ", 2, 3)]
    # DeepProbLog's own evaluation of the network ...
    got = [float(v) for v in query_probabilities(model, batch)]
    assert got == pytest.approx([expected_both, expected_differ], abs=1e-6)
    # ... and the batched forward pass that fills its cache give the same numbers
    forward_batch(model, batch_inputs(model, batch))
    got = [float(v) for v in query_probabilities(model, batch)]
    clear_caches(model)
    assert got == pytest.approx([expected_both, expected_differ], abs=1e-6)


def test_two_networks_in_one_program(tmp_path):
    torch.manual_seed(1)
    pools = tiny_pools()
    cfg3 = ModelConfig(**{**SMALL.__dict__, "num_clusters": 3})
    net_a, net_b = gedi_network("net_a", SMALL, (1, 4, 4)), gedi_network("net_b", cfg3, (1, 4, 4))
    model = build_nesy_model(write(tmp_path, "two.pl", TWO_NETS), [net_a, net_b], pools)
    batch = [q("pair", 0, 1)]
    per_net = batch_inputs(model, batch)
    assert set(per_net) == {"net_a", "net_b"}
    forward_batch(model, per_net)
    (p,) = query_probabilities(model, batch)
    with torch.no_grad():
        expected = net_a.network_module(pools.train_x[:1])[0, 1] * net_b.network_module(pools.train_x[1:2])[0, 2]
    assert float(p) == pytest.approx(float(expected), abs=1e-6)


def test_nesy_gradient_reaches_gedi_network(tmp_path):
    torch.manual_seed(0)
    pools = tiny_pools()
    net = gedi_network("bit_net", SMALL, (1, 4, 4))
    model = build_nesy_model(write(tmp_path, "tiny.pl", TINY), [net], pools)
    batch = [q("both", 0, 1), q("differ", 2, 3)]
    forward_batch(model, batch_inputs(model, batch))
    loss = -sum(torch.log(p) for p in query_probabilities(model, batch))
    clear_caches(model)
    loss.backward()
    gedi = net.network_module.gedi
    for param in (gedi.backbone.net[0].weight, gedi.projector[0].weight, gedi.head.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_addition_examples_follow_the_paper():
    pools = embedded_digits(0.2, seed=0)
    examples = task_examples("addition", pools.train_y, 100, seed=3)
    used = [i for imgs, _ in examples for i in imgs]
    assert len(used) == len(set(used)) == 300  # drawn without replacement
    for imgs, label in examples:
        a, b, c = (int(pools.train_y[i]) for i in imgs)
        assert a + b == c <= 9 and label is None
    assert len(ADDITION_PAIRS) == 55
    assert examples == task_examples("addition", pools.train_y, 100, seed=3)  # seeded
    # pools are disjoint: no test image is a training image
    train = {tuple(x.flatten().tolist()) for x in pools.train_x[:200]}
    assert not any(tuple(x.flatten().tolist()) in train for x in pools.test_x[:200])


# ----------------------------------------------------------------------------- arms
def run_cli(args, capsys) -> tuple[int, str, str]:
    rc = cli.main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


FAST = ["--examples", "12", "--test-examples", "6", "--epochs", "1", "--batch-size", "6",
        "--sgld-steps", "2", "--no-progress", "--seed", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["nesy", "gedi", "gedi+nesy"])
def test_each_arm_runs_seeded_steps_on_embedded_digits(arm, tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = run_cli(["train", "--arm", arm, "--out", str(out), *FAST], capsys)
    assert rc == 0, err
    metrics = json.loads(stdout.strip().splitlines()[-1])
    for key in ("digit_acc", "nmi", "query_acc", "seconds", "queries_per_s"):
        assert key in metrics
    assert metrics["arm"] == arm and metrics["examples"] == 12
    assert "embedded digits" in metrics["data_note"]
    assert (out / "metrics.json").is_file() and (out / "log.csv").is_file() and (out / "checkpoint.pt").is_file()
    w = metrics["weights"]
    assert (w["nesy"] > 0) == (arm != "gedi") and (w["prior"] > 0) == (arm != "nesy")
    if arm == "nesy":  # seeded: a second run gives the same numbers
        rc, stdout2, _ = run_cli(["train", "--arm", arm, *FAST], capsys)
        again = json.loads(stdout2.strip().splitlines()[-1])
        assert again["digit_acc"] == metrics["digit_acc"] and again["nmi"] == metrics["nmi"]


@pytest.mark.slow
def test_an_interrupted_run_resumes_and_a_finished_run_is_kept(tmp_path, capsys, interrupt_after):
    out = tmp_path / "run"
    args = ["train", "--arm", "gedi", "--out", str(out), *FAST, "--epochs", "2"]
    interrupt_after(1)
    assert run_cli(args, capsys)[0] == 130
    assert (out / "checkpoint.pt").is_file() and not (out / "metrics.json").exists()
    rc, _, err = run_cli(args, capsys)  # without --resume: refused, the folder untouched
    assert rc == 2 and "--resume" in err
    rc, stdout, err = run_cli([*args, "--resume"], capsys)
    assert rc == 0, err
    assert len((out / "epochs.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert json.loads(stdout.strip().splitlines()[-1])["epochs"] == 2
    before = (out / "metrics.json").read_text()
    for again in (args, [*args, "--resume"]):  # a finished run is never overwritten
        rc, _, err = run_cli(again, capsys)
        assert rc == 2 and "finished run" in err
    assert (out / "metrics.json").read_text() == before


@pytest.mark.slow
def test_resume_refuses_another_config(tmp_path, capsys, interrupt_after):
    out = tmp_path / "run"
    args = ["train", "--arm", "gedi", "--out", str(out), *FAST, "--epochs", "2"]
    interrupt_after(1)
    run_cli(args, capsys)
    config = (out / "config.yaml").read_text()
    rc, _, err = run_cli([*args, "--seed", "1", "--lr", "0.01", "--resume"], capsys)
    assert rc == 2 and "seed: 0 -> 1" in err and "lr: 0.003 -> 0.01" in err
    assert (out / "config.yaml").read_text() == config


@pytest.mark.slow
def test_resumed_run_equals_the_straight_run(tmp_path, capsys, interrupt_after):
    """All random state (shuffling, SGLD buffer, train shift, torch RNG) is in the checkpoint."""
    args = ["train", "--arm", "gedi+nesy", "--train-shift", "2", *FAST, "--epochs", "2"]
    straight = json.loads(run_cli([*args, "--out", str(tmp_path / "a")], capsys)[1].splitlines()[-1])
    interrupt_after(1)
    assert run_cli([*args, "--out", str(tmp_path / "b")], capsys)[0] == 130
    resumed = json.loads(run_cli([*args, "--out", str(tmp_path / "b"), "--resume"], capsys)[1].splitlines()[-1])
    assert resumed["digit_acc"] == straight["digit_acc"] and resumed["nmi"] == straight["nmi"]

    def rows(run: str) -> list[dict]:
        with open(tmp_path / run / "epochs.csv") as f:
            return [{k: v for k, v in r.items() if k not in ("seconds", "queries_per_s")} for r in csv.DictReader(f)]

    assert len(rows("a")) == 2 and rows("a") == rows("b")


def test_train_shift_moves_the_images_the_network_sees():
    from gedi_nesy.step import TrainShift

    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    shifted = TrainShift(2, seed=0)(x)
    assert shifted.shape == x.shape
    assert not torch.equal(shifted, x)  # some image moved
    assert torch.allclose(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # a shift, the square stays inside
    assert torch.equal(TrainShift(2, seed=0)(x), shifted)  # seeded


def test_user_queries_and_images(tmp_path, capsys):
    g = np.random.default_rng(0)
    npz = tmp_path / "imgs.npz"
    np.savez(npz, train_images=g.integers(0, 255, (8, 28, 28), dtype=np.uint8),
             test_images=g.integers(0, 255, (4, 1, 28, 28), dtype=np.uint8), test_labels=np.arange(4))
    queries = write(tmp_path, "q.txt", "% two sums\nsum(tensor(train(0)), tensor(train(1)), 3).\n"
                                       "0.9::sum(tensor(train(2)), tensor(train(7)), 18).\n")
    rc, stdout, err = run_cli(["train", "--program", str(REPO / "programs/sum.pl"), "--images", str(npz),
                               "--queries", str(queries), "--epochs", "1", "--no-progress", "--sgld-steps", "1"], capsys)
    assert rc == 0, err
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics["examples"] == 2 and metrics["data"] == "npz"


# ----------------------------------------------------------------------------- bad input
def expect_error(capsys, tmp_path, args, *fragments):
    out = tmp_path / "never"
    rc, stdout, err = run_cli(["train", *args, "--out", str(out), *FAST], capsys)
    assert rc == 2, (stdout, err)
    line = err.strip().splitlines()[-1]
    assert line.startswith("gedi-nesy: error:")
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists()  # raised before any training
    return line


def test_program_that_does_not_parse(tmp_path, capsys):
    bad = write(tmp_path, "bad.pl", "nn(gedi_net,[X],Y,[0,1,2,3,4,5,6,7,8,9]) :: digit(X,Y).\n\n"
                                    "addition(X,Y,Z) :- digit(X,A), digit(Y,B)\nfoo(X) :- .\n")
    expect_error(capsys, tmp_path, ["--program", str(bad), "--task", "addition"], f"{bad}:4", "cannot parse")


def test_unregistered_network(tmp_path, capsys):
    prog = write(tmp_path, "addition.pl", (REPO / "programs/addition.pl").read_text().replace("gedi_net", "other_net"))
    expect_error(capsys, tmp_path, ["--program", str(prog)], "'other_net'", "not registered", "digit/2", f"{prog}:")


def test_domain_size_differs_from_clusters(tmp_path, capsys):
    prog = write(tmp_path, "addition.pl", (REPO / "programs/addition.pl").read_text().replace("[0,1,2,3,4,5,6,7,8,9]", "[0,1,2]"))
    expect_error(capsys, tmp_path, ["--program", str(prog)], "3 values", "10 clusters", "digit/2")


def test_query_with_unknown_predicate(tmp_path, capsys):
    queries = write(tmp_path, "q.txt", "addition(tensor(train(0)), tensor(train(1)), tensor(train(2))).\n"
                                       "subtraction(tensor(train(0)), tensor(train(1)), 3).\n")
    expect_error(capsys, tmp_path, ["--queries", str(queries)], f"{queries}:2", "subtraction/3")


def test_query_image_index_out_of_range(tmp_path, capsys):
    queries = write(tmp_path, "q.txt", "addition(tensor(train(0)), tensor(train(99999)), tensor(train(2))).\n")
    expect_error(capsys, tmp_path, ["--queries", str(queries)], f"{queries}:1", "99999", "out of range")


def test_data_root_without_mnist(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(capsys, tmp_path, ["--data", "mnist", "--data-root", str(empty)], str(empty), "no MNIST files")


def test_bad_npz_shape(tmp_path, capsys):
    npz = tmp_path / "bad.npz"
    np.savez(npz, train_images=np.zeros((4, 3, 28, 28), np.uint8), test_images=np.zeros((2, 28, 28), np.uint8),
             test_labels=np.zeros(2))
    expect_error(capsys, tmp_path, ["--images", str(npz)], "train_images", "(4, 3, 28, 28)")


def test_unknown_config_key_and_arm(tmp_path, capsys):
    expect_error(capsys, tmp_path, ["--arm", "magic"], "arm", "magic")
    expect_error(capsys, tmp_path, ["--set", "weights.foo=1"], "weights.foo")


def test_config_file_arms_section_applies_to_its_arm_only(tmp_path, capsys):
    path = write(tmp_path, "c.yaml", "weights:\n  gen: 0.5\narms:\n  gedi+nesy:\n    weights:\n      gen: 0.01\n")
    resolve = lambda *flags: cli.resolve_config(cli.build_parser().parse_args(  # noqa: E731
        ["train", "--config", str(path), *flags]))
    assert resolve("--arm", "gedi+nesy").weights.gen == 0.01
    assert resolve("--arm", "gedi").weights.gen == 0.5
    assert resolve("--arm", "gedi+nesy", "--w-gen", "0.2").weights.gen == 0.2  # flags still win
    bad = write(tmp_path, "bad.yaml", "arms:\n  jem:\n    lr: 0.1\n")
    expect_error(capsys, tmp_path, ["--config", str(bad)], "bad.yaml", "unknown arm 'jem'")


def test_config_file_by_examples_section_applies_to_its_size_only(tmp_path, capsys):
    """by_examples.<n> applies to runs of n training examples, after the arms section; flags still win."""
    path = write(tmp_path, "c.yaml", "restart_above: 0.4\narms:\n  gedi+nesy:\n    lr: 0.002\nby_examples:\n"
                                     "  100:\n    restart_judge: neighbours\n    restart_above: 0.9\n    lr: 0.001\n")
    resolve = lambda *flags: cli.resolve_config(cli.build_parser().parse_args(  # noqa: E731
        ["train", "--config", str(path), *flags]))
    small, large = resolve("--examples", "100"), resolve("--examples", "1000")
    assert (small.restart_judge, small.restart_above, small.lr) == ("neighbours", 0.9, 0.001)
    assert (large.restart_judge, large.restart_above, large.lr) == ("train", 0.4, 0.002)
    assert resolve("--examples", "100", "--restart-above", "0.5").restart_above == 0.5
    bad = write(tmp_path, "bad.yaml", "by_examples:\n  many:\n    lr: 0.1\n")
    expect_error(capsys, tmp_path, ["--config", str(bad)], "bad.yaml", "'many' is not a number of training examples")
    bad = write(tmp_path, "bad2.yaml", "by_examples:\n  12:\n    judge: 1\n")  # FAST: 12 examples
    expect_error(capsys, tmp_path, ["--config", str(bad)], "bad2.yaml (by_examples.12)", "judge")


def test_read_query_file_errors_name_file_and_line(tmp_path):
    path = write(tmp_path, "q.txt", "sum(tensor(train(0)), tensor(train(1)), 3).\nsum(tensor(valid(0)), tensor(train(1)), 3).\n")
    with pytest.raises(GediError, match=r"q.txt:2: .*unknown pool 'valid'"):
        read_query_file(path, {"train": 5, "test": 5}, {("sum", 3)})
    path = write(tmp_path, "p.txt", "sum(tensor(train(0)), tensor(train(1)) 3).\n")
    with pytest.raises(GediError, match=r"p.txt:1: cannot parse"):
        read_query_file(path, {"train": 5}, {("sum", 3)})


def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_test_split_only_is_divided(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "t10k-images-idx3-ubyte.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28)))
    _idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(50) % 10)
    pools = mnist(tmp_path, test_fraction=0.2, seed=0)
    assert pools.train_x.shape == (40, 1, 28, 28) and pools.test_x.shape == (10, 1, 28, 28)
    assert "only the MNIST test split" in pools.note and "seed 0" in pools.note
    assert float(pools.train_x.min()) >= -1 and float(pools.train_x.max()) <= 1


@pytest.mark.skipif(not os.environ.get("GEDI_NESY_SLOW"), reason="set GEDI_NESY_SLOW=1")
def test_multi_addition_program_runs(capsys):
    rc, stdout, err = run_cli(["train", "--program", str(REPO / "programs/multi_addition.pl"), *FAST], capsys)
    assert rc == 0, err


def test_addition_program_equals_closed_form():
    """addition.pl (three images, C is A + B) against sum_{a+b<=9} p(a|x) p(b|y) p(a+b|z)."""
    torch.manual_seed(0)
    pools = embedded_digits(0.2, seed=0)
    cfg = ModelConfig(backbone="lenet", feature_dim=84, proj_hidden=16, proj_dim=8, num_clusters=10, tau=1.0)
    net = gedi_network("gedi_net", cfg)
    model = build_nesy_model(REPO / "programs/addition.pl", [net], pools)
    batch = [q("addition", 0, 1, 2), q("addition", 3, 4, 5)]
    forward_batch(model, batch_inputs(model, batch))
    got = [float(p) for p in query_probabilities(model, batch)]
    clear_caches(model)
    with torch.no_grad():
        p = net.network_module(pools.train_x[:6])
    expected = [sum(float(p[3 * k, a] * p[3 * k + 1, b] * p[3 * k + 2, a + b]) for a in range(10) for b in range(10 - a))
                for k in range(2)]
    assert got == pytest.approx(expected, abs=1e-6)
