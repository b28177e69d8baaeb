"""MNIST-style raw IDX files (``PREFIX-images-idx3-ubyte`` / ``PREFIX-labels-idx1-ubyte``,
plain or ``.gz``), read with torchvision's reader; used by gedi_core and gedi_nesy."""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Iterable

from torch import Tensor

from gedi_core.errors import GediError


def find_idx_files(dirs: Iterable[Path], prefix: str) -> tuple[Path, Path] | None:
    """The images and labels files of split ``prefix`` (``train``, ``t10k``) in the first folder
    of ``dirs`` that holds both (each plain or gzipped), or None."""
    for folder in dirs:
        found = []
        for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
            found += [p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()][:1]
        if len(found) == 2:
            return found[0], found[1]
    return None


def read_idx_files(images: Path, labels: Path) -> tuple[Tensor, Tensor]:
    """uint8 images ``(N, H, W)`` and int64 labels ``(N,)``; :class:`GediError` naming the
    file when one is damaged, truncated or of the wrong kind."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    x, y = _read(images, read_image_file), _read(labels, read_label_file)
    if y.shape[0] != x.shape[0]:
        raise GediError(f"{images}: {x.shape[0]} images but {y.shape[0]} labels in {labels}")
    return x, y


def _read(path: Path, reader: Callable[[str], Tensor]) -> Tensor:
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory() as tmp:  # torchvision's reader opens plain files only
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return reader(str(plain))
    except AssertionError:  # torchvision asserts on the header's magic number
        raise GediError(f"{path}: not an IDX file (bad header)") from None
    except (OSError, EOFError, zlib.error, RuntimeError, ValueError, TypeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GediError(f"{path}: damaged or truncated IDX file ({reason})") from None
