"""The DeepProbLog-script study's table: each budget's runs, a budget of all pairs (PAIRS 0)
matched by the pairs its runs drew (fast, no training)."""

from __future__ import annotations

import argparse

from experiments.nesy.deepproblog_study import write_table


def run(port: str, digits: int, pairs: int, seed: int, acc: float) -> dict:
    return {"port": port, "digits": digits, "pairs": pairs, "batch": 2, "epochs": 1, "seed": seed,
            "digit_acc": acc, "sum_acc": acc / 2, "seconds": 10.0, "evaluated_on": "test"}


def test_budget_of_all_pairs_lists_its_runs(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), budgets="4:0:2:1,1:100:2:1", ports="engine,none",
                              validation=0.0, data_root=str(tmp_path), split_seed=0, seeds="10,11", test_pairs=200)
    results = [run("engine", 4, 1000, 10, 0.9), run("engine", 4, 1000, 11, 0.8), run("none", 1, 100, 10, 0.5),
               run("none", 1, 1000, 10, 0.7)]
    write_table(args, results, ["--out", str(tmp_path)])
    rows = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| 4") or
            line.startswith("| 1")]
    assert len(rows) == 2
    assert "0.900 / 0.800" in rows[0] and "BatchedEngine" in rows[0]
    assert "0.500" in rows[1] and "0.700" not in rows[1]  # 1000 pairs is another budget than 100


def test_a_kept_run_made_with_other_train_args_is_refused_not_reused(tmp_path):
    """A study resumed into a folder whose gedi run was made with other --train-args (or --gedi)
    stops with one line naming the flag, instead of reporting the other run as this one."""
    import json

    import pytest

    from experiments.nesy.deepproblog_study import run_one, run_name

    budget = (1, 100, 2, 1)
    path = tmp_path / "runs" / f"{run_name('gedi', budget, 10)}.json"
    path.parent.mkdir()
    kept = {**run("gedi", 1, 100, 10, 0.8), "gedi": "", "train_args": ""}
    path.write_text(json.dumps(kept))
    args = argparse.Namespace(out=str(tmp_path), gedi="", train_args="")
    assert run_one(args, "gedi", budget, 10) == kept
    with pytest.raises(SystemExit, match="--train-args"):
        run_one(argparse.Namespace(out=str(tmp_path), gedi="", train_args="restarts=2"), "gedi", budget, 10)
    with pytest.raises(SystemExit, match="--gedi"):
        run_one(argparse.Namespace(out=str(tmp_path), gedi="prior=5", train_args=""), "gedi", budget, 10)
    # the other ports never take them: a kept run of DeepProbLog as shipped is reused whatever they say
    other = tmp_path / "runs" / f"{run_name('none', budget, 10)}.json"
    other.write_text(json.dumps({**kept, "port": "none"}))
    assert run_one(argparse.Namespace(out=str(tmp_path), gedi="", train_args="restarts=2"), "none", budget, 10)
