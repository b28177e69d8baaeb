"""The public Python API checks its arguments: a GediError naming the argument, never a silent
wrong number (1-D logits, logits of other rows, tau 0, negative SGLD steps) or a raw torch error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gedi_core.config import ModelConfig, SGLDConfig
from gedi_core.errors import GediError
from gedi_core.errors import NonFiniteError
from gedi_nesy import GEDILoss, gedi_network, load_network, program_prior

ROOT = Path(__file__).resolve().parents[1]
SMALL = ModelConfig(backbone="mlp", hidden=8, feature_dim=4, proj_hidden=4, proj_dim=4, num_clusters=3)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return gedi_network("small_net", SMALL, (1, 4, 4)).network_module


@pytest.mark.parametrize("make_logits, message", [
    (lambda lg: lg[:, 0], r"logits must be 2-d \(B, K\) with K >= 2 clusters, got shape \(6,\)"),
    (lambda lg: lg[:3], r"logits has 3 rows but x has 6 inputs"),
    (lambda lg: lg[:, :1], r"got shape \(6, 1\)"),
    (lambda lg: lg.unsqueeze(0), r"got shape \(1, 6, 3\)"),
    (lambda lg: lg.detach().numpy(), r"logits must be a tensor \(B, K\), got ndarray"),
])
@pytest.mark.parametrize("call", ["forward", "terms"])
def test_gedi_loss_checks_the_logits(net, make_logits, message, call):
    x = torch.rand(6, 1, 4, 4) * 2 - 1
    loss = GEDILoss(sgld=SGLDConfig(steps=1, buffer_size=8))
    with pytest.raises(GediError, match=message):
        getattr(loss, call)(net.logits, x, make_logits(net.logits(x)))


def test_gedi_loss_refuses_non_finite_logits(net):
    x = torch.rand(6, 1, 4, 4)
    logits = net.logits(x).detach().clone()
    logits[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"logits hold 1 NaN/inf value"):
        GEDILoss(sgld=SGLDConfig(steps=1, buffer_size=8))(net.logits, x, logits)


def test_gedi_loss_with_good_logits_still_computes_every_term(net):
    x = torch.rand(6, 1, 4, 4)
    loss, terms = GEDILoss(sgld=SGLDConfig(steps=1, buffer_size=8), inv=1.0)(net.logits, x, net.logits(x))
    assert set(terms) == {"gen", "inv", "prior"} and torch.isfinite(loss)


@pytest.mark.parametrize("sgld, message", [
    (SGLDConfig(steps=-3), r"GEDILoss: sgld.steps must be >= 0, got -3"),
    (SGLDConfig(steps=0), r"GEDILoss: sgld.steps must be >= 1 to draw SGLD samples"),
    (SGLDConfig(steps=2.5), r"sgld.steps must be an integer, got 2.5"),
    (SGLDConfig(step_size=float("nan")), r"sgld.step_size must be >= 0, got nan"),
    (SGLDConfig(noise=-1.0), r"sgld.noise must be >= 0, got -1.0"),
    (SGLDConfig(buffer_size=0), r"sgld.buffer_size must be > 0, got 0"),
    (SGLDConfig(reinit_freq=2.0), r"sgld.reinit_freq must lie in \[0, 1\], got 2.0"),
    (SGLDConfig(init_low=2.0, init_high=1.0), r"sgld.init_low \(2.0\) must be below sgld.init_high"),
    ("steps=20", r"GEDILoss: expected a SGLDConfig, got str"),
])
def test_sgld_config_is_checked_where_it_is_used(sgld, message):
    with pytest.raises(GediError, match=message):
        GEDILoss(sgld=sgld)


def test_sgld_steps_zero_is_fine_without_l_gen_and_checked_by_the_sampler_later(net):
    loss = GEDILoss(gen=0.0, sgld=SGLDConfig(steps=0))  # no L_GEN: SGLD is never run
    assert "gen" not in loss.terms(net.logits, torch.rand(4, 1, 4, 4))
    later = GEDILoss(sgld=SGLDConfig(steps=1, buffer_size=8))
    later.sgld.steps = -1  # changed after construction: the sampler, made at the first call, refuses it
    with pytest.raises(GediError, match=r"EnergySampler: sgld.steps must be >= 0, got -1"):
        later(net.logits, torch.rand(4, 1, 4, 4))


@pytest.mark.parametrize("cfg, shape, message", [
    (ModelConfig(tau=0.0), (1, 28, 28), r"ModelConfig: model.tau must be > 0, got 0.0"),
    (ModelConfig(tau=float("inf")), (1, 28, 28), r"model.tau must be > 0, got inf"),
    (ModelConfig(num_clusters=1), (1, 28, 28), r"model.num_clusters must be >= 2, got 1"),
    (ModelConfig(hidden=2.5), (1, 28, 28), r"model.hidden must be an integer, got 2.5"),
    (SMALL, (1, 0, 4), r"input_shape must be positive integers, e.g. \(1, 28, 28\), got \(1, 0, 4\)"),
    (SMALL, (1, 4.0, 4), r"input_shape must be positive integers"),
])
def test_gedi_network_checks_its_model_config_and_input_shape(cfg, shape, message):
    with pytest.raises(GediError, match=message):
        gedi_network("net", cfg, shape)


def test_program_prior_on_a_model_without_gedi_network_is_one_error():
    from deepproblog.model import Model
    from deepproblog.network import Network

    plain = Network(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Softmax(-1)), "gedi_net")
    model = Model(str(ROOT / "programs" / "sum.pl"), [plain])
    with pytest.raises(GediError, match=r"program_prior: the model has no GEDI network"):
        program_prior(model, [object()])


@pytest.fixture()
def exported(tmp_path):
    from gedi_core.config import to_dict
    from gedi_nesy.predict import EXPORT_FORMAT

    net = gedi_network("small_net", SMALL, (1, 4, 4))
    payload = {"format": EXPORT_FORMAT, "program": "p.pl", "networks": {"small_net": {
        "model": to_dict(SMALL), "input_shape": [1, 4, 4], "state_dict": net.network_module.state_dict()}}}
    return tmp_path / "net.pt", payload


def doctor(path: Path, payload: dict, change) -> Path:
    import copy

    payload = copy.deepcopy(payload)
    change(payload)
    torch.save(payload, path)
    return path


def _head(p: dict) -> None:
    sd = p["networks"]["small_net"]["state_dict"]
    key = next(k for k in sd if k.endswith("head.weight"))
    sd[key] = torch.zeros(7, sd[key].shape[1])


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(format="other/1"), r"not a file written by gedi-nesy export"),
    (lambda p: p.update(networks=[]), r"the export holds no networks"),
    (lambda p: p["networks"]["small_net"].pop("state_dict"), r"network 'small_net' lacks its model, input_shape or state_dict"),
    (lambda p: p["networks"]["small_net"].update(input_shape=[1, -4, 4]), r"input_shape must be positive integers"),
    (lambda p: p["networks"]["small_net"]["model"].update(tau=0.0), r"model.tau must be > 0, got 0.0"),
    (lambda p: p["networks"]["small_net"]["model"].update(colour="red"), r"unknown config key 'colour'"),
    (_head, r"tensor '.*head.weight' has shape \(7, 4\), but the network built from its config expects \(3, 4\)"),
    (lambda p: p["networks"]["small_net"]["state_dict"].popitem(), r"the weights do not fit the network .*missing tensor"),
    (lambda p: p["networks"]["small_net"].update(state_dict={"x": 1}), r"the weights are not a state dict of tensors"),
])
def test_load_network_on_a_doctored_export_is_one_error(exported, change, message):
    path, payload = exported
    with pytest.raises(GediError, match=message) as info:
        load_network(doctor(path, payload, change))
    assert "\n" not in str(info.value)


def test_load_network_of_an_intact_export_gives_the_same_weights(exported):
    path, payload = exported
    net = load_network(doctor(path, payload, lambda p: None))
    for k, v in net.network_module.state_dict().items():
        assert torch.equal(v, payload["networks"]["small_net"]["state_dict"][k]), k


@pytest.mark.parametrize("gedi, message", [
    (3.0, r"train_model\(\.\.\., gedi=\.\.\.\): expected a GEDILoss or a mapping of network name to GEDILoss, got float"),
    ({"other_net": None}, r"no objective for network\(s\) gedi_net"),
])
def test_train_model_checks_its_gedi_argument(gedi, message):
    from deepproblog.model import Model

    from gedi_nesy import train_model

    model = Model(str(ROOT / "programs" / "sum.pl"), [gedi_network("gedi_net")])
    with pytest.raises(GediError, match=message):
        train_model(model, [], 1, gedi=gedi)
