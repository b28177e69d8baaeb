"""The port of a DeepProbLog script: DeepProbLog's own network read as GEDI in place, train_model's
defaults (the program prior, the prior's running marginal, DeepProbLog's own logged loss)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from gedi_core.errors import GediError
from gedi_core.losses import batch_mean_probs, prior_at_marginal, prior_entropy_loss, prior_neg_entropy, \
    running_marginal
from gedi_core.objective import GEDILoss as CoreGEDILoss
from gedi_nesy import GEDILoss, gedi_network, train_model
from gedi_nesy.data import embedded_digits
from gedi_nesy.network import GEDIHeadNetwork
from gedi_nesy.program import build_nesy_model

ROOT = Path(__file__).resolve().parents[1]


def mnist_net():
    from deepproblog.examples.MNIST.network import MNIST_Net

    return MNIST_Net()


def addition_dataset():
    spec = importlib.util.spec_from_file_location("deepproblog_addition", ROOT / "examples" / "deepproblog_addition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Addition


def test_deepproblogs_own_network_becomes_gedi_in_place_without_new_parameters():
    torch.manual_seed(0)
    network = mnist_net()
    net = gedi_network(network, "mnist_net", batching=True)
    module = net.network_module
    assert isinstance(module, GEDIHeadNetwork) and net.name == "mnist_net" and net.batching
    assert {id(p) for p in module.parameters()} == {id(p) for p in network.parameters()}
    x = torch.randn(5, 1, 28, 28)
    probs, logits = module(x), module.logits(x)
    assert probs.shape == logits.shape == (5, 10)
    assert torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(probs, torch.softmax(logits, -1), atol=1e-6)  # MNIST_Net's own softmax on the GEDI scores
    assert float(logits.detach().abs().max()) <= 1 / 0.1 + 1e-4  # unit-norm head: |scores| <= 1/tau
    assert torch.allclose(module.energy(x), -torch.logsumexp(logits, -1))
    assert module.num_clusters == 10
    # DeepProbLog's script sets its own optimizer after: it covers every parameter the GEDI terms train
    net.optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    module.energy(x).sum().backward()
    assert all(p.grad is not None for p in network.parameters() if p is not network.classifier[-1].bias)


def test_a_module_without_a_linear_layer_is_refused_in_one_line():
    with pytest.raises(GediError, match="no nn.Linear layer"):
        gedi_network(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Softmax(-1)), "net")
    with pytest.raises(GediError, match="tau"):
        gedi_network(mnist_net(), "net", tau=0.0)


def test_prior_at_a_running_marginal_has_its_value_and_the_batch_share_of_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    p_bar = batch_mean_probs(logits)
    # at the batch's own marginal it is the batch term: same value, same gradient
    same = prior_at_marginal(prior_neg_entropy, p_bar, p_bar.detach())
    ref = prior_entropy_loss(logits)
    g_same, = torch.autograd.grad(same, logits)
    g_ref, = torch.autograd.grad(ref, logits)
    assert torch.allclose(same, ref, atol=1e-6) and torch.allclose(g_same, g_ref, atol=1e-6)
    # at another marginal r: the value is f(r), the gradient pushes the batch along grad f(r)
    r = torch.tensor([0.7, 0.1, 0.1, 0.1])
    term = prior_at_marginal(prior_neg_entropy, batch_mean_probs(logits), r)
    assert math.isclose(float(term.detach()), float(prior_neg_entropy(r)), rel_tol=1e-5)
    grad, = torch.autograd.grad(term, logits)
    step = -grad  # gradient descent moves mass away from the over-full class 0
    assert float((torch.softmax(logits + 0.1 * step, -1).mean(0) - p_bar)[0]) < 0


def test_running_marginal_follows_the_window_in_inputs():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.equal(running_marginal(None, a, 4, 16), a)
    assert torch.allclose(running_marginal(a, b, 4, 16), torch.tensor([0.75, 0.25]))
    assert torch.equal(running_marginal(a, b, 32, 16), b)  # a batch larger than the window replaces it


def test_the_running_marginal_is_part_of_the_objectives_state():
    gedi = CoreGEDILoss(gen=0.0, inv=0.0, prior=1.0, prior_form="entropy", prior_window=64)
    net = torch.nn.Linear(3, 4)
    for _ in range(3):
        x = torch.randn(2, 3)
        gedi(net, x, net(x))
    copy = CoreGEDILoss(gen=0.0, inv=0.0, prior=1.0, prior_form="entropy", prior_window=64)
    copy.load_state_dict(gedi.state_dict())
    assert copy.marginal is not None and torch.equal(copy.marginal, gedi.marginal)
    with pytest.raises(GediError, match="prior_window"):
        CoreGEDILoss(inv=0.0, prior_window=-1)


def test_the_plugins_gedi_loss_is_the_core_objective_with_the_plugins_defaults():
    """gedi_nesy.GEDILoss names no second class: it returns gedi_core's, configured."""
    from gedi_nesy.config import plugin_sgld

    gedi = GEDILoss(gen=0.5)
    assert type(gedi) is CoreGEDILoss and gedi.prior_form == "entropy" and gedi.prior_window == 64
    assert gedi.weights == {"gen": 0.5, "inv": 0.0, "prior": 1.0} and gedi.sgld == plugin_sgld()
    assert gedi.augment is not None  # Gaussian-noise views, used once inv > 0
    assert CoreGEDILoss(inv=0.0).prior_form == "uniform" and CoreGEDILoss(inv=0.0).prior_window == 0  # core defaults


def _model_and_loader(n: int = 8, batch: int = 2):
    from deepproblog.dataset import DataLoader

    pools = embedded_digits(seed=0)
    torch.manual_seed(0)
    network = mnist_net()
    net = gedi_network(network, "gedi_net", batching=True)
    net.optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    model = build_nesy_model(ROOT / "programs" / "sum.pl", [net], pools)
    return model, DataLoader(addition_dataset()("train", pools.train_y, n, 0), batch, False)


def test_train_model_defaults_to_the_program_prior_and_logs_deepproblogs_own_loss(capsys):
    model, loader = _model_and_loader()
    gedi = GEDILoss(seed=0)
    gedi.sgld.steps = 2
    from gedi_nesy.plugin import GEDITrainObject, default_objective

    default = default_objective(model, loader)
    assert default.prior_target is not None and math.isclose(float(default.prior_target.sum()), 1.0, rel_tol=1e-5)
    assert default.prior_window > 0
    # the loss DeepProbLog logs is its L_NESY: the same with and without the GEDI terms
    obj = GEDITrainObject(model, gedi)
    batch = next(iter(loader))
    model.optimizer.zero_grad()
    with_gedi = obj.get_loss(batch, model.solver.semiring.cross_entropy)
    model.optimizer.zero_grad()
    from deepproblog.train import TrainObject

    plain = TrainObject(model).get_loss(batch, model.solver.semiring.cross_entropy)
    assert math.isclose(float(with_gedi), float(plain), rel_tol=1e-5) and float(plain) > 0
    train = train_model(model, loader, 1, gedi=gedi, log_iter=2)
    out = capsys.readouterr().out
    assert "GEDI terms:" in out and "Average Loss" in out
    assert set(train.logger.log_data) >= {"loss", "gedi_gen", "gedi_prior"}
    assert all(v > 0 for v in train.logger.get_attribute("loss"))  # L_NESY, not folded with the prior


def test_train_model_without_gedi_is_deepproblogs_own():
    model, loader = _model_and_loader(4)
    train = train_model(model, loader, 1, gedi=False, log_iter=100, verbose=0)
    assert type(train).__name__ == "TrainObject" and not hasattr(train, "gedi_terms")
    with pytest.raises(GediError, match="expected a GEDILoss"):
        train_model(model, loader, 1, gedi="yes", verbose=0)
