"""Small synthetic files in torchvision's folder layout (no network): shapes and formats of the real sets."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def class_images(n: int, h: int, w: int, c: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images whose mean brightness depends on the class (so clustering has signal)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    base = (labels[:, None, None, None] * (200 // max(classes - 1, 1))).astype(np.float64)
    images = np.clip(base + rng.normal(0, 20, size=(n, h, w, c)), 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str = "FashionMNIST", n_train: int = 64, n_test: int = 40) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = class_images(n, 28, 28, 1, 10, seed)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", x[..., 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def write_cifar(root: Path, classes: int = 10, n_per_batch: int = 20, n_test: int = 30) -> Path:
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    key = "labels" if classes == 10 else "fine_labels"

    def dump(name: str, n: int, seed: int) -> None:
        x, y = class_images(n, 32, 32, 3, classes, seed)
        entry = {"data": x.transpose(0, 3, 1, 2).reshape(n, -1), key: y.tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)

    if classes == 10:
        for i in range(1, 6):
            dump(f"data_batch_{i}", n_per_batch, i)
        dump("test_batch", n_test, 9)
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        dump("train", 5 * n_per_batch, 1)
        dump("test", n_test, 9)
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)
    return root


def write_svhn(root: Path, n_train: int = 50, n_test: int = 30) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = class_images(n, 32, 32, 3, 10, seed)
        y = np.where(y == 0, 10, y)  # SVHN stores digit 0 as label 10
        savemat(root / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y[:, None]})
    return root


def skip_md5(monkeypatch) -> None:
    """torchvision checks the official MD5 sums of CIFAR and SVHN files; synthetic files cannot match."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)
