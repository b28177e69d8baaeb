"""The image sets behind the pools: scikit-learn's embedded digits, MNIST's raw files and a
user's ``.npz``, each read into :class:`gedi_nesy.pools.Pools` with every check made on reading
(:func:`load_pools` picks the set a config names).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gedi_core.data.idx import find_idx_files, read_idx_files
from gedi_core.errors import GediError
from gedi_nesy.config import NesyDataConfig
from gedi_nesy.pools import Pools, carve_validation, check_labels


def _to_unit(x: Tensor) -> Tensor:
    """``[0, 1]`` -> ``[-1, 1]``."""
    return x * 2.0 - 1.0


def _split(x: Tensor, y: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A seeded, disjoint split of one set of images into training and test pools."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_test = int(round(x.shape[0] * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def embedded_digits(test_fraction: float = 0.2, seed: int = 0) -> Pools:
    """scikit-learn's 1797 8x8 handwritten digits, upscaled to 20x20 and padded to 28x28
    (MNIST's framing), split with the seed into disjoint training and test pools."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    x = F.pad(x, (4, 4, 4, 4))
    y = torch.tensor(d.target, dtype=torch.long)
    tx, ty, vx, vy = _split(_to_unit(x), y, test_fraction, seed)
    note = (f"embedded digits (scikit-learn load_digits, 8x8 upscaled to 28x28): {len(ty)} training / "
            f"{len(vy)} test images, disjoint pools split with seed {seed}")
    return Pools(tx, ty, vx, vy, "digits", note)


def _mnist_split(root: Path, prefix: str) -> tuple[Tensor, Tensor] | None:
    found = find_idx_files((root, root / "raw", root / "MNIST" / "raw"), prefix)
    if found is None:
        return None
    images, labels = read_idx_files(*found)
    if images.shape[-2:] != (28, 28):
        raise GediError(f"{found[0]}: MNIST images are 28x28, got {tuple(images.shape[-2:])}")
    check_labels(labels, str(found[1]))
    return _to_unit(images.float().unsqueeze(1) / 255.0), labels


def mnist(root: str | Path | None, test_fraction: float = 0.2, seed: int = 0, download: bool = True) -> Pools:
    """MNIST from local raw files (``root``, ``root/raw`` or ``root/MNIST/raw``, gzipped or not),
    or downloaded by torchvision when no root is given.  When only one split is there (e.g. the
    official test split t10k), it is divided with the seed into disjoint training and test pools."""
    if root is None:
        root = Path("data")
        if download:
            try:
                import torchvision

                for train in (True, False):
                    torchvision.datasets.MNIST(str(root), train=train, download=True)
            except Exception as exc:  # noqa: BLE001 - network errors come in many types
                raise GediError(f"cannot download MNIST into {root}/ ({type(exc).__name__}: {exc}); "
                                "pass --data-root DIR with the raw MNIST files") from None
    root = Path(root)
    if not root.is_dir():
        raise GediError(f"--data-root {root}: no such folder")
    train, test = _mnist_split(root, "train"), _mnist_split(root, "t10k")
    expected = "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
    if train is None and test is None:
        raise GediError(f"--data-root {root}: no MNIST files found (looked in {root}, {root}/raw, "
                        f"{root}/MNIST/raw for {expected})")
    if train is not None and test is not None:
        note = f"MNIST from {root}: official training split ({len(train[1])}) and test split ({len(test[1])})"
        return Pools(train[0], train[1], test[0], test[1], "mnist", note)
    which, (x, y) = ("test split t10k", test) if test is not None else ("training split", train)
    tx, ty, vx, vy = _split(x, y, test_fraction, seed)
    note = (f"only the MNIST {which} exists in {root}: split with seed {seed} into disjoint pools of "
            f"{len(ty)} training and {len(vy)} test images")
    return Pools(tx, ty, vx, vy, "mnist", note)


def _npz_array(data, key: str, path: Path) -> np.ndarray:
    """Array ``key`` of an open .npz; a damaged member or an object array is one line."""
    try:
        arr = data[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise GediError(f"{path}: array '{key}' holds Python objects (dtype object); save numbers "
                            "(uint8 or float images, integer labels)") from None
        raise GediError(f"{path}: array '{key}' is damaged ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise GediError(f"{path}: array '{key}' is damaged or truncated ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
        raise GediError(f"{path}: array '{key}' holds Python objects; save numbers (uint8 or float images, integer labels)")
    return arr


#: the pixel rule of .npz images, by dtype (documented in docs/nesy_usage.md and docs/errors.md):
#: floats must lie in [0, 1]; uint8 (and any other integer dtype whose values fit 0..255) is
#: divided by 255; bool is 0/1. Nothing is clamped and nothing depends on the values' maximum.
PIXEL_RULE = "[0, 255] (integers) or [0, 1] (floats)"


def _npz_images(arr: np.ndarray, key: str, path: Path) -> Tensor:
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] != 1 or min(arr.shape[2:]) < 1:
        raise GediError(f"{path}: '{key}' must have shape (N, 1, H, W) or (N, H, W), got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise GediError(f"{path}: '{key}' is empty")
    if arr.dtype == np.bool_:
        return _to_unit(torch.tensor(arr.astype(np.float32)))
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise GediError(f"{path}: '{key}' must be integer or float pixels, got dtype {arr.dtype}")
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.argmin(finite.reshape(len(arr), -1).all(1)))
        raise GediError(f"{path}: '{key}' holds {int((~finite).sum())} NaN/inf pixel(s), the first in image {i}")
    floats = np.issubdtype(arr.dtype, np.floating)
    low, high = float(arr.min()), float(arr.max())
    if low < 0 or high > (1 if floats else 255):
        rule = "float pixels must lie in [0, 1]" if floats else "integer pixels must lie in [0, 255]"
        raise GediError(f"{path}: '{key}' pixels must lie in {PIXEL_RULE}, found {low:g}..{high:g} "
                        f"({arr.dtype}: {rule}; scale them yourself, nothing is clamped)")
    x = torch.tensor(arr.astype(np.float32))
    return _to_unit(x if floats else x / 255.0)


def _npz_labels(arr: np.ndarray, key: str, path: Path, n: int, images: str) -> Tensor:
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise GediError(f"{path}: {key} has {arr.shape[0]} entries for {n} {images}")
    if np.issubdtype(arr.dtype, np.floating):
        integral = np.isfinite(arr) & (arr == np.round(arr))
        if not integral.all():
            i = int(np.argmin(integral))
            raise GediError(f"{path}: '{key}' must hold integer labels, found {float(arr[i]):g} at index {i}")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise GediError(f"{path}: '{key}' must hold integer labels, got dtype {arr.dtype}")
    labels = torch.tensor(arr.astype(np.int64))
    check_labels(labels, f"{path}: '{key}'")
    return labels


def open_npz(path: Path, flag: str, expected: str):
    """``np.load`` of an .npz archive; a missing, damaged or non-.npz file is one clear error."""
    if not path.is_file():
        raise GediError(f"{flag} {path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GediError(f"{flag} {path}: cannot read .npz: damaged, truncated or not an .npz archive ({reason})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise GediError(f"{flag} {path}: one .npy array; expected an .npz archive (np.savez) with {expected}")
    return data


def npz_image_array(path: str | Path, flag: str = "--images", keys: Sequence[str] = ("images", "test_images")) -> Tensor:
    """The images of the first array of ``keys`` in an .npz (same pixel rules as :func:`npz_images`)."""
    path = Path(path)
    with open_npz(path, flag, " or ".join(keys)) as data:
        key = next((k for k in keys if k in data.files), None)
        if key is None:
            raise GediError(f"{flag} {path}: no array named {' or '.join(keys)} (has: {', '.join(data.files) or 'none'})")
        return _npz_images(_npz_array(data, key, path), key, path)


def npz_images(path: str | Path) -> Pools:
    """The user's images: ``train_images``, ``test_images``, ``test_labels`` (+ optional ``train_labels``).

    Images are ``(N, 1, H, W)`` or ``(N, H, W)``: integers in ``[0, 255]`` (divided by 255, whatever
    their dtype), bool (0/1) or floats in ``[0, 1]`` (taken as they are; anything outside is
    refused, never clamped); labels are digits 0..9."""
    path = Path(path)
    data = open_npz(path, "--images", "train_images, test_images, test_labels")
    with data:
        missing = [k for k in ("train_images", "test_images", "test_labels") if k not in data.files]
        if missing:
            raise GediError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(data.files) or 'none'})")
        tx = _npz_images(_npz_array(data, "train_images", path), "train_images", path)
        vx = _npz_images(_npz_array(data, "test_images", path), "test_images", path)
        if tx.shape[1:] != vx.shape[1:]:
            raise GediError(f"{path}: train_images {tuple(tx.shape[1:])} and test_images {tuple(vx.shape[1:])} "
                            "differ in shape")
        vy = _npz_labels(_npz_array(data, "test_labels", path), "test_labels", path, vx.shape[0], "test_images")
        ty = None
        if "train_labels" in data.files:
            ty = _npz_labels(_npz_array(data, "train_labels", path), "train_labels", path, tx.shape[0], "train_images")
    note = f"user images from {path}: {tx.shape[0]} training / {vx.shape[0]} test images of shape {tuple(tx.shape[1:])}"
    return Pools(tx, ty, vx, vy, "npz", note)


def load_pools(cfg: NesyDataConfig, seed: int) -> Pools:
    """The pools named by ``cfg`` (errors are :class:`GediError`, raised before any training).

    ``seed`` splits a single set of images into training and test pools (unless
    ``cfg.split_seed`` fixes that split) and, with ``cfg.validation > 0``, carves the validation
    pool out of the training pool (:func:`carve_validation`)."""
    split_seed = seed if cfg.split_seed < 0 else cfg.split_seed
    if cfg.images is not None or cfg.name == "npz":
        if cfg.images is None:
            raise GediError("data.name=npz needs --images FILE.npz")
        pools = npz_images(cfg.images)
    elif cfg.name == "digits":
        pools = embedded_digits(cfg.test_fraction, split_seed)
    elif cfg.name == "mnist":
        pools = mnist(cfg.data_root, cfg.test_fraction, split_seed, cfg.download)
    else:
        raise GediError(f"unknown data '{cfg.name}' (known: digits, mnist, npz)")
    size = min(pools.input_shape[1:])
    if cfg.train_shift >= size:
        raise GediError(f"data.train_shift must be below the image size {size}, got {cfg.train_shift}")
    if cfg.validation > 0:
        pools = carve_validation(pools, cfg.validation, seed)
    return pools
