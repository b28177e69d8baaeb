"""Renaming (gedi_nesy.renaming): a network whose clusters are right but wrongly named is found
by its training L_NESY alone and renamed, in place, with its optimizer state; a well-named one is
left alone. An "oracle" network reads one-hot images, so the only thing wrong is the naming."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gedi_nesy import GEDILoss, gedi_network, train_model
from gedi_nesy.data import Pools, task_queries
from gedi_nesy.program import build_nesy_model
from gedi_nesy.renaming import Renamer, permute_head, search_renaming, subset_loss, network_log_probs
from deepproblog_helpers import QueryList

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
    """DeepProbLog's training with the default renaming hook: the scrambled oracle (its learning
    rate 0, so only renaming can change it) is named right after training, and the renaming is
    kept on the TrainObject; rename_every=0 leaves it scrambled."""
    from deepproblog.dataset import DataLoader

    for every, expect in ((None, True), (0, False)):
        model, net, queries = oracle_model(scramble=SCRAMBLE)
        loader = DataLoader(QueryList(queries), 4, False)
        gedi = GEDILoss(gen=0.0, prior=1.0, sgld=None)
        train = train_model(model, loader, 1, gedi=gedi, rename_every=every, log_iter=1000, verbose=0)
        assert named_right(net) is expect
        assert bool(train.renamings) is expect


def test_a_bad_rename_every_is_refused():
    from deepproblog.dataset import DataLoader

    from gedi_core.errors import GediError

    model, _, queries = oracle_model()
    with pytest.raises(GediError, match="rename_every"):
        train_model(model, DataLoader(QueryList(queries), 4, False), 1, rename_every=-1, verbose=0)
