"""experiments/nesy/multi_digit.py: per-N batch sizes, a table from run folders, and a cell's
folder reused only with the config it was run with."""

from __future__ import annotations

import csv

import pytest

from experiments.nesy import multi_digit
from gedi_core.errors import GediError
from gedi_nesy.config import NesyConfig


@pytest.mark.parametrize("text, n, want", [("32", 100, 32), ("32,5=8", 4, 32), ("32,5=8", 5, 8),
                                           ("32,5=8,100=4", 15, 8), ("32,5=8,100=4", 100, 4)])
def test_a_setting_of_each_n(text, n, want):
    assert multi_digit.PerN.parse(text).at(n) == want


@pytest.mark.parametrize("flag, text", [("--batch-size", ""), ("--batch-size", "5=8"), ("--epochs", "32,x=8"),
                                        ("--batch-size", "32,5=0"), ("--examples", "-3"), ("--examples", "0,4=-1")])
def test_bad_settings_of_n_are_one_line(flag, text, capsys):
    with pytest.raises(SystemExit) as exc:
        multi_digit.main([flag, text, "--out", "unused"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and ": error: " in err[-1] and flag in err[-1]


@pytest.mark.slow
def test_a_table_from_its_cells_reused_only_with_the_same_config(tmp_path, capsys):
    args = ["--data", "digits", "--digits", "1", "--programs", "long", "--arms", "nesy", "--epochs", "1",
            "--examples", "12", "--test-examples", "4", "--batch-size", "4", "--out", str(tmp_path)]
    assert multi_digit.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert len(rows) == 1 and rows[0]["N"] == "1" and rows[0]["batch"] == "4" and rows[0]["examples"] == "12"
    assert 0 <= float(rows[0]["digit acc"]) <= 1 and 0 <= float(rows[0]["sum acc"]) <= 1
    table = (tmp_path / "table.md").read_text()
    assert f"| 1 | long | nesy | 0 | {float(rows[0]['digit acc']):.3f} (" in table  # the summary over seeds
    done = (tmp_path / "n1_long_nesy_s0" / "multi_digit.json").read_text()
    capsys.readouterr()
    assert multi_digit.main(args) == 0  # the finished cell is read back, not run again
    assert multi_digit.main([*args[:-2], "--seeds", "0,1", "--report", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert not (tmp_path / "n1_long_nesy_s1").exists()  # --report runs nothing
    assert any(line.startswith("| 1 | long | nesy | 1 |") and line.endswith("| not run |") for line in lines)
    assert (tmp_path / "n1_long_nesy_s0" / "multi_digit.json").read_text() == done
    changed = [a if a != "1" or args[i - 1] != "--epochs" else "2" for i, a in enumerate(args)]
    assert multi_digit.main(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run of another config (epochs: 1 -> 2)" in err[0]
    assert (tmp_path / "n1_long_nesy_s0" / "multi_digit.json").read_text() == done


def test_each_cell_restarts_by_the_training_loss_per_digit():
    settings = dict(data="digits", data_root=None, epochs=multi_digit.PerN.parse("10,100=2"),
                    batch_size=multi_digit.PerN.parse("32,5=8"), examples=multi_digit.PerN.parse("0,100=2000", 0),
                    test_examples=4, sets=None, threads=1, out="unused", restarts=4, restart_per_digit=0.2,
                    restart_plateau=0)
    for n, above, batch, epochs, examples in [(1, 0.4, 32, 10, 1), (4, 1.6, 32, 10, 1), (15, 6.0, 8, 10, 1),
                                              (100, 40.0, 8, 2, 2000)]:
        cfg = multi_digit.cell_config(n, "long", "nesy", 0, settings)
        assert (cfg.restarts, cfg.restart_plateau, cfg.batch_size, cfg.epochs) == (4, 0, batch, epochs)
        assert cfg.restart_above == pytest.approx(above) and cfg.data.examples == examples and cfg.data.digits == n
    plain = multi_digit.cell_config(4, "long", "nesy", 0, {**settings, "restarts": 0})
    assert plain.restarts == 0 and plain.restart_above == NesyConfig().restart_above  # the config's own keys
    overridden = multi_digit.cell_config(4, "long", "nesy", 0, {**settings, "sets": ["restart_above=3"]})
    assert overridden.restarts == 4 and overridden.restart_above == 3  # --set wins


def test_a_cell_is_compared_by_its_program_text_not_its_path(tmp_path):
    settings = dict(data="digits", data_root=None, epochs=multi_digit.PerN.parse("1"),
                    batch_size=multi_digit.PerN.parse("4"), examples=multi_digit.PerN.parse("12", 0),
                    test_examples=4, sets=None, threads=1, out=str(tmp_path), restarts=0, restart_per_digit=0.2,
                    restart_plateau=0)
    cfg = multi_digit.cell_config(1, "long", "nesy", 0, settings)
    from gedi_core.config import to_dict

    run_dir = tmp_path / "cell"
    run_dir.mkdir()
    saved = {**to_dict(cfg), "program": "/elsewhere/programs/long_addition.pl"}  # another checkout
    (run_dir / "program.pl").write_text(open(cfg.program).read())
    multi_digit.check_same_config(run_dir, saved, cfg, settings)  # the same program: reused
    (run_dir / "program.pl").write_text(open(cfg.program).read() + "\nextra(1).\n")
    with pytest.raises(GediError, match="program: the text of .* differs from the run's program.pl"):
        multi_digit.check_same_config(run_dir, saved, cfg, settings)


@pytest.mark.slow
def test_a_cell_interrupted_inside_a_start_resumes(tmp_path, capsys):
    """With restarts a cell's folder has its starts' folders; a command killed during a start
    leaves only that start's checkpoint, and the next command resumes it instead of skipping it."""
    args = ["--data", "digits", "--digits", "1", "--programs", "long", "--arms", "nesy", "--epochs", "2",
            "--examples", "12", "--test-examples", "4", "--batch-size", "4", "--restarts", "1",
            "--restart-per-digit", "0", "--out", str(tmp_path)]  # every start is restarted: two starts
    assert multi_digit.main(args) == 0
    cell = tmp_path / "n1_long_nesy_s0"
    first = list(csv.DictReader(open(tmp_path / "table.csv")))[0]
    assert first["starts"] == "2"
    for f in [cell / "multi_digit.json", cell / "metrics.json", cell / "checkpoint.pt", cell / "start1" / "metrics.json"]:
        f.unlink()  # as if killed during start1's last epoch
    assert multi_digit.main(args) == 0
    again = list(csv.DictReader(open(tmp_path / "table.csv")))[0]
    assert "skipped" not in again or not again["skipped"]
    assert again["starts"] == "2" and again["digit acc"] == first["digit acc"]
