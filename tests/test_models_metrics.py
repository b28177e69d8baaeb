import math

import pytest
import torch

from gedi_core.config import ModelConfig
from gedi_core.errors import GediError
from gedi_core.metrics import cluster_accuracy, clustering_report
from gedi_core.models import ResNet8, build_model


def test_resnet8_parameter_count():
    n = sum(p.numel() for p in ResNet8(3, 128).parameters())
    assert 0.85e6 < n < 0.95e6  # about 1M with the projector (2F hidden units)
    model = build_model((3, 32, 32), ModelConfig(backbone="resnet8", width=128, proj_hidden=256, proj_dim=128,
                                                 num_clusters=10))
    total = sum(p.numel() for p in model.parameters())
    assert 0.9e6 < total < 1.1e6
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_energy_is_negative_logsumexp_of_logits():
    model = build_model((2,), ModelConfig())
    x = torch.randn(5, 2)
    assert torch.allclose(model.energy(x), -torch.logsumexp(model(x), -1))
    assert torch.allclose(model.probs(x).sum(-1), torch.ones(5))


def test_normalised_head_bounds_logits():
    model = build_model((2,), ModelConfig(tau=0.5))
    logits = model(100 * torch.randn(64, 2))
    assert logits.abs().max() <= 1 / 0.5 + 1e-5


def test_bad_backbone_and_shape():
    with pytest.raises(GediError, match="unknown backbone 'vgg'"):
        build_model((2,), ModelConfig(backbone="vgg"))
    with pytest.raises(GediError, match="resnet8 needs image inputs"):
        build_model((2,), ModelConfig(backbone="resnet8"))


def test_cluster_accuracy_with_permuted_labels():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    p = torch.tensor([2, 2, 0, 0, 1, 0])
    assert cluster_accuracy(y, p) == pytest.approx(5 / 6)
    rep = clustering_report(y, torch.tensor([1, 1, 2, 2, 0, 0]))
    assert rep["nmi"] == pytest.approx(1.0) and rep["acc"] == 1.0 and rep["ari"] == pytest.approx(1.0)
    assert clustering_report(y, torch.zeros(6, dtype=torch.long))["nmi"] == pytest.approx(0.0)
    assert not math.isnan(cluster_accuracy(y, torch.tensor([0, 1, 2, 3, 4, 5])))
