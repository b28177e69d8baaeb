"""The SGLD speed levers of GEDILoss: ``sgld.chains`` and ``sgld.every``.

Off by default they reproduce the paper's setting bit for bit; on, they change only how many
chains are drawn and on which calls, and a checkpoint resumes mid-cycle exactly."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from gedi_core.config import SGLDConfig, TrainConfig
from gedi_core.errors import GediError
from gedi_core.losses import gen_loss, prior_loss
from gedi_core.models import energy_from_logits
from gedi_core.objective import GEDILoss
from gedi_core.sgld import EnergySampler
from gedi_nesy.config import NesyConfig, nesy_fast_sgld, nesy_sgld

SHAPE = (1, 6, 6)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def sgld_cfg(**kw) -> SGLDConfig:
    return SGLDConfig(**{"steps": 3, "step_size": 0.5, "noise": 0.01, "buffer_size": 64, "init_low": -1.0,
                         "init_high": 1.0, **kw})


def batches(n: int, size: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.rand((size, *SHAPE), generator=g) * 2 - 1 for _ in range(n)]


def train(objective: GEDILoss, net: nn.Module, xs, opt: torch.optim.Optimizer) -> list[float]:
    """A few optimizer steps on ``objective``'s loss; the losses, as floats."""
    out = []
    for x in xs:
        loss, _ = objective(net, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


def count_draws(monkeypatch) -> list[int]:
    """Each EnergySampler.draw's number of chains, in call order."""
    drawn: list[int] = []
    original = EnergySampler.draw

    def draw(self, energy_fn, n, steps=None):
        drawn.append(n)
        return original(self, energy_fn, n, steps)

    monkeypatch.setattr(EnergySampler, "draw", draw)
    return drawn


def test_defaults_are_the_paper_setting_bit_for_bit():
    """chains=0, every=1 = the code before the levers: one fresh chain per input on every call."""
    assert (SGLDConfig().chains, SGLDConfig().every) == (0, 1)
    assert (nesy_sgld().chains, nesy_sgld().every, nesy_sgld().buffer_size) == (0, 1, 10000)
    xs = batches(4)
    net_a, net_b = small_net(), small_net()
    objective = GEDILoss(gen=1.0, inv=0.0, prior=1.0, sgld=sgld_cfg(), seed=3)
    sampler = EnergySampler(sgld_cfg(), SHAPE, seed=3)  # the old GEDILoss.terms, written out
    opt_a, opt_b = torch.optim.SGD(net_a.parameters(), lr=0.1), torch.optim.SGD(net_b.parameters(), lr=0.1)
    torch.manual_seed(11)
    got = train(objective, net_a, xs, opt_a)
    torch.manual_seed(11)
    want = []
    for x in xs:
        logits = net_b(x)
        samples = sampler.draw(lambda s: energy_from_logits(net_b(s)), x.shape[0])
        loss = gen_loss(energy_from_logits(logits), energy_from_logits(net_b(samples))) + prior_loss(logits)
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()
        want.append(float(loss.detach()))
    assert got == want
    assert torch.equal(objective.buffer_samples(), sampler.buffer.data)
    assert objective.kept is None  # nothing kept when every step runs SGLD


@pytest.mark.parametrize("chains, expected", [(0, 5), (2, 2), (12, 12)])
def test_chains_sets_the_number_of_sgld_chains(monkeypatch, chains, expected):
    drawn = count_draws(monkeypatch)
    objective = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=sgld_cfg(chains=chains, every=2))
    net = small_net()
    x = batches(1, size=5)[0]
    value = objective.terms(net, x)["gen"]
    assert drawn == [expected] and objective.kept.shape == (expected, *SHAPE)
    # L_GEN: the batch's mean energy minus the mean over the chains
    want = energy_from_logits(net(x)).mean() - energy_from_logits(net(objective.kept)).mean()
    assert float(value.detach()) == float(want.detach())


def test_every_skips_sgld_and_rescores_the_kept_samples(monkeypatch):
    drawn = count_draws(monkeypatch)
    objective = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=sgld_cfg(chains=4, every=3))
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    xs = batches(7)
    kept_at: list[torch.Tensor] = []
    for i, x in enumerate(xs):
        terms = objective.terms(net, x)
        kept_at.append(objective.kept)
        # L_GEN re-scores the samples with the network as it is now
        with torch.no_grad():
            want = energy_from_logits(net(x)).mean() - energy_from_logits(net(objective.kept)).mean()
        assert float(terms["gen"].detach()) == float(want)
        opt.zero_grad()
        terms["gen"].backward()
        opt.step()
    assert drawn == [4, 4, 4]  # SGLD on calls 0, 3 and 6 only
    assert kept_at[0] is kept_at[1] is kept_at[2]
    assert kept_at[3] is kept_at[4] is kept_at[5] and kept_at[3] is not kept_at[2]
    assert not kept_at[0].requires_grad
    assert objective.gen_calls == 7


def test_kept_samples_carry_gradient_to_the_network():
    """On a call without SGLD, L_GEN still has the samples' term: its gradient differs from the
    data term's alone."""
    objective = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=sgld_cfg(every=2))
    net = small_net()
    x = batches(1)[0]
    objective.terms(net, x)  # call 0: SGLD
    value = objective.terms(net, x)["gen"]  # call 1: the kept samples
    grads = torch.autograd.grad(value, list(net.parameters()))
    data_only = torch.autograd.grad(energy_from_logits(net(x)).mean(), list(net.parameters()))
    assert any(not torch.allclose(g, d) for g, d in zip(grads, data_only))


@pytest.mark.parametrize("every", [1, 3])
def test_state_dict_resumes_mid_cycle_bit_for_bit(every):
    cfg = sgld_cfg(chains=6, every=every)
    xs = batches(7)
    net = small_net()
    objective = GEDILoss(gen=1.0, inv=0.0, prior=1.0, sgld=cfg, seed=5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(1)
    train(objective, net, xs[:2], opt)  # stop inside the cycle (call 2 of 3)
    buf = io.BytesIO()
    torch.save({"objective": objective.state_dict(), "net": net.state_dict(), "opt": opt.state_dict(),
                "rng": torch.get_rng_state()}, buf)
    want = train(objective, net, xs[2:], opt)

    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    net2 = small_net(seed=99)
    net2.load_state_dict(state["net"])
    objective2 = GEDILoss(gen=1.0, inv=0.0, prior=1.0, sgld=cfg, seed=5)
    objective2.load_state_dict(state["objective"])
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-2)
    opt2.load_state_dict(state["opt"])
    torch.set_rng_state(state["rng"])
    assert objective2.gen_calls == 2
    assert (objective2.kept is None) == (every == 1)
    got = train(objective2, net2, xs[2:], opt2)
    assert got == want
    assert torch.equal(objective.buffer_samples(), objective2.buffer_samples())


def test_state_without_the_lever_keys_still_loads():
    """A checkpoint written before the levers existed (no gen_calls / kept) loads as call 0."""
    objective = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=sgld_cfg())
    objective.terms(small_net(), batches(1)[0])
    state = objective.get_extra_state()
    del state["gen_calls"], state["kept"]
    fresh = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=sgld_cfg(every=2))
    fresh.set_extra_state(state)
    assert fresh.gen_calls == 0 and fresh.kept is None


@pytest.mark.parametrize("key, value, message", [
    ("chains", -1, "sgld.chains must be >= 0, got -1"),
    ("every", 0, "sgld.every must be > 0, got 0"),
    ("every", -3, "sgld.every must be > 0, got -3"),
    ("chains", float("nan"), "sgld.chains must be a finite number, got nan"),
    ("every", float("inf"), "sgld.every must be a finite number, got inf"),
])
def test_bad_lever_values_are_refused(key, value, message):
    for cfg in (TrainConfig(), NesyConfig()):
        setattr(cfg.sgld, key, value)
        with pytest.raises(GediError, match=message.replace("[", r"\[")):
            cfg.validate()


def test_flags_set_the_levers():
    from gedi_core import cli as core_cli
    from gedi_nesy import cli as nesy_cli

    args = core_cli.build_parser().parse_args(["train", "--sgld-chains", "60", "--sgld-every", "3"])
    cfg = core_cli.resolve_train_config(args)
    assert (cfg.sgld.chains, cfg.sgld.every) == (60, 3)
    args = nesy_cli.build_parser().parse_args(["train", "--sgld-chains", "60", "--sgld-every", "2"])
    cfg = nesy_cli.resolve_config(args)
    assert (cfg.sgld.chains, cfg.sgld.every, cfg.sgld.steps) == (60, 2, 20)


def test_sgld_builds_no_parameter_gradients():
    """SGLD differentiates the energy w.r.t. the inputs only: the parameters' .grad stay unset."""
    objective = GEDILoss(gen=1.0, inv=0.0, prior=0.0, sgld=sgld_cfg(chains=4))
    net = small_net()
    objective.gen_samples(net, batches(1)[0])
    assert all(p.grad is None for p in net.parameters())


def test_the_recipe_runs_the_fast_sgld_and_the_plugin_a_fixed_number_of_chains():
    """gedi-nesy's recipe (batches of 60 queries) runs 60 chains every 2nd step from a buffer of
    3333 (chosen on the MNIST validation split); the plugin, whose batch size is the user's
    (DeepProbLog's scripts: 2), runs 16 chains a step whatever the batch size, the paper's SGLD
    otherwise."""
    from gedi_nesy.config import plugin_sgld
    from gedi_nesy.plugin import GEDILoss as PluginLoss

    assert NesyConfig().sgld == nesy_fast_sgld() and PluginLoss().sgld == plugin_sgld()
    plugin, paper = plugin_sgld(), nesy_sgld()
    assert (plugin.chains, plugin.every, plugin.buffer_size) == (16, 1, 1000)
    assert (plugin.steps, plugin.step_size, plugin.noise) == (paper.steps, paper.step_size, paper.noise)
    fast = nesy_fast_sgld()
    assert (fast.chains, fast.every, fast.buffer_size, fast.steps) == (60, 2, 3333, 20)
