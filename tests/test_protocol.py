"""The protocol for results: a validation split carved from the training pool, on which a run is
evaluated without ever reading the test pool; experiments.nesy.table6's --select mode and its header; no
absolute paths in committed results (fast, offline)."""

from __future__ import annotations

import contextlib
import csv
import json
import re
from pathlib import Path
from typing import Iterator

import pytest
import torch

from gedi_core.errors import GediError
from gedi_nesy import cli
from gedi_nesy.config import NesyConfig, NesyDataConfig
from gedi_nesy.data import Pools, carve_validation, embedded_digits, load_pools
from gedi_nesy.run_setup import prepare

REPO = Path(__file__).resolve().parents[1]

from experiments.nesy import table6

FAST = ["--examples", "12", "--test-examples", "6", "--epochs", "1", "--batch-size", "6",
        "--sgld-steps", "2", "--no-progress", "--seed", "0"]


def keys(images: torch.Tensor) -> list[bytes]:
    """One key per image (its pixels): the embedded digits hold no two equal images."""
    return [x.numpy().tobytes() for x in images]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- the split
def test_validation_split_is_disjoint_seeded_and_leaves_the_test_pool_out():
    pools = embedded_digits(0.2, seed=0)
    carved = carve_validation(pools, 0.1, seed=0)
    assert carved.evaluated_on == "validation" and carved.eval_source == "val"
    assert carved.test_x is None and carved.test_y is None  # the test pool is not part of the run's pools
    assert set(carved.sizes()) == {"train", "val"}
    n = len(pools.train_x)
    assert len(carved.val_x) == round(0.1 * n) and len(carved.train_x) + len(carved.val_x) == n
    train, val, test = set(keys(carved.train_x)), set(keys(carved.val_x)), set(keys(pools.test_x))
    assert len(train) == len(carved.train_x) and len(val) == len(carved.val_x)
    assert not train & val and not train & test and not val & test
    assert train | val == set(keys(pools.train_x))  # a partition of the training pool
    # labels travel with their images
    by_image = dict(zip(keys(pools.train_x), pools.train_y.tolist()))
    assert [by_image[k] for k in keys(carved.val_x)] == carved.val_y.tolist()
    # seeded: the same seed carves the same pool, another seed another one
    assert torch.equal(carve_validation(pools, 0.1, seed=0).val_x, carved.val_x)
    assert not torch.equal(carve_validation(pools, 0.1, seed=1).val_x, carved.val_x)


def test_load_pools_validation_off_is_the_old_split_and_split_seed_fixes_the_test_pool():
    old = embedded_digits(0.2, seed=3)
    same = load_pools(NesyDataConfig(), 3)
    assert same.evaluated_on == "test" and same.val_x is None
    assert torch.equal(same.train_x, old.train_x) and torch.equal(same.test_x, old.test_x)
    assert set(same.sizes()) == {"train", "test"}
    fixed = load_pools(NesyDataConfig(split_seed=0), 3)  # the test pool of seed 0 for a run of seed 3
    assert torch.equal(fixed.test_x, embedded_digits(0.2, seed=0).test_x)
    val = load_pools(NesyDataConfig(validation=0.1), 3)
    assert val.test_x is None and torch.equal(val.val_x, carve_validation(old, 0.1, 3).val_x)


def test_carve_needs_labels_and_a_fraction_that_leaves_both_pools():
    x = torch.zeros(5, 1, 4, 4)
    with pytest.raises(GediError, match="train_labels"):
        carve_validation(Pools(x, None, x, torch.zeros(5, dtype=torch.long), "npz"), 0.2, 0)
    pools = Pools(x, torch.zeros(5, dtype=torch.long), x, torch.zeros(5, dtype=torch.long), "tiny")
    with pytest.raises(GediError, match="no validation image"):
        carve_validation(pools, 0.05, 0)


@pytest.mark.slow
def test_training_queries_never_touch_validation_or_test_images():
    cfg = cli.build_nesy_config([("flags", {"seed": 0, "data": {"examples": 100, "validation": 0.1}})])
    pools, model, train_q, eval_q = prepare(cfg, quiet=True)
    test = set(keys(embedded_digits(0.2, seed=0).test_x))
    val = set(keys(pools.val_x))
    assert len(train_q) == 100 and eval_q
    for q in train_q:
        for term in q.substitution.values():
            source, index = str(term.args[0].functor), int(term.args[0].args[0].value)
            assert source == "train"
            image = pools.train_x[index].numpy().tobytes()
            assert image not in val and image not in test
    # the evaluation queries name validation images only, and the model has no test pool at all
    assert {str(t.args[0].functor) for q in eval_q for t in q.substitution.values()} == {"val"}
    assert "test" not in model.tensor_sources and "val" in model.tensor_sources


# ----------------------------------------------------------------------------- the run
SENTINEL = 0.123456


@contextlib.contextmanager
def sentinel_inputs(dims: int) -> Iterator[dict[str, int]]:
    """Watch every input any torch module sees: ``seen["test"]`` counts the ``dims``-dimensional
    inputs' rows that are entirely SENTINEL (a test image or point reaching a network)."""
    seen = {"test": 0}

    def hook(module, inputs):
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.dim() == dims and x.numel():
                seen["test"] += int((x == SENTINEL).flatten(1).all(1).sum())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture
def marked_test_pool(monkeypatch):
    """The embedded digits' test images become a constant SENTINEL image, and every input any
    torch module sees is watched: ``seen["test"]`` counts the inputs holding a test image."""
    import gedi_nesy.image_sets as image_sets

    original = image_sets.embedded_digits

    def marked(test_fraction: float = 0.2, seed: int = 0) -> Pools:
        pools = original(test_fraction, seed)
        pools.test_x = torch.full_like(pools.test_x, SENTINEL)
        return pools

    monkeypatch.setattr(image_sets, "embedded_digits", marked)
    with sentinel_inputs(4) as seen:
        yield seen


@pytest.mark.slow
def test_with_validation_the_test_pool_is_never_evaluated(tmp_path, capsys, marked_test_pool):
    out = tmp_path / "select"
    rc, stdout, err = run_cli(["train", *FAST, "--validation", "0.1", "--out", str(out)], capsys)
    assert rc == 0, err
    metrics = json.loads(stdout.strip().splitlines()[-1])
    assert metrics["evaluated_on"] == "validation"
    assert "test_queries" not in metrics and metrics["validation_queries"] > 0
    assert "not read by this run" in metrics["data_note"]
    assert marked_test_pool["test"] == 0  # no test image ever went through a network
    assert json.loads((out / "metrics.json").read_text())["evaluated_on"] == "validation"
    assert "validation: 0.1" in (out / "config.yaml").read_text()
    rows = list(csv.DictReader(open(out / "epochs.csv")))
    assert rows and rows[-1]["digit_acc"] != ""
    # gedi-nesy eval of the selection run stays on the validation pool
    rc, stdout, err = run_cli(["eval", "--run", str(out)], capsys)
    assert rc == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["evaluated_on"] == "validation"
    assert marked_test_pool["test"] == 0

    # the control: a final run (no --validation) is evaluated on the test pool, and the spy sees it
    rc, stdout, err = run_cli(["train", *FAST, "--out", str(tmp_path / "final")], capsys)
    assert rc == 0, err
    final = json.loads(stdout.strip().splitlines()[-1])
    assert final["evaluated_on"] == "test" and final["test_queries"] > 0
    assert marked_test_pool["test"] > 0


def test_validation_refuses_query_files_and_bad_fractions(tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("addition(tensor(train(0)), tensor(train(1)), tensor(train(2))).\n")
    for args, fragment in ((["--validation", "0.1", "--queries", str(queries)], "--queries"),
                           (["--validation", "1"], "data.validation must lie in [0, 1)"),
                           (["--validation", "-0.1"], "data.validation must lie in [0, 1)")):
        out = tmp_path / "never"
        rc, _, err = run_cli(["train", *args, *FAST, "--out", str(out)], capsys)
        assert rc == 2 and "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith("gedi-nesy: error:") and fragment in line, line
        assert not out.exists()


def test_train_nesy_refuses_pools_that_do_not_match_the_protocol():
    from gedi_nesy.train import check_pools

    pools = embedded_digits(0.2, seed=0)
    carved = carve_validation(pools, 0.1, 0)
    check_pools(NesyConfig(), pools)
    check_pools(NesyConfig(data=NesyDataConfig(validation=0.1)), carved)
    with pytest.raises(GediError, match="no validation pool"):
        check_pools(NesyConfig(data=NesyDataConfig(validation=0.1)), pools)
    with pytest.raises(GediError, match="data.validation is 0"):
        check_pools(NesyConfig(), carved)


# ----------------------------------------------------------------------------- Table 6
TINY = ["--data", "digits", "--sizes", "12", "--epochs", "1", "--arms", "nesy,gedi+nesy",
        "--set", "data.test_examples=6", "--set", "batch_size=6", "--set", "sgld.steps=2"]


@pytest.mark.slow
def test_table6_select_then_final_write_the_protocol_in_the_header(tmp_path):
    out = tmp_path / "t6"
    assert table6.main([*TINY, "--select", "--seeds", "0", "--out", str(out)]) == 0
    sel = out / "select"
    md = (sel / "table6.md").read_text()
    assert "selection runs" in md and "**validation pool**" in md and "The test pool is not read" in md
    assert "Seeds used for choosing: 0." in md
    assert "Command: `python -m experiments.nesy.table6 --data digits" in md and "--select" in md
    assert "median (mean ± sample std)" in md and "runs.csv" in md
    runs = list(csv.DictReader(open(sel / "runs.csv")))
    assert {r["evaluated_on"] for r in runs} == {"validation"} and {r["seed"] for r in runs} == {"0"}
    for path in (sel / "table6.md", sel / "runs.csv", sel / "table6.csv"):
        # paths shown relative to the repository (../../tmp/...), never absolute
        assert not re.search(r"(?<![\w.])" + re.escape(str(tmp_path)), path.read_text())
    assert not any(p.name.startswith("digits_") for p in out.iterdir())  # selection runs live under select/

    # final runs on the test pool, other seeds; the header names the seeds that chose the recipe
    assert table6.main([*TINY, "--seeds", "1", "--selection-seeds", "0", "--arms", "nesy",
                        "--out", str(out)]) == 0
    md = (out / "table6.md").read_text()
    assert "final runs" in md and "**test pool**" in md
    assert "Seeds used for choosing the recipe: 0" in md and "seeds of these final runs: 1." in md
    assert "Warning" not in md
    assert {r["evaluated_on"] for r in csv.DictReader(open(out / "runs.csv"))} == {"test"}
    # a selection run folder is never reported as a final one
    (sel / "digits_n12_nesy_s0").rename(out / "digits_n12_nesy_s0")
    assert table6.main([*TINY, "--seeds", "0", "--arms", "nesy", "--out", str(out), "--report-only"]) == 0
    assert list(csv.DictReader(open(out / "runs.csv")))[0]["skipped"].count("validation pool") == 1


ABSOLUTE = re.compile(r"(?<![\w.~:/])/(?:work|home|tmp|Users|root|mnt|data|scratch|var)/")


def test_committed_results_hold_no_absolute_paths():
    files = sorted((REPO / "experiments" / "results").glob("*")) + sorted((REPO / "docs").rglob("*.md"))
    assert files
    for path in files:
        # figures are read as Latin-1 so that a path in their metadata is found too
        text = path.read_bytes().decode("utf-8" if path.suffix in (".md", ".csv", ".json", ".yaml") else "latin-1")
        for lineno, line in enumerate(text.splitlines(), 1):
            assert not ABSOLUTE.search(line), f"{path.relative_to(REPO)}:{lineno}: {line[:120]}"


# ----------------------------------------------------------------------------- gedi-core
def test_core_validation_split_is_a_seeded_partition_of_the_training_set():
    from gedi_core.config import DataConfig
    from gedi_core.data import load_dataset

    cfg = DataConfig(name="moons", n_train=200, n_test=100)
    full = load_dataset(cfg, 0)
    carved = load_dataset(DataConfig(name="moons", n_train=200, n_test=100, validation=0.1), 0)
    assert full.evaluated_on == "test" and carved.evaluated_on == "validation"
    assert len(carved.test_x) == 20 and len(carved.train_x) == 180
    train, val, test = set(keys(carved.train_x)), set(keys(carved.test_x)), set(keys(full.test_x))
    assert not train & val and not (train | val) & test and train | val == set(keys(full.train_x))
    again = load_dataset(DataConfig(name="moons", n_train=200, n_test=100, validation=0.1), 0)
    other = load_dataset(DataConfig(name="moons", n_train=200, n_test=100, validation=0.1), 1)
    assert torch.equal(again.test_x, carved.test_x) and not torch.equal(other.test_x, carved.test_x)


@pytest.mark.slow
def test_core_run_with_validation_never_reads_the_test_split(tmp_path, capsys, monkeypatch):
    from gedi_core import cli as core_cli
    from gedi_core.data import DATASETS

    original = DATASETS["moons"]

    def marked(cfg, seed):
        data = original(cfg, seed)
        data.test_x = torch.full_like(data.test_x, SENTINEL)
        return data

    monkeypatch.setitem(DATASETS, "moons", marked)
    with sentinel_inputs(2) as seen:
        args = ["train", "--dataset", "moons", "--n-train", "200", "--iters", "10", "--log-every", "5",
                "--batch-size", "50", "--sgld-steps", "2", "--seed", "0", "--no-progress"]
        assert core_cli.main([*args, "--validation", "0.1", "--out", str(tmp_path / "select")]) == 0
        metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert metrics["evaluated_on"] == "validation" and seen["test"] == 0
        assert core_cli.main([*args, "--out", str(tmp_path / "final")]) == 0  # the control: the spy sees it
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["evaluated_on"] == "test"
        assert seen["test"] > 0
