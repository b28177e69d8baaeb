"""Renaming (gedi_nesy.renaming): a network whose clusters are right but wrongly named is found
by its training L_NESY alone and renamed, in place, with its optimizer state; a well-named one is
left alone. An "oracle" network reads one-hot images, so the only thing wrong is the naming."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gedi_core.errors import GediError
from gedi_nesy import GEDILoss, gedi_network, train_model
from gedi_nesy.data import Pools, task_queries
from gedi_nesy.program import build_nesy_model
from gedi_nesy.renaming import Renamer, permute_head, search_renaming, subset_loss, network_log_probs
from deepproblog_helpers import QueryList
from one_hot_readers import NEXT_DIGIT, RIGHT, scheme_model

ADDITION = "programs/addition.pl"


def oracle_pools(n: int = 600, seed: int = 0) -> Pools:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.nn.functional.one_hot(y, 10).float().reshape(n, 1, 1, 10)
    return Pools(train_x=x, train_y=y, test_x=x[:20], test_y=y[:20], name="one-hot")


def oracle_model(engine: str = "batched", scramble: list[int] | None = None, lr: float = 0.0):
    """addition.pl with a network that reads each one-hot image exactly (its head the identity),
    its head rows permuted by ``scramble``."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(10, 10))
    with torch.no_grad():
        module[1].weight.copy_(torch.eye(10))
        module[1].bias.zero_()
    net = gedi_network(module, "gedi_net", lr=lr, weight_decay=0.0)
    if scramble is not None:
        permute_head(net.network_module.head_layer, scramble)
    pools = oracle_pools()
    model = build_nesy_model(ADDITION, [net], pools, engine=engine)
    return model, net, task_queries("addition", pools.train_y, 60, seed=1)


def named_right(net) -> bool:
    return torch.equal(net.network_module.head_layer.weight.detach(), torch.eye(10))


SCRAMBLE = [1, 2, 0, 3, 4, 7, 6, 5, 8, 9]  # a 3-cycle and a swap


@pytest.mark.slow
def test_a_wrongly_named_oracle_is_renamed_back_and_a_right_one_is_left_alone():
    model, net, queries = oracle_model()
    found = search_renaming(model, queries)
    assert len(found) == 1 and not found[0].changed and found[0].perm == list(range(10))

    model, net, queries = oracle_model(scramble=SCRAMBLE)
    [r] = search_renaming(model, queries)
    assert r.changed and len(r.steps) <= 3
    assert r.after < 0.05 < 1.0 < r.before  # the program alone says the naming is wrong
    assert [SCRAMBLE[j] for j in r.perm] == list(range(10))  # the inverse of the scramble
    assert not named_right(net)  # searching changes nothing
    Renamer(model, queries)([net.optimizer])
    assert named_right(net)


def test_both_engines_score_a_renaming_alike():
    """The search scores with the model's engine; DeepProbLog's ExactEngine gives the same loss."""
    losses = []
    for engine in ("batched", "exact"):
        model, _, queries = oracle_model(engine, scramble=SCRAMBLE)
        queries = queries[:12]  # the exact engine solves ~25 queries per second
        per_net, lp = network_log_probs(model, queries, ["gedi_net"])
        losses.append(subset_loss(model, queries, per_net, lp))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


@pytest.mark.slow
def test_renaming_permutes_the_optimizer_state_and_the_running_marginal_with_the_head():
    model, net, queries = oracle_model(scramble=SCRAMBLE, lr=1e-3)
    head = net.network_module.head_layer
    head(torch.randn(4, 10)).sum().backward()
    net.optimizer.step()
    moments = {k: v.clone() for k, v in net.optimizer.state[head.weight].items() if torch.is_tensor(v) and v.dim()}
    weight = head.weight.detach().clone()
    objective = GEDILoss(sgld=None, prior_window=8)
    objective.marginal = torch.arange(10, dtype=torch.float32) / 45
    marginal = objective.marginal.clone()
    [r] = Renamer(model, queries)([net.optimizer], {"gedi_net": objective})
    idx = torch.tensor(r.perm)
    assert torch.equal(head.weight.detach(), weight[idx])
    for k, v in moments.items():
        assert torch.equal(net.optimizer.state[head.weight][k], v[idx]), k
    assert torch.equal(objective.marginal, marginal[idx])


@pytest.mark.slow
def test_train_model_renames_a_wrongly_named_network_between_batches():
    """DeepProbLog's training with the renaming hook every 4 iterations: the scrambled oracle (its
    learning rate 0, so only renaming can change it) is named right after training, and the
    renaming is kept on the TrainObject; rename_every=0 (the default) leaves it scrambled."""
    from deepproblog.dataset import DataLoader

    for every, expect in ((4, True), (0, False)):
        model, net, queries = oracle_model(scramble=SCRAMBLE)
        loader = DataLoader(QueryList(queries), 4, False)
        gedi = GEDILoss(gen=0.0, prior=1.0, sgld=None)
        train = train_model(model, loader, 1, gedi=gedi, rename_every=every, log_iter=1000, verbose=0)
        assert named_right(net) is expect
        assert bool(train.renamings) is expect


def test_a_bad_rename_every_is_refused():
    from deepproblog.dataset import DataLoader

    model, _, queries = oracle_model()
    with pytest.raises(GediError, match="rename_every"):
        train_model(model, DataLoader(QueryList(queries), 4, False), 1, rename_every=-1, verbose=0)


# ----------------------------------------------------------------------------- restarts
RESTART = ["train", "--examples", "12", "--test-examples", "6", "--epochs", "1", "--batch-size", "6",
           "--sgld-steps", "2", "--no-progress", "--seed", "0", "--rename-every", "1"]


def start_metrics(out, k):
    import json

    return json.loads((out / f"start{k}" / "metrics.json").read_text())


@pytest.mark.slow
def test_restarts_keep_the_start_with_the_lowest_training_nesy_as_the_run(tmp_path, capsys):
    """--restart-above 0 restarts every start: three run folders, each finished, with different
    weights; OUT is the one with the lowest training L_NESY (its checkpoint byte for byte), and
    its metrics say so. Running the same command again is refused (a finished run)."""
    import json

    from gedi_nesy import cli

    out = tmp_path / "run"
    assert cli.main([*RESTART, "--restarts", "2", "--restart-above", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [start_metrics(out, k)["train_nesy"] for k in range(3)]
    assert [s["train_nesy"] for s in metrics["starts"]] == losses
    best = min(range(3), key=lambda k: (losses[k], k))
    assert metrics["chosen_start"] == best and metrics["digit_acc"] == start_metrics(out, best)["digit_acc"]
    assert (out / "checkpoint.pt").read_bytes() == (out / f"start{best}" / "checkpoint.pt").read_bytes()
    weights = [torch.load(out / f"start{k}" / "checkpoint.pt", weights_only=False)["step"]["model"]["networks"]
               ["gedi_net"] for k in range(3)]
    assert not torch.equal(next(iter(weights[0].values())), next(iter(weights[1].values())))
    assert cli.main([*RESTART, "--restarts", "2", "--restart-above", "0", "--out", str(out)]) == 2
    assert "finished run" in capsys.readouterr().err


@pytest.mark.slow
def test_a_start_below_the_threshold_is_the_only_one(tmp_path, capsys):
    import json

    from gedi_nesy import cli

    out = tmp_path / "run"
    assert cli.main([*RESTART, "--restarts", "2", "--restart-above", "1000", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["starts"]) == 1 and metrics["chosen_start"] == 0 and not (out / "start1").exists()


@pytest.mark.slow
def test_an_interrupted_restart_resumes_and_finished_starts_are_reused(tmp_path, capsys):
    """The process dies after start 0 finished: --resume reuses start 0 (not retrained: its
    metrics.json is untouched) and trains the rest; without --resume the half-done run is refused."""
    import os

    from gedi_nesy import cli

    out = tmp_path / "run"
    args = [*RESTART, "--restarts", "1", "--restart-above", "0", "--out", str(out)]
    assert cli.main(args) == 0
    capsys.readouterr()
    # as if killed during start 1: its folder unfinished, OUT not yet written
    for f in ("metrics.json", "checkpoint.pt"):
        (out / f).unlink()
    (out / "start1" / "metrics.json").unlink()
    stamp = os.stat(out / "start0" / "metrics.json").st_mtime_ns
    assert cli.main(args) == 2 and "--resume" in capsys.readouterr().err
    assert cli.main([*args, "--resume"]) == 0
    assert os.stat(out / "start0" / "metrics.json").st_mtime_ns == stamp
    assert (out / "metrics.json").is_file() and (out / "start1" / "metrics.json").is_file()


@pytest.mark.slow
def test_train_model_restarts_a_start_above_the_threshold_and_keeps_the_lowest():
    """The scrambled oracle at learning rate 0 with renaming off ends high; a restart draws the
    network afresh; the start with the lowest training L_NESY is the one left in the model."""
    from deepproblog.dataset import DataLoader

    from gedi_nesy.restarts import training_nesy

    model, net, queries = oracle_model(scramble=SCRAMBLE)
    loader = DataLoader(QueryList(queries), 4, False)
    gedi = GEDILoss(gen=0.0, prior=1.0, sgld=None)
    train = train_model(model, loader, 1, gedi=gedi, rename_every=0, restarts=1, restart_above=0.0,
                        log_iter=1000, verbose=0)
    assert len(train.starts) == 2 and train.starts[0] > 1.0  # the scrambled start
    assert training_nesy(model, queries) == pytest.approx(min(train.starts), rel=1e-5)


@pytest.mark.slow
def test_restarts_without_a_run_folder_return_the_kept_start():
    """train_nesy(out=None): the metrics returned and the weights left in the model are the
    lowest start's, not the last one's."""
    from gedi_nesy.config import NesyConfig
    from gedi_nesy.restarts import training_nesy
    from gedi_nesy.run_setup import prepare
    from gedi_nesy.train import train_nesy

    cfg = NesyConfig(epochs=1, batch_size=6, restarts=2, restart_above=0.0, rename_every=0)
    cfg.data.examples, cfg.data.test_examples, cfg.sgld.steps = 12, 6, 2
    pools, model, train_q, test_q = prepare(cfg.validate(), quiet=True)
    metrics = train_nesy(cfg, model, train_q, pools, test_q, progress=False)
    losses = [s["train_nesy"] for s in metrics["starts"]]
    best = min(range(len(losses)), key=lambda k: (losses[k], k))
    assert len(losses) == 3 and metrics["chosen_start"] == best
    assert metrics["digit_acc"] == metrics["starts"][best]["digit_acc"]
    assert training_nesy(model, train_q) == pytest.approx(losses[best], rel=1e-5)


# ----------------------------------------------------------------------------- the plateau
def test_uniform_nesy_does_not_depend_on_the_network_and_is_above_a_right_oracle():
    from gedi_nesy.restarts import reinitialize, training_nesy, uniform_nesy

    model, net, queries = oracle_model()
    before = uniform_nesy(model, queries)
    assert training_nesy(model, queries) < 0.5 * before  # the right oracle knows the digits
    reinitialize(model, 3)
    assert uniform_nesy(model, queries) == pytest.approx(before, rel=1e-6)
    assert training_nesy(model, queries, chunk=1) == pytest.approx(training_nesy(model, queries), rel=1e-6)


def test_restart_scores_are_chunked_by_circuit_size():
    """Scoring a start evaluates a chunk of queries' circuits at once: at most 512 queries and at
    most CHUNK_EDGES edges (N = 100 of long addition: 1.1M edges a query)."""
    from types import SimpleNamespace

    from gedi_nesy.restarts import CHUNK_EDGES, MAX_CHUNK, score_chunk

    def model(stats):
        return SimpleNamespace(solver=SimpleNamespace(stats=stats))

    assert score_chunk(model({"shapes": 3, "circuit_nodes": 3 * 1_093_039})) == int(CHUNK_EDGES // 1_093_039) < 32
    assert score_chunk(model({"shapes": 1, "circuit_nodes": 9_138})) == MAX_CHUNK
    assert score_chunk(model({"shapes": 1, "circuit_nodes": 10 * CHUNK_EDGES})) == 1
    assert score_chunk(model({})) == score_chunk(SimpleNamespace(solver=object())) == MAX_CHUNK  # ExactEngine


def test_lowest_keeps_a_finished_start_over_a_lower_cut_one():
    from gedi_nesy.restarts import lowest

    assert lowest([0.2, 0.5, 0.3]) == 0
    assert lowest([0.2, 0.5, 0.3], [True, False, False]) == 2
    assert lowest([0.2, 0.5], [True, True]) == 0


@pytest.mark.slow
def test_starts_on_the_plateau_are_cut_and_the_last_runs_to_the_end(tmp_path, capsys):
    """--plateau-share 0 puts every start on the plateau: starts 0 and 1 are cut after epoch 1
    (their metrics: the loss, that of uniform predictions, the epoch), the last start is never cut
    and is the run; --resume after a kill reuses the cut start 0."""
    import json
    import os

    from gedi_nesy import cli

    out = tmp_path / "run"
    args = [*RESTART, "--epochs", "2", "--restarts", "2", "--restart-above", "1000", "--restart-plateau", "1",
            "--plateau-share", "0", "--out", str(out)]
    assert cli.main(args) == 0
    assert "on the plateau" in capsys.readouterr().out  # tqdm.write
    for k in (0, 1):
        m = start_metrics(out, k)
        assert m["cut_at"] == 1 and m["uniform_nesy"] > 0 and "digit_acc" not in m
    last = start_metrics(out, 2)
    assert "cut_at" not in last and "digit_acc" in last
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chosen_start"] == 2 and [s.get("cut_at") for s in metrics["starts"]] == [1, 1, None]
    for f in ("metrics.json", "checkpoint.pt"):
        (out / f).unlink()
    (out / "start2" / "metrics.json").unlink()
    stamp = os.stat(out / "start0" / "metrics.json").st_mtime_ns
    assert cli.main([*args, "--resume"]) == 0
    assert os.stat(out / "start0" / "metrics.json").st_mtime_ns == stamp
    assert json.loads((out / "metrics.json").read_text())["chosen_start"] == 2


def test_the_start_budget_spends_cuts_before_restarts():
    """Cuts spend their own budget first, then count as restarts; a start judged above the
    bound spends a restart; nothing follows once both are spent, and only then may a start not
    be cut."""
    from gedi_nesy.restarts import StartBudget

    budget = StartBudget(restarts=1, cuts=2)
    assert [budget.spend(cut=True) for _ in range(3)] == [True, True, True]
    assert (budget.restarts, budget.cuts) == (0, 0) and not budget.may_cut()
    assert not budget.spend(cut=True) and not budget.spend(cut=False)
    budget = StartBudget(restarts=2, cuts=1)
    assert budget.spend(cut=False) and (budget.restarts, budget.cuts) == (1, 1)
    assert budget.spend(cut=True) and (budget.restarts, budget.cuts) == (1, 0) and budget.may_cut()
    assert budget.spend(cut=False) and not budget.may_cut() and not budget.spend(cut=False)
    assert not StartBudget(restarts=0).may_cut()


@pytest.mark.slow
def test_plateau_cuts_run_without_restarts(tmp_path):
    """--plateau-cuts 2 with no restarts: two starts are cut, the third runs to the end and is
    the run (without the flag the one start is never cut)."""
    import json

    from gedi_nesy import cli

    out = tmp_path / "run"
    assert cli.main([*RESTART, "--epochs", "2", "--restarts", "0", "--plateau-cuts", "2", "--restart-plateau", "1",
                     "--plateau-share", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s.get("cut_at") for s in metrics["starts"]] == [1, 1, None] and metrics["chosen_start"] == 2


@pytest.mark.slow
def test_a_start_off_the_plateau_is_not_cut(tmp_path, capsys):
    import json

    from gedi_nesy import cli

    out = tmp_path / "run"
    assert cli.main([*RESTART, "--epochs", "2", "--restarts", "1", "--restart-above", "1000",
                     "--restart-plateau", "1", "--plateau-share", "1000", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["starts"]) == 1 and "cut_at" not in metrics["starts"][0]


def test_train_model_restarts_draw_from_the_script_seed(monkeypatch):
    """Two scripts seeded apart restart from different draws (not the same weights for every
    script seed), and one seed twice from the same ones."""
    from deepproblog.dataset import DataLoader

    import gedi_nesy.plugin as plugin

    def restart_heads(seed: int) -> list[torch.Tensor]:
        drawn = []

        def reinitialize(model, s):
            real(model, s)
            drawn.append(net.network_module.head_layer.weight.detach().clone())

        monkeypatch.setattr(plugin, "reinitialize", reinitialize)
        model, net, queries = oracle_model()
        torch.manual_seed(seed)
        train_model(model, DataLoader(QueryList(queries), 4, False), 1, gedi=GEDILoss(gen=0.0, prior=1.0, sgld=None),
                    restarts=2, restart_above=-1.0, log_iter=1000, verbose=0)
        return drawn

    real = plugin.reinitialize
    a, b = restart_heads(1), restart_heads(2)
    assert len(a) == 2 and not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])
    assert all(torch.equal(x, y) for x, y in zip(a, restart_heads(1)))


# ----------------------------------------------------------------------------- judged by the pool's neighbours
def memorizer_model(memorize: bool, engine: str = "batched"):
    """The right one-hot reader, or one that fits its training queries and reads every other
    image as the next digit (:func:`one_hot_readers.scheme_model`)."""
    return scheme_model(NEXT_DIGIT if memorize else RIGHT, engine=engine)


def test_the_pool_neighbours_see_a_network_that_fits_its_queries_and_names_the_rest_wrongly():
    from gedi_nesy.restarts import neighbour_nesy, training_nesy

    model, pools, queries = memorizer_model(memorize=False)  # the right oracle
    right = training_nesy(model, queries)
    assert right < 0.05 and neighbour_nesy(model, queries, pools.train_x) == pytest.approx(right, abs=0.05)
    model, pools, queries = memorizer_model(memorize=True)
    assert training_nesy(model, queries) < 0.05  # its training queries cannot tell
    assert neighbour_nesy(model, queries, pools.train_x) > 1.0


@pytest.mark.parametrize("engine", ["batched", "exact"])
def test_the_neighbours_reading_counts_the_queries_it_makes_false(engine):
    """neighbour_errors: no query is false for the right reader; every one for the memorizer,
    whose other images read as the next digit (a sum off by 2); with either engine."""
    from gedi_nesy.restarts import neighbour_errors

    model, pools, queries = memorizer_model(memorize=False, engine=engine)
    assert neighbour_errors(model, queries, pools.train_x) == pytest.approx(0.0, abs=1e-3)
    assert 0.0 < neighbour_errors(model, queries, pools.train_x, hard=False) < 0.01  # the mean reading: near 0
    model, pools, queries = memorizer_model(memorize=True, engine=engine)
    assert neighbour_errors(model, queries, pools.train_x) == pytest.approx(1.0, abs=1e-3)
    assert neighbour_errors(model, queries, pools.train_x, chunk=7) == pytest.approx(1.0, abs=1e-3)


def test_a_hardened_reading_is_its_most_probable_class_and_stays_a_distribution():
    from gedi_nesy.restarts import hardened

    lp = torch.log_softmax(torch.randn(5, 10, generator=torch.Generator().manual_seed(0)), -1)
    hard = hardened(lp)
    assert torch.equal(hard.argmax(1), lp.argmax(1)) and torch.isfinite(hard).all()
    assert torch.allclose(hard.logsumexp(1), torch.zeros(5), atol=1e-6)
    assert (hard.max(1).values.exp() > 0.999).all()


def test_starts_agree_by_how_they_read_the_pool_images_no_query_shows():
    """pool_readings: the right reader and the memorizer read the images outside the queries
    differently everywhere (the memorizer reads each as the next digit), and each reads like
    itself; StartReadings.group finds the largest group of starts with it whose every two agree at
    or over the bound."""
    from gedi_nesy.restarts import StartReadings, agreement, pool_readings

    def agreeing_group(readings, k, bound):
        return StartReadings(readings).group(k, bound)

    def largest_groups(readings, bound, admit=lambda group: True):
        return StartReadings(readings).largest_groups(bound, admit)


    right_model, pools, queries = memorizer_model(memorize=False)
    right = pool_readings(right_model, queries, pools.train_x)
    memo_model, memo_pools, memo_queries = memorizer_model(memorize=True)
    memo = pool_readings(memo_model, memo_queries, memo_pools.train_x)
    assert len(right) == len(memo) == len(pools.train_x) - len({pool_index_of(t) for t in shown_inputs(right_model, queries)})
    assert agreement(right, memo) < 0.05 and agreement(right, right) == 1.0
    assert agreeing_group({0: right, 1: memo, 2: right.clone()}, 2, 0.9) == [0, 2]
    assert agreeing_group({0: memo, 1: right}, 1, 0.5) == [1] and agreeing_group({0: right}, 0, 0.0) == [0]
    half = torch.where(torch.arange(len(right)) % 2 == 0, right, memo)
    assert agreeing_group({0: memo, 1: half}, 1, 0.4) == [0, 1]
    # a wrong pair and a right trio: the trio is the largest group, whichever start is asked
    starts = {0: memo, 1: right, 2: memo.clone(), 3: right.clone(), 4: right.clone()}
    assert agreeing_group(starts, 4, 0.9) == [1, 3, 4] and agreeing_group(starts, 2, 0.9) == [0, 2]
    assert largest_groups(starts, 0.9) == [1, 3, 4] and largest_groups({0: right, 1: memo}, 0.5) == [0, 1]
    assert largest_groups(starts, 0.9, lambda group: 2 in group) == [0, 2]  # only the groups it admits
    assert largest_groups(starts, 0.9, lambda group: False) == []
    # half agrees with both the right and the wrong reader, which do not agree: two groups of two
    assert agreeing_group({0: memo, 1: right, 2: half}, 2, 0.4) in ([0, 2], [1, 2])
    assert largest_groups({0: memo, 1: right, 2: half}, 0.4) == [0, 1, 2]


def pool_index_of(term):
    from gedi_nesy.restarts import pool_index

    return pool_index(term)


def shown_inputs(model, queries):
    from gedi_nesy.step import batch_inputs

    return batch_inputs(model, queries)["gedi_net"]


def test_neighbour_predictions_keep_inputs_of_other_sources_and_need_enough_pool_images():
    from gedi_nesy.restarts import NeighbourPredictions, pool_index

    assert pool_index("tensor(train(12))") == pool_index("[tensor(train(12))]") == 12
    assert pool_index("tensor(test(12))") is None and pool_index("[tensor(train(1)), tensor(train(2))]") is None
    model, pools, queries = memorizer_model(memorize=True)
    with pytest.raises(GediError, match="fewer than the 600 neighbours"):
        NeighbourPredictions(model, queries, pools.train_x, k=len(pools.train_x))
    with pytest.raises(GediError, match="show no training-pool image"):
        NeighbourPredictions(model, [], pools.train_x, k=3)
    smooth = NeighbourPredictions(model, queries, pools.train_x, k=3)
    lp = torch.zeros(2, 10)
    out = smooth({"gedi_net": ["tensor(test(1))", "tensor(train(0))"]}, {"gedi_net": lp})
    assert torch.equal(out["gedi_net"][0], lp[0]) and not torch.equal(out["gedi_net"][1], lp[1])


@pytest.mark.slow
def test_starts_judged_by_the_pool_neighbours_are_kept_by_them(tmp_path, capsys):
    import json

    from gedi_nesy import cli

    out = tmp_path / "run"
    assert cli.main([*RESTART, "--rename-every", "0", "--restarts", "2", "--restart-above", "0",
                     "--restart-judge", "neighbours", "--out", str(out)]) == 0
    assert "with the pool's neighbours" in capsys.readouterr().out
    judged = [start_metrics(out, k)["neighbour_nesy"] for k in range(3)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["chosen_start"] == min(range(3), key=lambda k: (judged[k], k))
    assert [s["neighbour_nesy"] for s in metrics["starts"]] == judged


@pytest.mark.slow
def test_starts_that_agree_with_no_other_are_all_drawn_and_the_lowest_judged_is_kept(tmp_path, capsys):
    """--restart-agree 1 (no two starts read every pool image alike, kappa 1: one epoch leaves
    them collapsed, and collapsed starts do not agree): every start of the budget runs, each with its
    agreement, and the lowest judged is kept."""
    import json

    from gedi_nesy import cli

    out = tmp_path / "run"
    assert cli.main([*RESTART, "--rename-every", "0", "--restarts", "2", "--restart-above", "1000",
                     "--restart-agree", "1", "--out", str(out)]) == 0
    assert "restart (kappa under 1 with every earlier start)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["starts"]) == 3 and all(s["agreement"] < 1 and "agrees_with" not in s for s in metrics["starts"])
    assert metrics["chosen_start"] == min(range(3), key=lambda k: (metrics["starts"][k]["train_nesy"], k))


@pytest.mark.slow
@pytest.mark.parametrize("quorum, starts, among", [(2, 3, [1, 2]), (3, 5, [0, 3, 4])])
def test_the_run_ends_once_a_quorum_of_starts_agree_and_keeps_one_of_them(tmp_path, capsys, monkeypatch, quorum,
                                                                           starts, among):
    """Starts read the pool by two schemes, A B B A A (the readings stand in for trained
    networks'): a pair of B ends the run at the third start, a quorum of three at the fifth, with
    the kept start one of the group and every start's group in metrics.json."""
    import json

    from gedi_nesy import cli, train

    scheme = torch.arange(600) % 10
    reads = iter([scheme, (scheme + 1) % 10, (scheme + 1) % 10, scheme, scheme])
    monkeypatch.setattr(train, "pool_readings", lambda *args: next(reads).clone())
    out = tmp_path / "run"
    assert cli.main([*RESTART, "--rename-every", "0", "--restarts", "6", "--restart-above", "1000",
                     "--restart-agree", "0.5", "--restart-quorum", str(quorum), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["starts"]) == starts and metrics["chosen_start"] in among
    assert metrics["starts"][-1]["agrees_with"] == [k for k in among if k != starts - 1]
    assert metrics["chosen_start"] == min(among, key=lambda k: (metrics["starts"][k]["train_nesy"], k))
    assert ("fewer than 3 starts agree" in said) == (quorum == 3)


def test_where_the_budget_runs_out_the_kept_start_is_of_the_largest_group_with_one_under_the_bound():
    """A wrong pair over the bound and a healthy start alone under it (validation seed 0 at 100
    examples): the healthy one is kept, not the pair; where no start is under the bound, every start."""
    from gedi_nesy.config import NesyConfig
    from gedi_nesy.restarts import StartReadings
    from gedi_nesy.train import agreeing_starts

    scheme = torch.arange(600) % 10
    readings = StartReadings({0: (scheme + 1) % 10, 1: (scheme + 1) % 10, 2: scheme, 3: (scheme + 3) % 10})
    found = [({"train_nesy": 0.2, "neighbour_nesy": n}, {}) for n in (1.09, 0.95, 0.66, 1.04)]
    found[1][0]["agrees_with"] = [0]
    cfg = NesyConfig(restart_above=0.85, restart_agree=0.5, restart_quorum=3)
    assert agreeing_starts(found, readings, 3, cfg) == [2]
    found[2][0]["neighbour_nesy"] = 0.9
    assert agreeing_starts(found, readings, 3, cfg) == []
    found[0][0]["neighbour_nesy"] = 0.8  # now the pair holds a start under the bound
    assert agreeing_starts(found, readings, 3, cfg) == [0, 1]
    assert agreeing_starts(found, readings, 3, NesyConfig(restart_above=0.85)) == []


def test_a_start_ends_the_run_where_it_agrees_with_an_earlier_one_and_one_of_the_two_is_under_the_bound():
    from gedi_nesy.config import NesyConfig
    from gedi_nesy.train import accepted

    cfg = NesyConfig(restart_above=0.5, restart_agree=0.6)
    first = ({"train_nesy": 0.3, "agreement": 0.0}, {})
    assert not accepted([first], first[0], cfg)  # nothing to agree with
    over = {"train_nesy": 0.9, "agreement": 0.8, "agrees_with": [0]}
    assert accepted([first, (over, {})], over, cfg)  # its partner is under the bound
    alone = {"train_nesy": 0.3, "agreement": 0.5}  # under the bound, agrees with none
    assert not accepted([first, (alone, {})], alone, cfg)
    both_over = [({"train_nesy": 0.9, "agreement": 0.0}, {}), (over, {})]
    assert not accepted(both_over, over, cfg)
    assert accepted([first], first[0], NesyConfig(restart_above=0.5))  # without agreement: the bound alone
    trio = NesyConfig(restart_above=0.5, restart_agree=0.6, restart_quorum=3)
    assert not accepted([first, (over, {})], over, trio)  # a pair is not a quorum of three
    third = {"train_nesy": 0.8, "agreement": 0.9, "agrees_with": [0, 1]}
    assert accepted([first, (over, {}), (third, {})], third, trio)
    assert not accepted(both_over + [(third, {})], third, trio)  # the three are over the bound


@pytest.mark.slow
def test_judge_runs_scores_finished_runs_by_both_judges(tmp_path, capsys):
    """experiments.nesy.judge_runs rebuilds a finished run and scores it again: the neighbours'
    loss the run was kept by, and its training L_NESY; an unfinished folder is one line, exit 2."""
    import json

    from experiments.nesy import judge_runs
    from gedi_nesy import cli

    out = tmp_path / "r1"
    assert cli.main([*RESTART, "--rename-every", "0", "--restart-judge", "neighbours", "--restarts", "1",
                     "--restart-above", "1000", "--out", str(out)]) == 0
    capsys.readouterr()
    assert judge_runs.main([str(out), "--k", "1,5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    row = dict(zip(cells(lines[0]), cells(next(line for line in lines if line.startswith("| r1 |")))))
    kept = json.loads((out / "metrics.json").read_text())
    assert float(row["neighbour_nesy k=5"]) == pytest.approx(kept["neighbour_nesy"], abs=1e-3)
    assert 0.0 <= float(row["neighbour_errors k=5"]) <= 1.0
    assert float(row["train_nesy"]) == pytest.approx(kept["train_nesy"], abs=1e-3)
    import shutil

    from gedi_nesy.restarts import agreement, network_readings

    shutil.copytree(out, tmp_path / "r2")  # the same networks: they agree as a run with itself
    assert judge_runs.main([str(out), str(tmp_path / "r2"), "--agreement"]) == 0
    table = capsys.readouterr().out.split("Cohen's kappa")[1].splitlines()
    pools, model, _ = judge_runs.rebuilt(out)
    itself = network_readings(model, pools.eval_x)
    row = next(line for line in table if line.startswith(f"| {out} |"))
    assert cells(row)[2:] == [str(round(agreement(itself, itself), 2))] * 2
    assert judge_runs.main([str(tmp_path / "missing")]) == 2
    assert "not finished" in capsys.readouterr().err
