"""The in-memory data bundle every data set loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from gedi_core.errors import GediError

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
    """Train/test tensors with labels (labels are only used for evaluation).

    ``test_x``/``test_y`` are the held-out split the run is evaluated on: the test split, or
    (``evaluated_on == "validation"``, see :func:`carve_validation`) a validation split carved
    from the training set, the test split then being left out of the bundle altogether."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: Augment
    note: str = ""
    evaluated_on: str = "test"  # test | validation: what test_x/test_y hold

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


VALIDATION_SEED_OFFSET = 101  # the validation carve draws its permutation with seed + this


def validation_indices(n: int, fraction: float, seed: int, unit: str = "sample") -> tuple[Tensor, Tensor]:
    """The validation carve, written once for both packages: ``(validation, training)`` indices
    of ``n`` training items, a seeded (``seed``: the run's seed) disjoint share ``fraction`` of
    them (rounded) held out. A share that leaves either side empty is one line (``unit``: what
    the items are called in it)."""
    n_val = int(round(n * fraction))
    if not 0 < n_val < n:
        raise GediError(f"data.validation {fraction:g} of {n} training {unit}s leaves "
                        f"{'no validation' if n_val == 0 else 'no training'} {unit}; choose another fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + VALIDATION_SEED_OFFSET))
    return perm[:n_val], perm[n_val:]


def carve_validation(data: DataBundle, fraction: float, seed: int) -> DataBundle:
    """A seeded (``seed``: the run's seed), disjoint share ``fraction`` of the training set as the
    held-out split (:func:`validation_indices`): the run trains on the rest and is evaluated on
    it; the test split is dropped from the bundle, so nothing downstream can read it
    (``evaluated_on`` becomes ``validation``)."""
    n = int(data.train_x.shape[0])
    val, train = validation_indices(n, fraction, seed)
    n_val = len(val)
    note = (f"{data.note}; validation split: {n_val} of these {n} training samples (fraction {fraction:g}, seed "
            f"{seed}) are held out for evaluation, the other {n - n_val} train; the test split is not read")
    return DataBundle(data.name, data.train_x[train], data.train_y[train], data.train_x[val], data.train_y[val],
                      data.num_classes, data.augment, note, "validation")
