"""Image data sets by name: svhn, cifar10, cifar100, mnist, fashion-mnist (and mnist-t10k).

Files are read through torchvision's dataset classes in torchvision's folder layout under
``data.data_root`` (``--data-root``; default ``$GEDI_DATA_ROOT`` or ``./data``); with
``data.download = true`` (``--download``) torchvision fetches missing files. MNIST-style
sets are also read straight from raw IDX files (``.gz`` or not), found in
``ROOT/<MNIST|FashionMNIST>/raw``, ``ROOT/raw`` or ``ROOT`` itself, and then (also when a root
is given, e.g. for another data set) in the system location of Debian's ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``).

Every set is loaded once into memory as float tensors ``(N, C, H, W)`` in ``[-1, 1]``; the
Table 9 augmentation (:mod:`gedi_core.data.augment`) then runs on whole batches on the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from gedi_core.config import DataConfig
from gedi_core.data.augment import augment_for
from gedi_core.data.base import DataBundle
from gedi_core.data.idx import find_idx_files, read_idx_files
from gedi_core.errors import GediError

ArraySplit = tuple[np.ndarray, np.ndarray]  # images uint8 (N, H, W, C), labels int64 (N,)

SYSTEM_DIRS: dict[str, list[Path]] = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}


@dataclass(frozen=True)
class VisionSpec:
    """What is known about one image data set."""

    name: str
    torchvision_class: str
    folder: str  # torchvision's folder under the root (MNIST-style sets)
    channels: int
    size: int
    num_classes: int
    defaults: dict[str, Any]


def _defaults(num_classes: int, epochs: int, width: int, prior: float) -> dict[str, Any]:
    """Paper Table 9 / appendix M settings shared by the image data sets."""
    return {
        "epochs": epochs,
        "batch_size": 64,
        "lr": 1e-4,
        "log_every": 100,
        "model": {"backbone": "resnet8", "width": width, "proj_hidden": 2 * width, "proj_dim": width,
                  "num_clusters": num_classes, "tau": 0.1},
        "weights": {"gen": 1.0, "inv": 50.0, "prior": prior},
        "sgld": {"steps": 20, "step_size": 1.0, "noise": 0.01, "buffer_size": 10000, "reinit_freq": 0.05,
                 "init_low": -1.0, "init_high": 1.0},
        "data": {"aug_noise": 0.03},
    }


SPECS: dict[str, VisionSpec] = {
    "svhn": VisionSpec("svhn", "SVHN", "", 3, 32, 10, _defaults(10, 20, 128, 25.0)),
    "cifar10": VisionSpec("cifar10", "CIFAR10", "", 3, 32, 10, _defaults(10, 200, 128, 25.0)),
    "cifar100": VisionSpec("cifar100", "CIFAR100", "", 3, 32, 100, _defaults(100, 200, 256, 50.0)),
    "mnist": VisionSpec("mnist", "MNIST", "MNIST", 1, 28, 10, _defaults(10, 20, 128, 50.0)),
    "fashion-mnist": VisionSpec("fashion-mnist", "FashionMNIST", "FashionMNIST", 1, 28, 10, _defaults(10, 20, 128, 50.0)),
    "mnist-t10k": VisionSpec("mnist-t10k", "MNIST", "MNIST", 1, 28, 10, _defaults(10, 20, 128, 50.0)),
}

#: data-set defaults, a layer between the dataclass defaults and the method defaults
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {name: spec.defaults for name, spec in SPECS.items()}


def default_root() -> Path:
    return Path(os.environ.get("GEDI_DATA_ROOT", "data"))


# ---------------------------------------------------------------- raw IDX files (MNIST-style)


def idx_dirs(spec: VisionSpec, root: str | None) -> list[Path]:
    """Where MNIST-style raw files are looked for, in order: under the root, then the system's."""
    system = SYSTEM_DIRS.get(spec.name.replace("-t10k", ""), [])
    if root is not None:
        r = Path(root).expanduser()
        return [r / spec.folder / "raw", r / "raw", r, *system]
    r = default_root()
    return [r / spec.folder / "raw", r / "raw", *system]


def _read_idx_split(spec: VisionSpec, root: str | None, train: bool) -> ArraySplit | None:
    found = find_idx_files(idx_dirs(spec, root), "train" if train else "t10k")
    if found is None:
        return None
    images, labels = read_idx_files(*found)
    return images.numpy()[..., None], labels.numpy()


# ---------------------------------------------------------------- torchvision


def _torchvision_split(spec: VisionSpec, root: str | None, train: bool, download: bool) -> ArraySplit:
    """Read one split with torchvision's class (downloading when allowed)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, spec.torchvision_class)
    where = Path(root).expanduser() if root is not None else default_root()
    kwargs: dict[str, Any] = {"split": "train" if train else "test"} if spec.name == "svhn" else {"train": train}
    try:
        ds = cls(str(where), download=download, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        hint = "" if download else "; pass --download to fetch it, or --data-root to point at local files"
        raise GediError(
            f"dataset '{spec.name}' ({'train' if train else 'test'} split) not found or corrupted under {where} "
            f"(torchvision {spec.torchvision_class} layout){hint}: {str(exc).splitlines()[0] if str(exc) else exc}"
        ) from None
    if spec.name == "svhn":
        images = np.asarray(ds.data).transpose(0, 2, 3, 1)  # (N, 3, 32, 32) -> NHWC
        labels = np.asarray(ds.labels)
    else:
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        images = data if data.ndim == 4 else data[..., None]
        targets = ds.targets
        labels = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    return images, labels.astype(np.int64)


def read_split(spec: VisionSpec, cfg: DataConfig, train: bool) -> ArraySplit:
    """One split as uint8 NHWC images and int64 labels (raw IDX files first for MNIST-style sets)."""
    if spec.folder:
        split = _read_idx_split(spec, cfg.data_root, train)
        if split is not None:
            return split
    return _torchvision_split(spec, cfg.data_root, train, cfg.download)


def read_some_split(name: str, cfg: DataConfig) -> tuple[Tensor, str]:
    """The images of image data set ``name`` where only images are needed (an OOD set): its test
    split, or its training split where only that one is there (MNIST without t10k, say), as float
    NCHW in ``[-1, 1]`` (the first ``cfg.test_subset`` when set), with the split's name."""
    spec = SPECS[name]
    try:
        images, _ = read_split(spec, cfg, train=False)
        split = "test"
    except GediError as missing_test:
        try:
            images, _ = read_split(spec, cfg, train=True)
        except GediError:
            raise missing_test from None
        split = "train"
    if cfg.test_subset:
        images = images[: cfg.test_subset]
    return to_tensor(images), split


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0).contiguous()


def load_vision(name: str, cfg: DataConfig) -> DataBundle:
    """Load data set ``name`` (a key of :data:`SPECS`) into a :class:`DataBundle`."""
    spec = SPECS[name]
    if cfg.crop_pad >= spec.size:
        raise GediError(f"data.crop_pad must be below the image size {spec.size} of '{name}', got {cfg.crop_pad}")
    if name == "mnist-t10k":
        # only the official test split is needed: its first 8000 images train, the last 2000 test
        images, labels = read_split(spec, cfg, train=False)
        if len(labels) <= 8000:
            raise GediError(f"dataset 'mnist-t10k' trains on the first 8000 images of the MNIST test split t10k "
                            f"and tests on the rest, but t10k has {len(labels)} images")
        (tr_x, tr_y), (te_x, te_y) = (images[:8000], labels[:8000]), (images[8000:], labels[8000:])
    else:
        tr_x, tr_y = read_split(spec, cfg, train=True)
        te_x, te_y = read_split(spec, cfg, train=False)
    if cfg.train_subset:
        tr_x, tr_y = tr_x[: cfg.train_subset], tr_y[: cfg.train_subset]
    if cfg.test_subset:
        te_x, te_y = te_x[: cfg.test_subset], te_y[: cfg.test_subset]
    expected = (spec.size, spec.size, spec.channels)
    for split, arr in (("train", tr_x), ("test", te_x)):
        if tuple(arr.shape[1:]) != expected:
            raise GediError(f"dataset '{name}': {split} images have shape {tuple(arr.shape[1:])} (HWC), "
                            f"expected {expected}")
    for split, y in (("train", tr_y), ("test", te_y)):
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < spec.num_classes):
            raise GediError(f"dataset '{name}': {split} labels must lie in 0..{spec.num_classes - 1}, "
                            f"found {int(y.min())}..{int(y.max())}")
    return DataBundle(
        name=name,
        train_x=to_tensor(tr_x),
        train_y=torch.from_numpy(tr_y),
        test_x=to_tensor(te_x),
        test_y=torch.from_numpy(te_y),
        num_classes=spec.num_classes,
        augment=augment_for(name, spec.channels, cfg),
        note=f"{name}: {len(tr_y)} train / {len(te_y)} test images of shape {spec.channels}x{spec.size}x{spec.size}",
    )


def loaders() -> dict[str, Callable[[DataConfig, int], DataBundle]]:
    """A ``loader(cfg, seed)`` for each image data set (the split is fixed: no seed needed)."""

    def loader(name: str) -> Callable[[DataConfig, int], DataBundle]:
        def load(cfg: DataConfig, seed: int) -> DataBundle:
            return load_vision(name, cfg)

        load.__name__ = f"load_{name.replace('-', '_')}"
        return load

    return {name: loader(name) for name in SPECS}


def is_image_dataset(name: str) -> bool:
    return name in SPECS
