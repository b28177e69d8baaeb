"""The table commands end to end on synthetic files: train missing runs, evaluate, write Markdown + CSV."""

import csv
import sys
from pathlib import Path

import pytest
from vision_fakes import write_mnist_like

from experiments.vision import table4, table5, table10  # noqa: F401 (table5: imports)
from experiments.vision.common import ood_table


@pytest.mark.slow
def test_table_commands_train_collect_and_write(tmp_path):
    root = write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=48, n_test=32)
    write_mnist_like(tmp_path / "data", "MNIST", n_train=48, n_test=32)
    common = ["--runs", str(tmp_path / "runs"), "--datasets", "fashion-mnist", "--methods", "gedi_no_gen", "swav",
              "--data-root", str(root)]
    tiny = ["--set", "epochs=1", "--set", "model.width=8", "--set", "batch_size=16"]
    assert table4.main([*common, *tiny]) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tables" / "table4.csv")))
    assert {r["method"] for r in rows} == {"gedi_no_gen", "swav"} and all(r["runs"] == "1" for r in rows)
    assert "| GEDI no gen |" in (tmp_path / "runs" / "tables" / "table4.md").read_text()
    assert table10.main([*common, "--no-train"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tables" / "table10.csv")))
    assert all(0.0 <= float(r["probe_acc_mean"]) <= 1.0 for r in rows)
    assert ood_table("doc", "table5", "cifar10", ["svhn"], "t", [*common, "--no-train", "--ood", "mnist"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tables" / "table5.csv")))
    assert [r["ood"] for r in rows] == ["mnist", "mnist"] and all(0 <= float(r["auroc_grad_norm_mean"]) <= 1
                                                                  for r in rows)


@pytest.mark.slow
def test_gpu_table_script_runs_tables_4_5_10_with_resume(tmp_path):
    """experiments/vision/gpu.sh end to end on synthetic files, on the CPU, with tiny settings."""
    import os
    import subprocess

    from gedi_core.evaluation.classifier_features import FeatureClassifier, save_feature_classifier

    root = write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=48, n_test=32)
    write_mnist_like(tmp_path / "data", "MNIST", n_train=48, n_test=32)
    features = save_feature_classifier(FeatureClassifier(1, 10), tmp_path / "f.pt", (28, 28))
    script = Path(__file__).resolve().parents[1] / "experiments" / "vision" / "gpu.sh"
    env = {**os.environ, "PYTHON": sys.executable, "RUNS": str(tmp_path / "runs"), "DATA": str(root), "SEEDS": "1",
           "DATASETS": "fashion-mnist", "METHODS": "gedi swav", "OOD_IN": "fashion-mnist", "OOD": "mnist",
           "DEVICE": "cpu", "NPROC": "1", "FID_FEATURES": str(features), "FID_SAMPLES": "20", "FID_STEPS": "2"}
    tiny = ["--set", "epochs=1", "--set", "model.width=8", "--set", "batch_size=16"]
    for _ in range(2):  # the second call reuses every run and evaluation
        proc = subprocess.run(["bash", str(script), *tiny], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "$ " not in proc.stdout  # nothing trained or evaluated again
    tables = tmp_path / "runs" / "tables"
    rows = {r["method"]: r for r in csv.DictReader(open(tables / "table4.csv"))}
    assert set(rows) == {"gedi", "swav"} and float(rows["gedi"]["fid_mean"]) >= 0
    assert [r["ood"] for r in csv.DictReader(open(tables / "table5.csv"))] == ["mnist", "mnist"]
    assert (tables / "table10.md").is_file()
