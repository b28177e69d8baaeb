"""gedi_core.objective.GEDILoss: the one GEDI objective, as a user adds it to a plain loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gedi_core.config import SGLDConfig
from gedi_core.data import gaussian_noise
from gedi_core.errors import GediError
from gedi_core.losses import gen_loss, inv_loss, prior_entropy_loss, prior_loss
from gedi_core.models import energy_from_logits
from gedi_core.errors import NonFiniteError
from gedi_core.objective import GEDILoss


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))


def test_a_plain_pytorch_loop_trains_with_it():
    """The five lines of docs/usage.md ("GEDI in five lines"): every term stays finite with L_GEN
    on, and without the generative term the invariance + prior objective goes down (a smooth loss
    under Adam)."""
    for gen, steps in ((1.0, 10), (0.0, 60)):
        model, x = net(), torch.randn(64, 2)
        gedi = GEDILoss(gen=gen, inv=5.0, prior=1.0, augment=gaussian_noise(0.05), sgld=SGLDConfig(steps=2), seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(steps):
            loss, terms = gedi(model, x, model(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            assert all(math.isfinite(float(v)) for v in terms.values())
        assert set(terms) == ({"gen", "inv", "prior"} if gen else {"inv", "prior"})
    assert sum(losses[-5:]) < sum(losses[:5])


def test_terms_are_the_pure_loss_functions_and_zero_weights_skip_them():
    model, x = net(), torch.randn(32, 2)
    logits = model(x)
    torch.manual_seed(1)
    gedi = GEDILoss(gen=0.0, inv=2.0, prior=3.0, prior_form="entropy", augment=gaussian_noise(0.1), seed=4)
    loss, terms = gedi(model, x, logits)
    aug = gaussian_noise(0.1)(x, torch.Generator().manual_seed(5))  # the objective's own stream: seed + 1
    assert set(terms) == {"inv", "prior"} and gedi.buffer_samples() is None  # no SGLD without L_GEN
    assert torch.allclose(terms["inv"], inv_loss(logits, model(aug)))
    assert torch.allclose(terms["prior"], prior_entropy_loss(logits))
    assert torch.allclose(loss, 2.0 * terms["inv"] + 3.0 * terms["prior"])
    uniform = GEDILoss(gen=0.0, inv=0.0, prior=1.0)(model, x, logits)[1]["prior"]
    assert torch.allclose(uniform, prior_loss(logits))


def test_gen_term_is_contrastive_divergence_on_the_replay_buffer():
    model, x = net(), torch.randn(16, 2)
    gedi = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=SGLDConfig(steps=3, buffer_size=100), seed=0)
    sampler = gedi.sampler_for(x)
    drawn = []
    draw = sampler.draw
    sampler.draw = lambda fn, n: drawn.append(draw(fn, n)) or drawn[-1]
    logits = model(x)
    terms = gedi.terms(model, x, logits)
    assert drawn[0].shape == (16, 2) and gedi.buffer_samples().shape == (100, 2)
    expected = gen_loss(energy_from_logits(logits), energy_from_logits(model(drawn[0])))
    assert torch.equal(terms["gen"], expected) and terms["gen"].requires_grad


def test_state_dict_resumes_the_sampler_and_the_augmentation_stream_exactly():
    model, x = net(), torch.randn(16, 2)
    kwargs = dict(gen=1.0, inv=1.0, prior=1.0, augment=gaussian_noise(0.1), sgld=SGLDConfig(steps=2, buffer_size=50))
    a = GEDILoss(**kwargs, seed=3)
    torch.manual_seed(0)
    a.terms(model, x)
    b = GEDILoss(**kwargs, seed=99)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    ta = a.terms(model, x)
    torch.manual_seed(1)
    tb = b.terms(model, x)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert torch.equal(a.buffer_samples(), b.buffer_samples())


def test_the_replay_buffer_lives_on_the_inputs_device():
    gedi = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=SGLDConfig(buffer_size=10))
    x = torch.empty(4, 2, device="meta")
    assert gedi.sampler_for(x).buffer.data.device.type == "meta"


def test_bad_settings_and_non_finite_samples_are_one_clear_error():
    with pytest.raises(GediError, match="weight 'gen' must be a finite number >= 0"):
        GEDILoss(gen=float("nan"))
    with pytest.raises(GediError, match="L_INV needs an augmentation"):
        GEDILoss(inv=1.0)
    with pytest.raises(GediError, match="prior_form"):
        GEDILoss(inv=0.0, prior_form="laplace")
    model, x = net(), torch.randn(8, 2)
    gedi = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=SGLDConfig(steps=1, noise=3e38, buffer_size=20))
    with pytest.raises(NonFiniteError, match="SGLD samples are not finite"):
        gedi.terms(model, x)
