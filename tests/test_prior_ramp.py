"""The ramp of L_PRIOR's weight (``--prior-ramp``): the schedule, the weight each epoch trains
with, and a resumed start that goes on from the checkpoint's weight."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from gedi_nesy import cli  # noqa: E402
from gedi_nesy.start import ramped_weight  # noqa: E402

FAST = ["train", "--examples", "12", "--test-examples", "6", "--batch-size", "6", "--sgld-steps", "2", "--no-progress",
        "--seed", "0", "--arm", "gedi+nesy", "--w-prior", "25"]


def test_the_ramp_rises_linearly_and_then_holds():
    assert ramped_weight(25.0, 1.0, 4, 0) == 1.0
    assert ramped_weight(25.0, 1.0, 4, 2) == pytest.approx(13.0)
    assert ramped_weight(25.0, 1.0, 4, 4) == 25.0
    assert ramped_weight(25.0, 1.0, 4, 40) == 25.0
    assert ramped_weight(25.0, 1.0, 0, 0) == 25.0  # no ramp: the full weight at once
    assert ramped_weight(2.0, 10.0, 2, 1) == pytest.approx(6.0)  # a ramp may fall too


def epoch_rows(folder: Path) -> list[dict]:
    with open(folder / "epochs.csv") as f:
        return list(csv.DictReader(f))


def run(args: list[str], capsys) -> tuple[int, dict | None]:
    rc = cli.main(args)
    out = capsys.readouterr().out.strip().splitlines()
    return rc, (json.loads(out[-1]) if rc == 0 else None)


@pytest.mark.slow
def test_each_epoch_trains_with_its_ramped_weight_and_a_resumed_start_goes_on(tmp_path, capsys, interrupt_after):
    args = [*FAST, "--epochs", "3", "--prior-ramp", "2", "--prior-ramp-from", "5"]
    rc, straight = run([*args, "--out", str(tmp_path / "a")], capsys)
    assert rc == 0
    rows = epoch_rows(tmp_path / "a")
    assert [float(r["w_prior"]) for r in rows] == [5.0, 15.0, 25.0]
    interrupt_after(2)  # killed after the checkpoint at the start of epoch 2 (weight 15)
    assert cli.main([*args, "--out", str(tmp_path / "b")]) == 130
    capsys.readouterr()
    rc, resumed = run([*args, "--out", str(tmp_path / "b"), "--resume"], capsys)
    assert rc == 0
    assert resumed["digit_acc"] == straight["digit_acc"] and resumed["nmi"] == straight["nmi"]

    def steady(folder: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("seconds", "queries_per_s")} for r in epoch_rows(tmp_path / folder)]

    assert steady("a") == steady("b")


@pytest.mark.slow
def test_without_a_ramp_no_epoch_row_names_a_prior_weight(tmp_path, capsys):
    rc, _ = run([*FAST, "--epochs", "2", "--out", str(tmp_path / "c")], capsys)
    assert rc == 0
    assert all("w_prior" not in r for r in epoch_rows(tmp_path / "c"))
