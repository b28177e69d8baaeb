"""One validation carve for both packages: gedi_core's DataBundle and gedi_nesy's Pools hold out
the same items, drawn as they always were (a permutation seeded with seed + 101) (fast)."""

from __future__ import annotations

import pytest
import torch

from gedi_core.data.base import DataBundle, carve_validation as carve_bundle, validation_indices
from gedi_core.errors import GediError
from gedi_nesy.data import Pools, carve_validation as carve_pools


def items(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose single pixel is their index, and labels."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.arange(n) % 10


@pytest.mark.parametrize("n, fraction, seed", [(10, 0.1, 0), (37, 0.25, 1), (100, 0.5, 7), (1000, 0.1, 3)])
def test_both_packages_carve_the_indices_they_carved_before(n, fraction, seed):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 101))  # the carve as first written
    n_val = int(round(n * fraction))
    want_val, want_train = perm[:n_val].tolist(), perm[n_val:].tolist()
    val, train = validation_indices(n, fraction, seed)
    assert (val.tolist(), train.tolist()) == (want_val, want_train)
    x, y = items(n)
    bundle = carve_bundle(DataBundle("t", x, y, x[:2], y[:2], 10, None, "note"), fraction, seed)
    pools = carve_pools(Pools(x, y, x[:2], y[:2], "npz", "note"), fraction, seed)
    assert bundle.test_x.flatten().long().tolist() == pools.val_x.flatten().long().tolist() == want_val
    assert bundle.train_x.flatten().long().tolist() == pools.train_x.flatten().long().tolist() == want_train
    assert torch.equal(pools.val_y, y[want_val]) and torch.equal(bundle.train_y, y[want_train])
    assert bundle.evaluated_on == "validation" and pools.test_x is None


@pytest.mark.parametrize("fraction, side", [(0.01, "no validation"), (0.99, "no training")])
def test_a_share_that_empties_a_side_is_one_line_in_each_packages_words(fraction, side):
    x, y = items(20)
    with pytest.raises(GediError, match=rf"data.validation {fraction:g} of 20 training samples leaves {side} sample;"):
        carve_bundle(DataBundle("t", x, y, x, y, 10, None), fraction, 0)
    with pytest.raises(GediError, match=rf"data.validation {fraction:g} of 20 training images leaves {side} image;"):
        carve_pools(Pools(x, y, x, y, "npz"), fraction, 0)
