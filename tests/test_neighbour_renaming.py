"""Renaming through the pool's neighbours (gedi_nesy.neighbour_renaming): a network that fits its
training queries image by image while it reads every other image by a wrong scheme close to a
symmetry of addition (1<->2, 4<->5, 7<->8) is renamed to the scheme's inverse, which no single
swap finds and the training loss cannot see; a right reader is left alone. The images are
one-hot digits with an 11th pixel set on the images the queries show."""

from __future__ import annotations

import pytest
import torch

from gedi_nesy.neighbour_renaming import HardTruth, gains, renamed, search_neighbour_renaming
from gedi_nesy.renaming import local_search, moved, moves, network_log_probs, search_renaming, swap_sets
from gedi_nesy.restarts import neighbour_errors, training_nesy
from one_hot_readers import RIGHT, scheme_model

SCHEME = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9]  # 46 of the 55 sums a + b = c <= 9 hold under it


def test_swap_sets_are_the_products_of_disjoint_swaps():
    assert sorted(moved(list(range(4)), m) for m in swap_sets(4, 2)) == [[1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]]
    assert sum(1 for _ in swap_sets(10, 3)) == 630 + 3150  # 45 * 28 / 2 pairs, 45 * 28 * 15 / 6 triples
    assert moved(list(range(10)), ("swaps", ((1, 2), (4, 5), (7, 8)))) == SCHEME


def test_local_search_keeps_only_moves_that_improve():
    target = [2, 0, 1, 3]
    score = lambda perms: [sum(a != b for a, b in zip(p, target)) for p in perms]  # noqa: E731
    perm, before, after, steps = local_search(4, score, lambda: moves(4), lambda trial, best: trial < best)
    assert perm == target and (before, after) == (3, 0) and 1 <= len(steps) <= 2
    perm, _, after, steps = local_search(4, score, lambda: moves(4), lambda trial, best: False)
    assert perm == [0, 1, 2, 3] and after == 3 and steps == []


def test_a_move_that_makes_exactly_min_gain_of_the_queries_true_is_kept():
    # false shares of 25 and 23 of 100 queries as the hardened readings score them (a hair over the
    # counts): the gain of 2 queries is the 2 % asked for, though the floats differ by a little less
    assert 0.2300206531 > 0.2500200263 - 0.02
    assert gains(0.2300206531, 0.2500200263, 0.02)
    assert not gains(0.2400203, 0.2500200263, 0.02)  # one query
    assert not gains(0.2300206531, 0.2500200263, 0.03)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_scheme_that_fits_its_queries_is_renamed_through_the_neighbours_and_a_right_reader_is_not(seed):
    model, pools, queries = scheme_model(SCHEME, seed, seed, queries=100)
    assert training_nesy(model, queries) < 0.05  # its own images fit every query
    [soft] = search_renaming(model, queries)
    assert not soft.changed  # renaming by the training loss keeps the wrong names
    [r] = search_neighbour_renaming(model, queries, pools.train_x)
    assert r.changed and r.steps == [("swaps", ((1, 2), (4, 5), (7, 8)))]
    assert r.after == pytest.approx(0.0, abs=1e-3) and 0.05 < r.before < 0.5  # the 9 sums the scheme breaks
    assert r.before == pytest.approx(neighbour_errors(model, queries, pools.train_x), abs=1e-3)
    assert [SCHEME[j] for j in r.perm] == list(range(10))  # renamed to the scheme's inverse

    model, pools, queries = scheme_model(RIGHT, seed, seed, queries=100)
    [r] = search_neighbour_renaming(model, queries, pools.train_x)
    assert not r.changed and r.before == pytest.approx(0.0, abs=1e-3)


def test_hard_truth_is_the_engines_reading_of_each_query():
    """HardTruth computes each (structure, classes) once and gives what the engine gives for the
    hardened readings; the exact engine agrees."""
    shares = []
    for engine in ("batched", "exact"):
        model, pools, queries = scheme_model(SCHEME, 1, 1, queries=12, engine=engine)
        per_net, own = network_log_probs(model, queries, ["gedi_net"])
        truth = HardTruth(model, queries, per_net, {"gedi_net": 10})
        classes = own["gedi_net"].argmax(1).tolist()
        shifted = renamed(classes, [9, 0, 1, 2, 3, 4, 5, 6, 7, 8])  # every digit one up: every sum off
        right, wrong, scheme = truth.false_shares([{"gedi_net": c} for c in (classes, shifted, renamed(classes, SCHEME))])
        assert right == pytest.approx(0.0, abs=1e-3) and wrong == pytest.approx(1.0, abs=1e-3)
        shares.append(scheme)
        assert len(truth.truth) <= 3 * len(queries)
    assert shares[0] == pytest.approx(shares[1], abs=1e-6)


CLI = ["train", "--examples", "12", "--test-examples", "6", "--epochs", "1", "--batch-size", "6",
       "--sgld-steps", "2", "--no-progress", "--seed", "0", "--rename-neighbours"]


@pytest.mark.slow
def test_the_cli_renames_through_the_neighbours_after_the_last_epoch(tmp_path, monkeypatch):
    """--rename-neighbours: the share of training queries false through the neighbours is the
    kept network's (rebuilt from the run folder), and a renaming the search finds is applied to
    the network the run keeps and listed in its metrics."""
    import json

    from experiments.nesy import judge_runs
    from gedi_nesy import cli, neighbour_renaming
    from gedi_nesy.renaming import Renaming

    out = tmp_path / "run"
    assert cli.main([*CLI, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pools, model, train_q = judge_runs.rebuilt(out)
    assert metrics["neighbour_false"] == pytest.approx(neighbour_errors(model, train_q, pools.train_x), abs=1e-3)
    assert cli.main([*CLI[:-1], "--out", str(tmp_path / "plain")]) == 0  # the same run without the search
    assert "neighbour_false" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())
    _, model, _ = judge_runs.rebuilt(tmp_path / "plain")
    head = model.networks["gedi_net"].network_module.head_layer.weight.detach().clone()

    swap = [1, 0, *range(2, 10)]
    found = lambda model, queries, pool: [Renaming("gedi_net", swap, 0.5, 0.1, [("swap", 0, 1)], "share")]  # noqa: E731
    monkeypatch.setattr(neighbour_renaming, "search_neighbour_renaming", found)
    out = tmp_path / "renamed"
    assert cli.main([*CLI, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["neighbour_false"] == 0.1 and "1->0, 0->1" in metrics["renamings"][-1]["renamed"]
    _, model, _ = judge_runs.rebuilt(out)
    assert torch.equal(model.networks["gedi_net"].network_module.head_layer.weight.detach(), head[swap])
