"""What every method provides, and the registry of methods by name.

A method owns a :class:`GEDIModel` and turns a batch into a loss by combining the pure
loss functions of :mod:`gedi_core.losses`.  Adding a method is one new module that calls
:func:`register` and one import line in ``gedi_core/methods/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gedi_core.config import TrainConfig
from gedi_core.data.base import Augment
from gedi_core.errors import GediError
from gedi_core.models import GEDIModel, build_model
from gedi_core.registry import Registry


class Method(nn.Module):
    """Base class: a model, an augmentation and a loss per batch."""

    #: whether the cluster head's assignments are the method's clusters (the failure-mode
    #: monitor only reports cluster collapse and label inconsistency for such methods)
    uses_cluster_head: bool = True

    def __init__(self, cfg: TrainConfig, input_shape: tuple[int, ...], augment: Augment, name: str = "") -> None:
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.input_shape = tuple(input_shape)
        self.augment = augment
        self.model: GEDIModel = build_model(self.input_shape, cfg.model)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def training_step(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The loss of one batch and the values of its terms (as floats, for the log)."""
        raise NotImplementedError

    def prepare_eval(self, train_x: Tensor) -> None:
        """Fit whatever evaluation needs on the training inputs (default: nothing)."""

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Cluster assignments of ``x``."""
        return self.model.predict(x)

    def replay_buffer(self) -> Tensor | None:
        """The SGLD replay buffer's chains, for methods with an energy term (else None)."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """State besides the parameters (replay buffers, ...), for checkpoints."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class, its config defaults and the GEDI terms it switches off."""

    cls: type[Method]
    defaults: dict[str, Any] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    summary: str = ""


METHODS: Registry[MethodSpec] = Registry("method")


def register(
    name: str,
    cls: type[Method],
    defaults: dict[str, Any] | None = None,
    disabled: set[str] | frozenset[str] = frozenset(),
    summary: str = "",
) -> None:
    """Register ``cls`` under ``name`` with nested config ``defaults``."""
    METHODS.register(name, MethodSpec(cls, defaults or {}, frozenset(disabled), summary))


def get_spec(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name raises :class:`GediError`."""
    return METHODS.lookup(name)


def build_method(cfg: TrainConfig, input_shape: tuple[int, ...], augment: Augment) -> Method:
    """Instantiate the method named ``cfg.method``; a weight on a term it lacks is an error."""
    spec = get_spec(cfg.method)
    for term in sorted(spec.disabled):
        if getattr(cfg.weights, term) != 0:
            raise GediError(
                f"method '{cfg.method}' has no '{term}' term, but weights.{term} = {getattr(cfg.weights, term)}; "
                f"drop the override or pick another method"
            )
    return spec.cls(cfg, input_shape, augment, name=cfg.method)
