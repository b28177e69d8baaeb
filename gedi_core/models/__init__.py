"""Backbones and the GEDI network, built by name from a :class:`ModelConfig`."""

from __future__ import annotations

from typing import Callable

from torch import nn

from gedi_core.config import ModelConfig
from gedi_core.errors import GediError
from gedi_core.models.gedi_model import GEDIModel, cosine_logits, energy_from_logits
from gedi_core.models.mlp import MLPEncoder
from gedi_core.models.modes import evaluating
from gedi_core.models.lenet import LeNet
from gedi_core.models.resnet import ResNet8
from gedi_core.registry import Registry

BackboneFactory = Callable[[tuple[int, ...], ModelConfig], nn.Module]


def _mlp(shape: tuple[int, ...], cfg: ModelConfig) -> nn.Module:
    in_dim = 1
    for d in shape:
        in_dim *= d
    return MLPEncoder(in_dim, cfg.hidden, cfg.feature_dim)


def _resnet8(shape: tuple[int, ...], cfg: ModelConfig) -> nn.Module:
    if len(shape) != 3:
        raise GediError(f"resnet8 needs image inputs (C, H, W), got input shape {shape}")
    return ResNet8(shape[0], cfg.width)


def _lenet(shape: tuple[int, ...], cfg: ModelConfig) -> nn.Module:
    if len(shape) != 3 or shape[1:] != (28, 28):
        raise GediError(f"lenet needs 28x28 images (C, 28, 28), got input shape {shape}")
    return LeNet(shape[0], cfg.feature_dim)


BACKBONES: Registry[BackboneFactory] = Registry("backbone")
BACKBONES.register("mlp", _mlp)
BACKBONES.register("resnet8", _resnet8)
BACKBONES.register("lenet", _lenet)


def build_backbone(shape: tuple[int, ...], cfg: ModelConfig) -> nn.Module:
    """The backbone named by ``cfg.backbone`` for inputs of shape ``shape`` (no batch dim)."""
    return BACKBONES.lookup(cfg.backbone)(tuple(shape), cfg)


def build_model(shape: tuple[int, ...], cfg: ModelConfig) -> GEDIModel:
    """A :class:`GEDIModel` for inputs of shape ``shape`` (positive integers); ``cfg``'s values are
    checked (e.g. ``tau`` > 0 and finite) with a :class:`GediError` naming the key."""
    from gedi_core.config import MODEL_RANGES, check_section

    check_section(cfg, ModelConfig, MODEL_RANGES, "ModelConfig")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape) or not shape:
        raise GediError(f"input_shape must be positive integers, e.g. (1, 28, 28), got {tuple(shape)!r}")
    backbone = build_backbone(shape, cfg)
    feature_dim = getattr(backbone, "out_dim", cfg.feature_dim)
    return GEDIModel(backbone, feature_dim, cfg.proj_hidden, cfg.proj_dim, cfg.num_clusters, cfg.tau, cfg.normalize)


__all__ = [
    "BACKBONES",
    "GEDIModel",
    "LeNet",
    "MLPEncoder",
    "ResNet8",
    "build_backbone",
    "build_model",
    "cosine_logits",
    "energy_from_logits",
    "evaluating",
]
