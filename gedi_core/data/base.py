"""The in-memory data bundle every data set loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator | None], Tensor]


def gaussian_noise(sigma: float) -> Augment:
    """Additive Gaussian-noise augmentation ``x' = x + sigma * N(0, I)`` for a whole batch."""

    def augment(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if sigma == 0:
            return x
        if generator is None or generator.device != x.device:
            return x + sigma * torch.randn_like(x)
        return x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    return augment


@dataclass
class DataBundle:
    """Train/test tensors with labels (labels are only used for evaluation)."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: Augment
    note: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])
