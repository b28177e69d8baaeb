"""The CPU-scale vision study end to end on synthetic files: train, evaluate, references, table, figure."""

import csv

import pytest
import torch
from vision_fakes import write_mnist_like

from gedi_core.evaluation.classifier_features import (classifier_accuracy, save_feature_classifier,
                                                      train_feature_classifier)
from gedi_core.evaluation.fid import fid_score

from experiments.vision import cpu as vision_cpu


def test_feature_classifier_learns_and_gives_a_fid_that_tells_real_from_noise(tmp_path):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    x = (y.float()[:, None, None, None] / 1.5 - 1) + 0.2 * torch.randn(400, 1, 28, 28, generator=gen)
    net = train_feature_classifier(x[:300].clamp(-1, 1), y[:300], epochs=3, seed=0)
    assert classifier_accuracy(net, x[300:].clamp(-1, 1), y[300:]) > 0.9
    path = save_feature_classifier(net, tmp_path / "f.pt", (28, 28))
    real, more_real = x[300:350].clamp(-1, 1), x[350:].clamp(-1, 1)
    noise = torch.rand(50, 1, 28, 28, generator=gen) * 2 - 1
    assert fid_score(real, more_real, features=str(path)) < 0.5 * fid_score(real, noise, features=str(path))


@pytest.mark.slow
def test_vision_cpu_study_trains_evaluates_and_writes_the_table(tmp_path):
    root = write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=96, n_test=48)
    write_mnist_like(tmp_path / "data", "MNIST", n_train=48, n_test=48)
    out = tmp_path / "results"
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--methods", "gedi", "swav", "--seeds", "1",
            "--jobs", "2", "--data-root", str(root), "--fid-samples", "40", "--fid-steps", "2",
            "--set", "epochs=1", "--set", "model.width=8", "--set", "batch_size=16", "--ood", "mnist"]
    assert vision_cpu.main(argv) == 0
    rows = list(csv.DictReader(open(out / "vision_cpu_runs.csv")))
    assert [(r["method"], r["seed"]) for r in rows] == [("gedi", "0"), ("swav", "0")]
    for r in rows:
        assert 0 <= float(r["nmi"]) <= 1 and 0 <= float(r["ood_auroc_energy"]) <= 1
        assert 0 <= float(r["probe_acc"]) <= 1 and float(r["fid"]) >= 0 and r["evaluated_on"] == "test"
    assert float(rows[0]["fid_buffer"]) >= 0 and rows[1]["fid_buffer"] == ""  # a replay buffer: GEDI only
    table = (out / "vision_cpu.md").read_text()
    assert "| k-means on raw pixels |" in table and "| GEDI |" in table and "| SwAV |" in table
    assert str(tmp_path) not in table  # no absolute paths in a results file
    assert (out / "vision_cpu_samples.png").stat().st_size > 0
    assert (tmp_path / "runs" / "fashion-mnist" / "gedi" / "seed0" / "samples_buffer.png").is_file()
    # rerun: everything is reused (no training, cached evaluations), the table is written again
    mtime = (tmp_path / "runs" / "fashion-mnist" / "gedi" / "seed0" / "metrics.json").stat().st_mtime
    assert vision_cpu.main(argv) == 0
    assert (tmp_path / "runs" / "fashion-mnist" / "gedi" / "seed0" / "metrics.json").stat().st_mtime == mtime
