import math

import pytest
import torch

from gedi_core.losses import (
    barlow_twins_loss,
    gen_loss,
    inv_loss,
    prior_entropy_loss,
    prior_loss,
    prior_optimum,
    sinkhorn,
    swav_loss,
)


def test_prior_equals_ln_c_for_uniform_batch_mean():
    # two samples, confident on different clusters -> batch mean is uniform over c=2 ... plus
    # a general c: a permutation-symmetric batch of one-hot logits
    c = 5
    logits = 50.0 * torch.eye(c)
    assert prior_loss(logits).item() == pytest.approx(math.log(c), abs=1e-5)
    assert prior_optimum(c) == pytest.approx(math.log(c))


def test_prior_grows_under_cluster_collapse():
    c = 4
    collapsed = torch.tensor([[10.0, 0, 0, 0]] * 8)
    assert prior_loss(collapsed).item() > math.log(c) + 2.0
    assert prior_entropy_loss(50.0 * torch.eye(c)).item() == pytest.approx(-math.log(c), abs=1e-5)


def test_inv_zero_for_identical_one_hot_predictions():
    logits = 100.0 * torch.eye(3)[[0, 2, 1, 1]]
    assert inv_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_inv_positive_when_views_disagree_and_shapes_checked():
    a = 100.0 * torch.eye(2)[[0, 1]]
    b = 100.0 * torch.eye(2)[[1, 0]]
    assert inv_loss(a, b).item() > 50
    with pytest.raises(ValueError, match="shapes differ"):
        inv_loss(a, torch.zeros(2, 3))


def test_gen_loss_is_mean_difference_and_gradient_sign():
    e_data = torch.tensor([1.0, 3.0], requires_grad=True)
    e_samp = torch.tensor([0.5, 0.5, 2.0])
    loss = gen_loss(e_data, e_samp)
    assert loss.item() == pytest.approx(2.0 - 1.0)
    loss.backward()
    assert torch.allclose(e_data.grad, torch.tensor([0.5, 0.5]))  # lowering data energy lowers the loss


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    scores = torch.randn(64, 8)
    q = sinkhorn(scores, epsilon=0.5, iters=100)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), atol=1e-2)


def test_swav_and_barlow_known_values():
    q = torch.eye(2)
    logits = 100.0 * torch.eye(2)
    assert swav_loss(logits, logits, q, q).item() == pytest.approx(0.0, abs=1e-6)
    z = torch.randn(256, 4)
    # identical, decorrelated views: on-diagonal terms vanish, off-diagonal ones are small
    assert barlow_twins_loss(z, z).item() < 0.05
    assert barlow_twins_loss(z, -z).item() == pytest.approx(4 * 4, rel=0.05)
