"""Image pools: the training, test and validation images a program's ``tensor(S(I))`` terms
name, and the operations on them (the validation carve, DeepProbLog's tensor source).

Images are float tensors ``(N, 1, 28, 28)`` in ``[-1, 1]``; labels are int64 tensors of digits.
A program reaches image ``I`` of a pool through the term ``tensor(train(I))``,
``tensor(test(I))`` or, with a validation split (``data.validation``), ``tensor(val(I))``.
The pools are read by :mod:`gedi_nesy.image_sets`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gedi_core.data.base import validation_indices
from gedi_core.errors import GediError

DIGITS = range(10)  # the labels of every pool: the digit tasks and MNIST-style files


@dataclass
class Pools:
    """Disjoint training and test pools of images, or (after :func:`carve_validation`) disjoint
    training and validation pools, with the test pool set aside (``test_x``/``test_y`` None):
    a run that selects hyperparameters never holds the test images."""

    train_x: Tensor
    train_y: Tensor | None  # None when the user's .npz has no train_labels
    test_x: Tensor | None  # None in a validation run: the test pool is set aside
    test_y: Tensor | None
    name: str
    note: str = ""  # said in the output, e.g. that a single split was divided
    val_x: Tensor | None = None  # the validation pool (carved from the training pool), if any
    val_y: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def evaluated_on(self) -> str:
        """``validation`` when the pools have a validation pool (the run is evaluated there), else ``test``."""
        return "validation" if self.val_x is not None else "test"

    @property
    def eval_source(self) -> str:
        """The tensor source of the evaluation pool: ``val`` (``tensor(val(I))``) or ``test``."""
        return "val" if self.val_x is not None else "test"

    @property
    def eval_x(self) -> Tensor:
        """The images the run is evaluated on: the validation pool if there is one, else the test pool."""
        return self.val_x if self.val_x is not None else self.test_x

    @property
    def eval_y(self) -> Tensor:
        return self.val_y if self.val_x is not None else self.test_y

    def sources(self) -> dict[str, Tensor]:
        """The pools a program may name (``train``, and ``test`` or ``val``), by tensor source name."""
        named = {"train": self.train_x, "test": self.test_x, "val": self.val_x}
        return {k: v for k, v in named.items() if v is not None}

    def sizes(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.sources().items()}


def check_labels(labels: Tensor, where: str) -> None:
    """Every label is a digit 0..9 (the pools' classes); else one line naming ``where``."""
    bad = ((labels < DIGITS.start) | (labels >= DIGITS.stop)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise GediError(f"{where}: labels must be digits 0..9, found {int(labels[i])} at index {i} "
                        f"({len(bad)} of {len(labels)} labels outside 0..9)")


def carve_validation(pools: Pools, fraction: float, seed: int) -> Pools:
    """A seeded (``seed``: the run's seed), disjoint share ``fraction`` of the training pool's
    images as the validation pool (the core's carve, :func:`gedi_core.data.base.validation_indices`);
    the training pool keeps the rest (re-indexed from 0), and the test pool is set aside (not kept
    in the returned pools, so nothing downstream can read it).

    The validation pool needs labels (digit accuracy / NMI and generated validation queries)."""
    if not 0 < fraction < 1:
        raise GediError(f"data.validation must lie in (0, 1) to carve a validation pool, got {fraction!r}")
    if pools.train_y is None:
        raise GediError("data.validation: the training images have no labels (add train_labels to the .npz); "
                        "the validation pool needs them")
    n = int(pools.train_x.shape[0])
    val, train = validation_indices(n, fraction, seed, unit="image")
    tx, ty, vx, vy = pools.train_x[train], pools.train_y[train], pools.train_x[val], pools.train_y[val]
    n_test = 0 if pools.test_x is None else int(pools.test_x.shape[0])
    note = (f"{pools.note}; validation split: {len(vy)} of these {n} training images (fraction {fraction:g}, "
            f"seed {seed}) are the validation pool, the other {len(ty)} the training pool; the test pool "
            f"({n_test} images) is set aside and not read by this run")
    return Pools(tx, ty, None, None, pools.name, note, vx, vy)


class ImagePool:
    """A DeepProbLog tensor source: ``tensor(train(I))`` -> image ``I`` of the pool."""

    def __init__(self, images: Tensor, name: str) -> None:
        self.images = images
        self.name = name

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, key: tuple) -> Tensor:
        i = int(key[0])
        if not 0 <= i < len(self):
            raise GediError(f"image index {i} out of range for {self.name} ({len(self)} images)")
        return self.images[i]
