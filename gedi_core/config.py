"""Run configuration: dataclasses, YAML/JSON loading, dotted overrides, validation.

A run's configuration is built in layers, later ones winning (:mod:`gedi_core.presets`):

1. the dataclass defaults (the paper's toy settings, appendix L / Table 7),
2. the data set's defaults (image sets: appendix M / Table 9),
3. the method's own defaults (e.g. JEM uses 10 SGLD steps),
4. a config file (``--config FILE``, YAML or JSON, nested sections),
5. command-line flags (``--lr``, ``--w-inv``, ``--set sgld.steps=5`` ...).

Every unknown key is an error that names the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from gedi_core.errors import GediError

T = TypeVar("T")


@dataclass
class SGLDConfig:
    """Stochastic-gradient Langevin dynamics with a persistent replay buffer (JEM-style).

    One step: ``x <- x - step_size * dE/dx + noise * N(0, I)``.

    ``chains``: SGLD chains drawn per training step (0: one per input of the batch, the paper's
    setting); ``L_GEN`` compares the batch's mean energy with the mean over these chains.
    ``every``: run SGLD only on every ``every``-th step (1: every step, the paper's setting); in
    between, ``L_GEN`` re-scores the samples of the last SGLD run with the current network.
    """

    steps: int = 1
    step_size: float = 0.01**2 / 2
    noise: float = 0.01
    buffer_size: int = 10000
    reinit_freq: float = 0.05
    init_low: float = -3.0
    init_high: float = 3.0
    chains: int = 0
    every: int = 1


@dataclass
class LossWeights:
    """Weights of the loss terms; a zero weight switches a term (and its cost) off."""

    gen: float = 1.0
    inv: float = 50.0
    prior: float = 10.0


@dataclass
class ModelConfig:
    """Backbone, projector and cluster head."""

    backbone: str = "mlp"
    hidden: int = 100  # MLP hidden units (toy: 2 layers of 100)
    feature_dim: int = 2  # encoder output h
    proj_hidden: int = 4  # projector hidden units (toy: 4; ResNet: 2F)
    proj_dim: int = 4  # projector output, the space of the cluster head U
    width: int = 128  # ResNet-8 channels F
    num_clusters: int = 2
    tau: float = 0.1
    normalize: bool = True  # unit-norm embeddings and prototypes in the cluster head


@dataclass
class DataConfig:
    """Which data set, how much of it, and its augmentation."""

    name: str = "moons"
    n_train: int = 2000
    n_test: int = 2000
    data_noise: float = 0.05  # noise of the toy generators themselves
    aug_noise: float = 0.03  # Gaussian-noise augmentation sigma (paper: 0.03)
    standardize: bool = False  # toy data: zero mean, unit variance per coordinate
    data_root: str | None = None
    # image data sets (gedi_core.data.vision); Table 9 augmentations
    download: bool = False  # let torchvision download missing files into data_root
    train_subset: int = 0  # use only the first N training images (0: all)
    test_subset: int = 0  # use only the first N test images (0: all)
    # share of the training set held out (seeded by the run's seed) as the split the run is
    # evaluated on, the test split not read at all: for choosing hyperparameters; 0: off
    validation: float = 0.0
    jitter_p: float = 0.1  # probability of colour jitter per image
    jitter_strength: float = 0.4  # brightness/contrast/saturation factors in [1-s, 1+s], hue in [-s/4, s/4]
    gray_p: float = 0.1  # probability of grayscale per image
    crop_pad: int = 4  # random crop: pad by this many pixels (reflect), crop back to size (0: off)
    crop_scale: float = 0.0  # > 0: random resized crop of area share in [crop_scale, 1] instead (not the paper's)
    hflip: str = "auto"  # horizontal flip with p=0.5: auto (CIFAR only), true, false


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    method: str = "gedi"
    seed: int = 0
    iters: int = 7000
    batch_size: int = 400
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 100
    ckpt_every: int = 1000
    device: str = "cpu"
    # epoch-based training (image data sets, gedi_core.train); 0 keeps the iteration loop
    epochs: int = 0
    amp: bool = False  # mixed precision (bfloat16 autocast; meant for CUDA, runs on CPU too)
    eval_every: int = 0  # also evaluate NMI/ACC on the test split every N epochs (0: only at the end)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    weights: LossWeights = field(default_factory=LossWeights)
    sgld: SGLDConfig = field(default_factory=SGLDConfig)

    def validate(self) -> "TrainConfig":
        """Check every value (finite numbers, ranges); raise :class:`GediError` naming the key."""
        check_config(self, TRAIN_RANGES)
        check_sgld_init(self.sgld)
        if str(self.data.hflip).lower() not in ("auto", "true", "false"):
            raise GediError(f"data.hflip must be auto, true or false, got {self.data.hflip!r}")
        from gedi_core.devices import resolve_device

        resolve_device(self.device)
        return self


# ----------------------------------------------------------------------------- value checks
FLOAT32_MAX = 3.4028234663852886e38  # tensors are float32: a larger number is inf there


@dataclass(frozen=True)
class Range:
    """The interval a config number must lie in (``None``: unbounded; ``open_*``: bound excluded)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"be {'>' if self.open_low else '>='} {_number(self.low or 0)}"
        low = "-inf" if self.low is None else _number(self.low)
        return f"lie in {'(' if self.open_low else '['}{low}, {_number(self.high)}{')' if self.open_high else ']'}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, open_low=True)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)  # also any other fraction, e.g. data.jitter_strength
LEARNING_RATE = Range(0, 1, open_low=True)  # Adam: a step of about lr per weight
SEED = Range(0, 2**32 - 1)  # numpy and scikit-learn take seeds in [0, 2^32)

#: the ranges of the sections both CLIs share, by dotted key
MODEL_RANGES: dict[str, Range] = {
    "model.hidden": POSITIVE, "model.feature_dim": POSITIVE, "model.proj_hidden": POSITIVE,
    "model.proj_dim": POSITIVE, "model.width": POSITIVE, "model.num_clusters": Range(2), "model.tau": POSITIVE,
}
SGLD_RANGES: dict[str, Range] = {
    "sgld.steps": NON_NEGATIVE, "sgld.step_size": NON_NEGATIVE, "sgld.noise": NON_NEGATIVE,
    "sgld.buffer_size": POSITIVE, "sgld.reinit_freq": PROBABILITY, "sgld.chains": NON_NEGATIVE,
    "sgld.every": POSITIVE,
}
TRAIN_RANGES: dict[str, Range] = {
    "seed": SEED, "iters": POSITIVE, "batch_size": POSITIVE, "lr": LEARNING_RATE, "weight_decay": NON_NEGATIVE,
    "log_every": POSITIVE, "ckpt_every": POSITIVE, "epochs": NON_NEGATIVE, "eval_every": NON_NEGATIVE,
    "weights.gen": NON_NEGATIVE, "weights.inv": NON_NEGATIVE, "weights.prior": NON_NEGATIVE,
    "data.n_train": POSITIVE, "data.n_test": POSITIVE, "data.data_noise": NON_NEGATIVE,
    "data.aug_noise": NON_NEGATIVE, "data.train_subset": NON_NEGATIVE, "data.test_subset": NON_NEGATIVE,
    "data.jitter_p": PROBABILITY, "data.jitter_strength": PROBABILITY, "data.gray_p": PROBABILITY,
    "data.crop_pad": NON_NEGATIVE, "data.crop_scale": PROBABILITY, "data.validation": Range(0, 1, open_high=True),
    **MODEL_RANGES, **SGLD_RANGES,
}


def check_config(cfg: Any, ranges: Mapping[str, Range]) -> None:
    """Every number of ``cfg`` (nested dataclasses) is finite, and each dotted key of ``ranges``
    lies in its range; else :class:`GediError` naming the key and the value."""
    for key, value in _numbers(cfg):
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise GediError(f"{key} must be a finite number, got {value!r}")
    for key, allowed in ranges.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GediError(f"{key} must be a number, got {value!r}")
        if value not in allowed:
            raise GediError(f"{key} must {allowed}, got {value!r}")


def check_section(section: Any, cls: type, ranges: Mapping[str, Range], where: str) -> None:
    """``section`` (e.g. a ``ModelConfig`` a user built) is a ``cls`` whose numbers lie in
    ``ranges`` (dotted keys, e.g. ``model.tau``; the section is their first part); integer
    fields hold integers. Else :class:`GediError` naming ``where`` and the key."""
    if not isinstance(section, cls):
        raise GediError(f"{where}: expected a {cls.__name__}, got {type(section).__name__}")
    ints = {f.name for f in dataclasses.fields(cls) if f.type in ("int", int)}
    for key, allowed in ranges.items():
        name = key.split(".", 1)[1]
        value = getattr(section, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (name in ints and not isinstance(value, int)):
            raise GediError(f"{where}: {key} must be {'an integer' if name in ints else 'a number'}, got {value!r}")
        if not math.isfinite(value) or value not in allowed:
            raise GediError(f"{where}: {key} must {allowed}, got {value!r}")


def check_sgld_init(sgld: SGLDConfig) -> None:
    if not sgld.init_low < sgld.init_high:
        raise GediError(f"sgld.init_low ({sgld.init_low}) must be below sgld.init_high ({sgld.init_high})")


def _numbers(cfg: Any, prefix: str = ""):
    """``(dotted key, value)`` of every int and float field of a (nested) config dataclass."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, f"{prefix}{f.name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{f.name}", value
        elif not isinstance(value, (str, bool, type(None))):
            raise GediError(f"{prefix}{f.name} must be a number, string or bool, got {value!r}")


def from_dict(cls: type[T], values: Mapping[str, Any], source: str = "config", prefix: str = "",
              base: T | None = None) -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys raise GediError.

    Keys the mapping leaves out keep their value in ``base`` (default: ``cls()``), so a
    nested section built by a ``default_factory`` keeps that factory's values.
    """
    if not isinstance(values, Mapping):
        raise GediError(f"{source}: section '{prefix or '<top>'}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    base = cls() if base is None else base  # type: ignore[call-arg]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise GediError(f"{source}: unknown config key '{dotted}' (known: {', '.join(sorted(fields))})")
        default = getattr(base, key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = from_dict(type(default), value, source, prefix=f"{dotted}.", base=default)
        else:
            kwargs[key] = _coerce(value, default, dotted, source)
    return dataclasses.replace(base, **kwargs)


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Convert ``value`` to the type of ``default`` (ints, floats, bools, strings; ``None``
    defaults are optional strings); numbers must be finite."""
    expects = "str" if default is None else type(default).__name__

    def wrong() -> GediError:
        got = "nothing (null)" if value is None else repr(value)
        return GediError(f"{source}: '{key}' expects {expects}, got {got}")

    if value is None:
        if default is None:
            return None
        raise wrong()
    if not isinstance(value, (str, int, float)):  # a mapping, a list, a date ...
        raise wrong()
    if default is None or isinstance(default, str):
        return str(value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise wrong()
        if value in (0, 1):
            return bool(value)
        raise wrong()
    if isinstance(value, bool):  # a number field set to true/false
        raise wrong()
    try:
        as_float = float(value)
    except ValueError:
        raise wrong() from None
    if not math.isfinite(as_float) or abs(as_float) > FLOAT32_MAX:
        raise GediError(f"{source}: '{key}' must be a finite number, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int):
            return value
        if as_float != int(as_float):
            raise wrong()
        return int(as_float)
    if isinstance(default, float):
        return as_float
    raise wrong()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON (``.json``) config file into a dict; errors name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise GediError(f"config file not found: {path}")
    text = read_text_file(path, "config file (YAML or JSON)")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise GediError(f"{path}:{exc.lineno}: cannot parse JSON: {exc.msg} (column {exc.colno})") from None
    except yaml.YAMLError as exc:
        raise GediError(f"{path}{_yaml_where(exc)}: cannot parse YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GediError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def read_text_file(path: str | Path, kind: str) -> str:
    """The UTF-8 text of ``path``; :class:`GediError` naming the file when it cannot be read
    or is not text (``kind`` says what it should be, e.g. ``"ProbLog program"``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GediError(f"{path}: cannot read {kind}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GediError(f"{path}: not a text file (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8); "
                        f"expected a {kind}") from None


def _yaml_where(exc: yaml.YAMLError) -> str:
    """``:LINE`` of a YAML error (1-based), or nothing when PyYAML gives no position."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, begun = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    where = f" (column {mark.column + 1})" if mark is not None else ""
    if context and begun is not None and mark is not None and begun.line != mark.line:
        context += f" begun on line {begun.line + 1}"
    return f"{problem}{where}" + (f", {context}" if context else "")


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def dotted_to_nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{'sgld.steps': 5}`` -> ``{'sgld': {'steps': 5}}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GediError(f"'{key}': '{'.'.join(parts[:i + 1])}' was given a value, so it has no key "
                                f"'{parts[i + 1]}'")
        if isinstance(node.get(parts[-1]), dict):
            raise GediError(f"'{key}' is a section; set its keys ('{key}.<key>=value')")
        node[parts[-1]] = value
    return nested


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` items (values are YAML scalars: ``5``, ``1e-3``, ``true``, ``abc``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GediError(f"--set expects key=value, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise GediError(f"--set {item}: cannot parse the value: {_yaml_problem(exc)}") from None
    return out


def build_config(
    cls: type[T],
    layers: list[tuple[str, Mapping[str, Any]]],
) -> T:
    """Merge the (source, nested-dict) layers in order and build ``cls``.

    Each layer is checked on its own so that an unknown key names its source.
    """
    merged: dict[str, Any] = {}
    for source, layer in layers:
        from_dict(cls, layer, source)  # validates keys and types against the schema
        merged = merge(merged, layer)
    return from_dict(cls, merged, "config")
