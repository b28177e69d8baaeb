"""Image pools (embedded digits, MNIST, user .npz), addition examples and query files.

Images are float tensors ``(N, 1, 28, 28)`` in ``[-1, 1]``; labels are int64 tensors.
A program reaches image ``I`` of a pool through the term ``tensor(train(I))``,
``tensor(test(I))`` or, with a validation split (``data.validation``), ``tensor(val(I))``.  Queries are built with placeholders for their images
(``addition(gedi_img0, gedi_img1, gedi_img2)`` plus a substitution), so that DeepProbLog's
exact engine compiles one circuit per query shape and reuses it (``cache=True``).
"""

from __future__ import annotations

import random
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from problog.logic import Constant, Term
from torch import Tensor

from gedi_core.data.base import validation_indices
from gedi_core.data.idx import find_idx_files, read_idx_files
from gedi_core.errors import GediError
from gedi_nesy.config import NesyDataConfig
from gedi_nesy.long_addition import number, sum_terms
from gedi_nesy.query_file import parse_query_file

PLACEHOLDER = "gedi_img{}"
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


# ----------------------------------------------------------------------------- pools
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
    _check_labels(labels, str(found[1]))
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


def _check_labels(labels: Tensor, where: str) -> None:
    """Every label is a digit 0..9 (the pools' classes); else one line naming ``where``."""
    bad = ((labels < DIGITS.start) | (labels >= DIGITS.stop)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise GediError(f"{where}: labels must be digits 0..9, found {int(labels[i])} at index {i} "
                        f"({len(bad)} of {len(labels)} labels outside 0..9)")


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


#: the pixel rule of .npz images, by dtype (documented in gedi_nesy/README.md and docs/errors.md):
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
    _check_labels(labels, f"{path}: '{key}'")
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


# ----------------------------------------------------------------------------- tensor sources
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


# ----------------------------------------------------------------------------- queries
def image_term(source: str, index: int) -> Term:
    return Term("tensor", Term(source, Constant(int(index))))


def abstract_query(term: Term, p: float = 1.0):
    """A ground query with its ``tensor(...)`` arguments replaced by placeholders, plus the
    substitution that restores them: queries of one shape then share one compiled circuit.
    A tensor that occurs several times gets one placeholder (it is one image, one atom)."""
    from deepproblog.query import Query

    subs: dict[Term, Term] = {}
    seen: dict[Term, Term] = {}

    def walk(t):
        if isinstance(t, Term) and t.functor == "tensor" and t.arity == 1:
            if t not in seen:
                seen[t] = Term(PLACEHOLDER.format(len(subs)))
                subs[seen[t]] = t
            return seen[t]
        if isinstance(t, Term) and t.arity > 0:
            return t.with_args(*(walk(a) for a in t.args))
        return t

    return Query(walk(term).with_probability(None), subs, p=p)


ADDITION_PAIRS = [(a, b) for a in range(10) for b in range(10) if a + b <= 9]


def _digits(task: str, rng: random.Random) -> tuple[list[int], int | None]:
    if task == "addition":  # paper appendix O: (a, b) uniform with a + b <= 9, images of a, b, a + b
        a, b = rng.choice(ADDITION_PAIRS)
        return [a, b, a + b], None
    if task == "sum":
        a, b = rng.randrange(10), rng.randrange(10)
        return [a, b], a + b
    raise GediError(f"unknown task '{task}' (known: addition, sum, multi_addition)")


TASK_PREDICATES = {"addition": ("addition", 3), "sum": ("sum", 3), "multi_addition": ("multi_addition", 3)}
PROGRAM_TASKS = {"long_addition": "multi_addition"}  # --task auto: program file stem -> task


def task_examples(task: str, labels: Tensor, n: int, seed: int, strict: bool = True,
                  digits: int = 2) -> list[tuple[list[int], int | None]]:
    """``n`` examples of ``task``: image indices with the digits it needs and the label of the
    query (None for the three-image form).

    ``addition`` and ``sum``: the digits are drawn first, then images of them without replacement
    from the pool; when the pool runs out of a digit, an error if ``strict``, else the examples so
    far.  ``multi_addition`` (two numbers of ``digits`` digits each): the images are drawn as
    DeepProbLog's ``MNISTOperator`` draws them, a permutation of the pool cut into queries
    (:func:`image_rounds`, never running out), and the label is the sum of the two numbers."""
    _check_labels(labels, f"{task} examples")
    if digits < 1:
        raise GediError(f"data.digits must be at least 1, got {digits}")
    rng = random.Random(seed)
    if task == "multi_addition":
        values = labels.tolist()
        examples = []
        for images in image_rounds(len(values), n, 2 * digits, rng):
            d = [values[i] for i in images]
            examples.append((images, number(d[:digits]) + number(d[digits:])))
        return examples
    by_class: dict[int, list[int]] = {c: [] for c in DIGITS}
    for i, y in enumerate(labels.tolist()):
        by_class[y].append(i)
    for idx in by_class.values():
        rng.shuffle(idx)
    examples = []
    for k in range(n):
        digits_k, label = _digits(task, rng)
        chosen = []
        for d in digits_k:
            if not by_class[d]:
                if not strict:
                    return examples
                raise GediError(f"{task}: the pool ({len(labels)} images) runs out of images of digit {d} "
                                f"at example {k + 1} of {n}; ask for fewer examples")
            chosen.append(by_class[d].pop())
        examples.append((chosen, label))
    return examples


def image_rounds(n_images: int, n: int, size: int, rng: random.Random) -> list[list[int]]:
    """``n`` queries of ``size`` distinct image indices out of ``n_images``, in rounds: each round
    is a fresh seeded permutation of the pool cut into ``n_images // size`` disjoint queries (the
    rest of the permutation unused).  The first round's queries use each image at most once; with
    more queries, later rounds reuse images (each image at most once per round, never twice in
    one query, so every query has the same shape)."""
    per_round = n_images // size
    if per_round == 0:
        raise GediError(f"a query needs {size} distinct images, but the pool has only {n_images}")
    queries: list[list[int]] = []
    while len(queries) < n:
        perm = list(range(n_images))
        rng.shuffle(perm)
        queries += [perm[k * size : (k + 1) * size] for k in range(min(per_round, n - len(queries)))]
    return queries


def example_query(task: str, images: Sequence[int], label: int | None, source: str, sum_digits: bool = False):
    """The DeepProbLog query of one example (see programs/*.pl for the predicates).

    ``multi_addition``: the first half of ``images`` is the first number, the second half the
    second (most significant first); the sum is the constant ``label``, or with ``sum_digits``
    its digits as ``tensor(sum_digit(K, V))`` terms (programs/long_addition.pl)."""
    from problog.logic import list2term

    terms = [image_term(source, i) for i in images]
    if task == "addition":
        term = Term("addition", *terms)
    elif task == "sum":
        term = Term("sum", terms[0], terms[1], Constant(label))
    elif task == "multi_addition":
        half = len(terms) // 2
        total = list2term(sum_terms(label, half)) if sum_digits else Constant(label)
        term = Term("multi_addition", list2term(terms[:half]), list2term(terms[half:]), total)
    else:
        raise GediError(f"unknown task '{task}'")
    return abstract_query(term)


def task_queries(task: str, labels: Tensor, n: int, seed: int, source: str = "train", strict: bool = True,
                 digits: int = 2, sum_digits: bool = False) -> list:
    """``n`` queries of ``task`` over the pool ``source`` whose labels are ``labels``
    (fewer, when ``strict`` is False and the pool runs out of a digit).  ``digits``: the numbers'
    length for ``multi_addition``; ``sum_digits``: its sum given digit by digit (for programs that
    read the fixed network ``sum_digit``, :func:`gedi_nesy.long_addition.uses_sum_digits`)."""
    return [example_query(task, imgs, label, source, sum_digits)
            for imgs, label in task_examples(task, labels, n, seed, strict, digits)]


def task_options(digits: int, program: str | Path) -> dict:
    """The keyword arguments of :func:`task_queries` for a run of ``program``: the numbers'
    length and whether the program reads the sum digit by digit."""
    from gedi_nesy.long_addition import uses_sum_digits
    from gedi_nesy.program import inspect_program

    return {"digits": digits, "sum_digits": uses_sum_digits(inspect_program(program))}


def resolve_task(task: str, program: str | Path) -> str:
    """``auto``: the task named by the program's file stem (addition, sum, multi_addition)."""
    if task != "auto":
        return task
    stem = Path(program).stem
    stem = PROGRAM_TASKS.get(stem, stem)
    if stem in TASK_PREDICATES:
        return stem
    raise GediError(f"{program}: cannot tell which examples to generate for this program; "
                    "pass --task addition|sum|multi_addition or --queries FILE")


def read_query_file(
    path: str | Path,
    sizes: dict[str, int],
    known: Iterable[tuple[str, int]] | None = None,
    provable: Callable[[object], bool] | None = None,
    ground: bool = True,
    held_out: Sequence[str] = (),
) -> list:
    """The queries of a query file (syntax: :func:`gedi_nesy.query_file.parse_query_file`) as
    DeepProbLog queries.

    Each ``tensor(S(I))`` must name a pool ``S`` in ``sizes`` with ``0 <= I < sizes[S]``; with
    ``known`` (the program's predicates as (name, arity)), an unknown predicate is an error;
    with ``provable`` (see :func:`has_proof`), so is a query the program cannot prove whatever
    the networks say (e.g. a label outside what the program can produce); a query over an image
    of a ``held_out`` pool (training queries: ``test``, ``val``) is refused, as training on the
    images the run is evaluated on would report a meaningless accuracy. Errors name the file and
    line."""
    from problog.errors import ProbLogError

    known_set = set(known) if known is not None else None
    queries = []
    for lineno, term, p in parse_query_file(path, ground=ground):
        if known_set is not None and (term.functor, term.arity) not in known_set:
            raise GediError(f"{path}:{lineno}: query names unknown predicate {term.functor}/{term.arity} "
                            f"(the program defines: {', '.join(sorted(f'{n}/{a}' for n, a in known_set))})")
        q = abstract_query(term, p)
        for t in q.substitution.values():
            src = t.args[0]
            if not (isinstance(src, Term) and src.arity == 1 and isinstance(src.args[0], Constant)
                    and isinstance(src.args[0].value, int)):
                raise GediError(f"{path}:{lineno}: image term {t} must be tensor(POOL(I)), e.g. tensor(train(I)) "
                                "or tensor(test(I))")
            name, idx = str(src.functor), int(src.args[0].value)
            if name not in sizes:
                raise GediError(f"{path}:{lineno}: image term {t} names unknown pool '{name}' (known: {', '.join(sizes)})")
            if not 0 <= idx < sizes[name]:
                raise GediError(f"{path}:{lineno}: image index {idx} in {t} out of range "
                                f"({name} has {sizes[name]} images)")
            if name in held_out:
                raise GediError(f"{path}:{lineno}: training query uses {t}, an image of the {name} pool: the run "
                                f"would train on the images it reports accuracy on; use tensor(train(I))")
        try:
            proved = provable is None or provable(q)
        except ProbLogError as exc:
            raise GediError(f"{path}:{lineno}: cannot ground query '{term}': {exc}") from None
        if not proved:
            raise GediError(f"{path}:{lineno}: the program cannot prove '{term}' whatever its networks answer "
                            "(is the label outside what the program can produce?)")
        queries.append(q)
    return queries


def has_proof(model) -> Callable[[object], bool]:
    """For :func:`read_query_file`'s ``provable``: whether the program of ``model`` (a DeepProbLog
    ``Model``, either engine) proves query ``q`` for some network output.  Compiles ``q``'s shape
    into the model's circuit cache (the work training needs anyway)."""

    def provable(q) -> bool:
        sdd = model.solver.cache.get(q).sdd
        nodes = [node for _, node in sdd.queries()]
        return not nodes or any(node is not None and node != sdd.FALSE for node in nodes)

    return provable
