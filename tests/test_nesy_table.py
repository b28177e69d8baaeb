"""experiments.nesy.table6: runs the arms, reuses finished runs, and reports from run folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from experiments.nesy import table6

torch.set_num_threads(1)

TINY = ["--data", "digits", "--sizes", "12", "--seeds", "0", "--epochs", "1",
        "--set", "data.test_examples=6", "--set", "batch_size=6", "--set", "sgld.steps=2"]


def read_table(out: Path) -> list[dict]:
    with open(out / "table6.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_table_runs_each_arm_then_reports_from_the_run_folders(tmp_path, capsys):
    out = tmp_path / "t6"
    assert table6.main([*TINY, "--out", str(out)]) == 0
    rows = read_table(out)
    assert [r["arm"] for r in rows] == ["nesy", "gedi", "gedi+nesy"]
    assert all(r["seeds"] == "1" and " ± " in r["digit_acc"] for r in rows)
    for arm in ("nesy", "gedi", "gedi_nesy"):
        assert (out / f"digits_n12_{arm}_s0" / "metrics.json").is_file()
    first = (out / "table6.md").read_text()

    # a second seed that was never trained is reported as missing, the finished runs are reused
    (out / "table6.csv").unlink()
    assert table6.main([*TINY, "--seeds", "0,1", "--out", str(out), "--report-only"]) == 0
    assert "not run" in capsys.readouterr().err
    assert not (out / "digits_n12_nesy_s1").exists()
    again = (out / "table6.md").read_text()
    table = lambda md: md[md.index("| examples"):]  # noqa: E731 - the header names each command
    assert table(again) == table(first)
    assert "--report-only" in again and "Seeds that finished: 0." in again


@pytest.mark.slow
def test_the_lgen_study_reads_both_sets_of_runs_and_scores_energy_against_ood_images(tmp_path):
    """experiments.nesy.lgen: the same runs with and without L_GEN, read back from their
    folders; the energy AUROC against an OOD set (here synthetic files in the Fashion-MNIST
    layout), the table over seeds and the sample grid."""
    from experiments.nesy import lgen
    from vision_fakes import write_mnist_like

    tiny = [a for a in TINY if a not in ("--seeds", "0")]
    for gen, folder in (("0.04", "with"), ("0", "without")):
        assert table6.main([*tiny, "--seeds", "10,11", "--arms", "gedi+nesy", "--set", f"weights.gen={gen}",
                            "--out", str(tmp_path / folder)]) == 0
    ood = write_mnist_like(tmp_path / "ood", n_test=30) / "FashionMNIST" / "raw"
    out = tmp_path / "results"
    assert lgen.main(["--with", str(tmp_path / "with"), "--without", str(tmp_path / "without"), "--data", "digits",
                      "--sizes", "12", "--seeds", "10,11", "--ood-root", str(ood), "--ood-images", "30",
                      "--sgld-steps", "2", "--out", str(out)]) == 0
    with open(out / "nesy_lgen_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert sorted((r["L_GEN"], r["seed"]) for r in runs) == [("with", "10"), ("with", "11"),
                                                              ("without", "10"), ("without", "11")]
    assert all(0.0 <= float(r["ood_auroc"]) <= 1.0 for r in runs)
    assert {r["gen"] for r in runs} == {"0.04", "0.0"}
    md = (out / "nesy_lgen.md").read_text()
    assert "| 12 | with (gen 0.04) |" in md and "| 12 | without (gen 0) |" in md
    assert (out / "nesy_lgen_samples.png").is_file()
    assert lgen.auroc(torch.tensor([-3.0, -2.0]), torch.tensor([-1.0, 0.0])) == 1.0  # higher energy = out


def test_seed_starts_tells_a_pair_that_agreed_from_a_spent_budget(tmp_path, capsys):
    """``experiments.nesy.seed_starts``: per seed, starts and cuts, how the run ended (the
    trainer's rule under the run's config) and the starts renamed through the neighbours, read
    from the run folders."""
    from experiments.nesy import seed_starts

    def run(seed: int, starts: list[dict], renamed: dict[int, str]) -> None:
        folder = tmp_path / f"mnist_n100_gedi_nesy_s{seed}"
        for s in starts:
            (folder / f"start{s['start']}").mkdir(parents=True)
            rows = "epoch,renamed_neighbours\n1,\n2," + renamed.get(s["start"], "") + "\n"
            (folder / f"start{s['start']}" / "epochs.csv").write_text(rows)
        kept = starts[-1]
        (folder / "config.yaml").write_text("restart_judge: neighbours\nrestart_above: 0.85\nrestart_agree: 0.5\n")
        (folder / "metrics.json").write_text(json.dumps(
            {"seed": seed, "digit_acc": kept["digit_acc"], "cluster_acc": kept["digit_acc"], "nmi": 0.8,
             "query_acc": 0.7, "chosen_start": kept["start"], "starts": starts, "seconds": 600.0}))

    cut = {"cut_at": 100, "digit_acc": None, "train_nesy": 2.79}
    run(7, [{"start": 0, **cut}, {"start": 1, "digit_acc": 0.9, "train_nesy": 0.2, "neighbour_nesy": 0.6},
            {"start": 2, "digit_acc": 0.91, "train_nesy": 0.2, "neighbour_nesy": 0.7, "agrees_with": [1]}],
        {1: "renamed 1<->2"})
    run(3, [{"start": 0, "digit_acc": 0.4, "train_nesy": 0.2, "neighbour_nesy": 1.1},
            {"start": 1, "digit_acc": 0.5, "train_nesy": 0.2, "neighbour_nesy": 0.95, "agrees_with": [0]}], {})
    assert seed_starts.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row3, row7 = lines[2], lines[3]  # sorted by seed
    assert row3.startswith("| 3 |") and "budget spent" in row3 and "| 2 (0 cut) |" in row3
    assert row7.startswith("| 7 |") and "a pair that agreed" in row7 and "| 3 (1 cut) |" in row7
    assert "start 1 (0.9)" in row7 and "start 2" not in row7
    assert any(line.startswith("median 0.7050") and "worst 0.5" in line for line in lines)
    assert seed_starts.main([str(tmp_path), "--examples", "1000"]) == 2
