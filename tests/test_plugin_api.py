"""The plugin as a DeepProbLog user meets it: gedi_network, GEDILoss, train_model, the example
script, predict and export, and the frictions a new user meets first (fast, offline, embedded digits)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gedi_core.errors import GediError
from gedi_nesy import GEDILoss, NesyConfig, gedi_network, load_network, train_model
from gedi_nesy import cli as nesy_cli
from gedi_nesy.data import embedded_digits
from gedi_nesy.program import build_nesy_model
from gedi_nesy.train import checked_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--examples", "12", "--test-examples", "6", "--epochs", "1", "--batch-size", "6",
        "--sgld-steps", "2", "--no-progress", "--seed", "0"]


def load_example():
    spec = importlib.util.spec_from_file_location("deepproblog_addition", ROOT / "examples" / "deepproblog_addition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gedi_network_defaults_are_a_trainable_ten_class_image_network():
    net = gedi_network("digit_net")
    assert net.network_module.num_clusters == 10 and net.optimizer is not None and net.batching
    probs = net.network_module(torch.zeros(3, 1, 28, 28))
    assert probs.shape == (3, 10) and torch.allclose(probs.sum(-1), torch.ones(3))


@pytest.mark.parametrize("engine", ["batched", "exact"])
def test_train_model_adds_the_gedi_terms_in_deepproblogs_loop(engine):
    """gedi_nesy.train_model on a DeepProbLog DataLoader: DeepProbLog's TrainObject and logger come
    back, the GEDI terms are logged, and the network's weights move with every term."""
    from deepproblog.dataset import DataLoader

    example = load_example()
    torch.manual_seed(0)
    pools = embedded_digits(seed=0)
    net = gedi_network("gedi_net")
    model = build_nesy_model(ROOT / "programs" / "sum.pl", [net], pools, engine=engine)
    before = [p.detach().clone() for p in net.network_module.parameters()]
    loader = DataLoader(example.Addition("train", pools.train_y, 8, 0), 4, False)
    gedi = GEDILoss(sgld=None, seed=0)
    gedi.sgld.steps = 2
    train = train_model(model, loader, 1, gedi=gedi, log_iter=100, verbose=0)
    assert type(train).__mro__[1].__name__ == "TrainObject" and train.logger is not None
    assert set(train.gedi_terms) == {"gen", "prior"} and all(np.isfinite(list(train.gedi_terms.values())))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.network_module.parameters()))
    assert gedi.buffer_samples() is not None  # SGLD ran on the batch's images


def test_gedi_terms_change_deepproblogs_gradient():
    """The drop-in's gradient is DeepProbLog's L_NESY gradient plus GEDILoss's, not just one of them."""
    from deepproblog.dataset import DataLoader

    example = load_example()
    pools = embedded_digits(seed=0)
    grads = {}
    for label, gedi in (("nesy", GEDILoss(gen=0.0, prior=0.0)), ("gedi+nesy", GEDILoss(gen=0.0, prior=25.0))):
        torch.manual_seed(0)
        net = gedi_network("gedi_net", optimizer=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0))
        model = build_nesy_model(ROOT / "programs" / "sum.pl", [net], pools, engine="exact")
        loader = DataLoader(example.Addition("train", pools.train_y, 4, 0), 4, False)
        from gedi_nesy.plugin import GEDITrainObject

        obj = GEDITrainObject(model, gedi)
        batch = next(iter(loader))
        model.optimizer.zero_grad()
        obj.get_loss(batch, model.solver.semiring.cross_entropy)
        grads[label] = torch.cat([p.grad.flatten() for p in net.network_module.parameters() if p.grad is not None])
    assert not torch.allclose(grads["nesy"], grads["gedi+nesy"])


def test_the_deepproblog_example_runs_in_a_short_form():
    result = load_example().main(["--examples", "8", "--test-examples", "6", "--batch-size", "4", "--log-iter", "100"])
    assert 0.0 <= result["sum_accuracy"] <= 1.0 and set(result["gedi_terms"]) == {"gen", "prior"}


def test_a_config_that_names_another_program_is_refused():
    pools = embedded_digits(seed=0)
    model = build_nesy_model(ROOT / "programs" / "sum.pl", [gedi_network("gedi_net")], pools)
    with pytest.raises(GediError, match="the model was built from"):
        checked_config(NesyConfig(program=str(ROOT / "programs" / "addition.pl")), model, 10, 5)
    cfg = checked_config(NesyConfig(program=str(ROOT / "programs" / "sum.pl")), model, 200, 7)
    assert (cfg.epochs, cfg.data.examples, cfg.data.test_examples, cfg.data.download) == (100, 200, 7, False)


@pytest.mark.slow
def test_config_yaml_records_the_values_the_run_used(tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("".join(f"sum(tensor(train({2 * i})), tensor(train({2 * i + 1})), {i % 10}).\n" for i in range(5)))
    out = tmp_path / "run"
    argv = ["train", "--program", str(ROOT / "programs" / "sum.pl"), "--queries", str(queries), "--epochs", "1",
            "--batch-size", "5", "--sgld-steps", "1", "--no-progress", "--amp", "--out", str(out)]
    assert nesy_cli.main(argv) == 0, capsys.readouterr().err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["examples"] == 5 and cfg["epochs"] == 1 and cfg["data"]["download"] is False
    assert cfg["amp"] is True  # --amp: bfloat16 autocast (on the CPU too, the path a CUDA run takes)
    for name in ("losses.png", "confusion.png", "classes.png", "epochs.csv", "log.csv"):
        assert (out / name).is_file(), name
    with open(out / "log.csv") as f:
        assert {"prior_gap", "max_cluster_share", "embedding_var", "sgld_max_abs"} <= set(next(csv.DictReader(f)))


@pytest.mark.slow
def test_export_is_small_and_loads_back_as_the_same_network(tmp_path, capsys):
    run = tmp_path / "run"
    assert nesy_cli.main(["train", *FAST, "--out", str(run)]) == 0
    assert nesy_cli.main(["export", "--run", str(run), "--out", str(tmp_path / "net.pt")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["bytes"] < (run / "checkpoint.pt").stat().st_size / 20  # no replay buffer, no optimizer
    net = load_network(tmp_path / "net.pt")
    state = torch.load(run / "checkpoint.pt", weights_only=False)["step"]["model"]["networks"]["gedi_net"]
    for k, v in net.network_module.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.slow
def test_predict_writes_probabilities_energies_and_every_answer(tmp_path, capsys):
    run = tmp_path / "run"
    assert nesy_cli.main(["train", *FAST, "--program", str(ROOT / "programs" / "sum.pl"), "--out", str(run)]) == 0
    images = embedded_digits(seed=0).test_x[:4]
    np.savez(tmp_path / "imgs.npz", images=((images[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8))
    (tmp_path / "q.txt").write_text("sum(tensor(images(0)), tensor(images(1)), X).\n"
                                    "sum(tensor(images(2)), tensor(images(3)), 5).\n")
    argv = ["predict", "--run", str(run), "--images", str(tmp_path / "imgs.npz"), "--queries", str(tmp_path / "q.txt"),
            "--out", str(tmp_path / "pred")]
    assert nesy_cli.main(argv) == 0, capsys.readouterr().err
    with open(tmp_path / "pred" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(abs(sum(float(r[f"p_{d}"]) for d in range(10)) - 1) < 1e-4 for r in rows)
    assert all(np.isfinite(float(r["energy"])) for r in rows)
    queries = json.loads((tmp_path / "pred" / "queries.json").read_text())
    free = [q for q in queries if q["query"] == 0]
    assert len(free) == 19 and sum(q["most_likely"] for q in free) == 1  # sums 0..18
    assert abs(sum(q["probability"] for q in free) - 1.0) < 1e-4
    assert max(free, key=lambda q: q["probability"])["most_likely"]
    assert len([q for q in queries if q["query"] == 1]) == 1


def test_no_pyswip_warning_on_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "gedi_nesy", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "ApproximateEngine" not in proc.stderr and "PySwip" not in proc.stderr


@pytest.mark.slow
def test_the_same_script_trains_the_same_weights_on_both_engines():
    """DeepProbLog's loop with GEDI on BatchedEngine and on ExactEngine: same weights after a few
    batches (same initialisation, same SGLD noise), up to float tolerance."""
    from deepproblog.dataset import DataLoader

    example = load_example()
    pools = embedded_digits(seed=0)
    weights = {}
    for engine in ("batched", "exact"):
        torch.manual_seed(0)
        net = gedi_network("gedi_net")
        model = build_nesy_model(ROOT / "programs" / "sum.pl", [net], pools, engine=engine)
        loader = DataLoader(example.Addition("train", pools.train_y, 12, 0), 4, False)
        gedi = GEDILoss(seed=0)
        gedi.sgld.steps = 2
        torch.manual_seed(1)
        train_model(model, loader, 1, gedi=gedi, log_iter=100, verbose=0)
        weights[engine] = [p.detach().clone() for p in net.network_module.parameters()]
    for a, b in zip(weights["batched"], weights["exact"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
