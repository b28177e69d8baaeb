"""experiments/nesy_table6.py: runs the arms, reuses finished runs, and reports from run folders."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import nesy_table6  # noqa: E402

TINY = ["--data", "digits", "--sizes", "12", "--seeds", "0", "--epochs", "1",
        "--set", "data.test_examples=6", "--set", "batch_size=6", "--set", "sgld.steps=2"]


def read_table(out: Path) -> list[dict]:
    with open(out / "table6.csv") as f:
        return list(csv.DictReader(f))


def test_table_runs_each_arm_then_reports_from_the_run_folders(tmp_path, capsys):
    out = tmp_path / "t6"
    assert nesy_table6.main([*TINY, "--out", str(out)]) == 0
    rows = read_table(out)
    assert [r["arm"] for r in rows] == ["nesy", "gedi", "gedi+nesy"]
    assert all(r["seeds"] == "1" and " ± " in r["digit_acc"] for r in rows)
    for arm in ("nesy", "gedi", "gedi_nesy"):
        assert (out / f"digits_n12_{arm}_s0" / "metrics.json").is_file()
    first = (out / "table6.md").read_text()

    # a second seed that was never trained is reported as missing, the finished runs are reused
    (out / "table6.csv").unlink()
    assert nesy_table6.main([*TINY, "--seeds", "0,1", "--out", str(out), "--report-only"]) == 0
    assert "not run" in capsys.readouterr().err
    assert not (out / "digits_n12_nesy_s1").exists()
    again = (out / "table6.md").read_text()
    table = lambda md: md[md.index("| examples"):]  # noqa: E731 - the header names each command
    assert table(again) == table(first)
    assert "--report-only" in again and "Seeds that finished: 0." in again
