"""The class prior of L_PRIOR: uniform (the paper's) or another marginal pi, and the prior a
program implies (gedi_nesy.prior.program_prior)."""

from __future__ import annotations

import math

import pytest
import torch

from gedi_core.errors import GediError
from gedi_core.losses import prior_entropy_loss, prior_loss
from gedi_core.objective import GEDILoss
from gedi_nesy import NesyConfig, build_nesy_model, gedi_network, load_pools, program_prior, task_queries

ADDITION = torch.tensor([(21 - d) / 165 for d in range(10)])  # digit d in a + b = c <= 9


def test_a_uniform_target_is_the_papers_prior_and_a_target_moves_the_optimum():
    logits = torch.randn(32, 4)
    uniform = torch.full((4,), 0.25)
    assert torch.allclose(prior_loss(logits, uniform), prior_loss(logits))
    assert torch.allclose(prior_entropy_loss(logits, uniform), prior_entropy_loss(logits))
    target = torch.tensor([0.4, 0.3, 0.2, 0.1])
    at_target = target.log().expand(8, 4)  # every row predicts pi: p_bar = pi
    for loss in (prior_loss, prior_entropy_loss):
        z = at_target.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(z, target), z)
        assert g.abs().max() < 1e-5, loss.__name__  # p_bar = pi is a stationary point ...
        away = target.flip(0).log().expand(8, 4)
        assert loss(away, target) > loss(at_target, target) + 0.05  # ... and below the reversed marginal
    assert math.isclose(float(prior_loss(at_target, target)), float(-(target * target.log()).sum()), rel_tol=1e-5)
    assert math.isclose(float(prior_entropy_loss(at_target, target)), -math.log(4), rel_tol=1e-5)


@pytest.mark.parametrize("bad", [[0.5, 0.6], [1.0, 0.0], [float("nan"), 1.0], [[0.5, 0.5]], [1.0]])
def test_a_bad_prior_is_refused_with_one_line(bad):
    with pytest.raises(GediError, match="GEDILoss: the prior"):
        GEDILoss(gen=0.0, inv=0.0, prior=1.0, prior_target=torch.tensor(bad))


def test_the_prior_travels_with_the_objectives_state_and_must_match_the_classes():
    target = torch.tensor([0.5, 0.3, 0.2])
    gedi = GEDILoss(gen=0.0, inv=0.0, prior=1.0, prior_target=target)
    fresh = GEDILoss(gen=0.0, inv=0.0, prior=1.0)
    fresh.load_state_dict(gedi.state_dict())
    assert torch.equal(fresh.prior_target, target)
    logits = torch.randn(5, 3)
    assert torch.allclose(fresh(lambda x: x, logits, logits)[0], prior_loss(logits, target))
    with pytest.raises(GediError, match="the prior has 3 classes, the network 4"):
        fresh(lambda x: x, torch.randn(5, 4))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["batched", "exact"])
def test_the_addition_program_implies_the_counted_digit_frequencies(engine):
    """Under uninformative networks every addition query gives digit d of its first two images
    the posterior (10 - d)/55 and of the third (d + 1)/55: their mean is (21 - d)/165 exactly,
    on either engine, whatever the images."""
    cfg = NesyConfig()
    pools = load_pools(cfg.data, 3)
    model = build_nesy_model(cfg.program, [gedi_network("gedi_net")], pools, engine=engine)
    queries = task_queries("addition", pools.train_y, 70, seed=3, source="train")
    prior = program_prior(model, queries, batch_size=32)["gedi_net"]
    assert torch.allclose(prior, ADDITION, atol=1e-5)


@pytest.mark.slow
def test_a_run_with_the_program_prior_records_it(tmp_path):
    from gedi_nesy.train import train_nesy

    cfg = NesyConfig(prior_target="program", epochs=1)
    cfg.sgld.steps = 2
    pools = load_pools(cfg.data, 0)
    model = build_nesy_model(cfg.program, [gedi_network("gedi_net")], pools)
    queries = task_queries("addition", pools.train_y, 60, seed=0, source="train")
    metrics = train_nesy(cfg, model, queries, pools, out=tmp_path / "run", progress=False)
    assert torch.allclose(torch.tensor(metrics["prior_target"]["gedi_net"]), ADDITION, atol=1e-4)
    assert (tmp_path / "run" / "samples.png").is_file()  # the replay buffer's chains, as a figure
