"""The table commands end to end on synthetic files: train missing runs, evaluate, write Markdown + CSV."""

import csv
import sys
from pathlib import Path

from vision_fakes import write_mnist_like

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import vision_table4  # noqa: E402
import vision_table5  # noqa: E402,F401
import vision_table10  # noqa: E402
from vision_common import ood_table  # noqa: E402


def test_table_commands_train_collect_and_write(tmp_path):
    root = write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=48, n_test=32)
    write_mnist_like(tmp_path / "data", "MNIST", n_train=48, n_test=32)
    common = ["--runs", str(tmp_path / "runs"), "--datasets", "fashion-mnist", "--methods", "gedi_no_gen", "swav",
              "--data-root", str(root)]
    tiny = ["--set", "epochs=1", "--set", "model.width=8", "--set", "batch_size=16"]
    assert vision_table4.main([*common, *tiny]) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tables" / "table4.csv")))
    assert {r["method"] for r in rows} == {"gedi_no_gen", "swav"} and all(r["runs"] == "1" for r in rows)
    assert "| GEDI no gen |" in (tmp_path / "runs" / "tables" / "table4.md").read_text()
    assert vision_table10.main([*common, "--no-train"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tables" / "table10.csv")))
    assert all(0.0 <= float(r["probe_acc_mean"]) <= 1.0 for r in rows)
    assert ood_table("doc", "table5", "cifar10", ["svhn"], "t", [*common, "--no-train", "--ood", "mnist"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tables" / "table5.csv")))
    assert [r["ood"] for r in rows] == ["mnist", "mnist"] and all(0 <= float(r["auroc_grad_norm_mean"]) <= 1
                                                                  for r in rows)
