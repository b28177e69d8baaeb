"""Run configuration: dataclasses, YAML/JSON loading, dotted overrides, validation.

A run's configuration is built in three layers, later ones winning:

1. the dataclass defaults (the paper's toy settings, appendix L / Table 7),
2. the method's own defaults (e.g. JEM uses 10 SGLD steps),
3. a config file (``--config FILE``, YAML or JSON, nested sections),
4. command-line flags (``--lr``, ``--w-inv``, ``--set sgld.steps=5`` ...).

Every unknown key is an error that names the key and the file it came from.
"""

from __future__ import annotations

import dataclasses
import json
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
    """

    steps: int = 1
    step_size: float = 0.01**2 / 2
    noise: float = 0.01
    buffer_size: int = 10000
    reinit_freq: float = 0.05
    init_low: float = -3.0
    init_high: float = 3.0


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
    jitter_p: float = 0.1  # probability of colour jitter per image
    jitter_strength: float = 0.4  # brightness/contrast/saturation factors in [1-s, 1+s], hue in [-s/4, s/4]
    gray_p: float = 0.1  # probability of grayscale per image
    crop_pad: int = 4  # random crop: pad by this many pixels (reflect), crop back to size (0: off)
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
    amp: bool = False  # mixed precision on CUDA (bfloat16 autocast)
    eval_every: int = 0  # also evaluate NMI/ACC on the test split every N epochs (0: only at the end)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    weights: LossWeights = field(default_factory=LossWeights)
    sgld: SGLDConfig = field(default_factory=SGLDConfig)

    def validate(self) -> "TrainConfig":
        """Check ranges; raise :class:`GediError` naming the offending key."""
        for name in ("gen", "inv", "prior"):
            if getattr(self.weights, name) < 0:
                raise GediError(f"weights.{name} must be >= 0, got {getattr(self.weights, name)}")
        positive = {
            "iters": self.iters,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "log_every": self.log_every,
            "ckpt_every": self.ckpt_every,
            "model.num_clusters": self.model.num_clusters,
            "model.tau": self.model.tau,
            "data.n_train": self.data.n_train,
            "data.n_test": self.data.n_test,
            "sgld.buffer_size": self.sgld.buffer_size,
        }
        for key, value in positive.items():
            if value <= 0:
                raise GediError(f"{key} must be > 0, got {value}")
        if self.sgld.steps < 0 or self.sgld.step_size < 0 or self.sgld.noise < 0:
            raise GediError("sgld.steps, sgld.step_size and sgld.noise must be >= 0")
        if not 0.0 <= self.sgld.reinit_freq <= 1.0:
            raise GediError(f"sgld.reinit_freq must lie in [0, 1], got {self.sgld.reinit_freq}")
        for key, value in {"epochs": self.epochs, "eval_every": self.eval_every, "data.train_subset":
                           self.data.train_subset, "data.test_subset": self.data.test_subset,
                           "data.crop_pad": self.data.crop_pad}.items():
            if value < 0:
                raise GediError(f"{key} must be >= 0, got {value}")
        for key in ("jitter_p", "gray_p"):
            if not 0.0 <= getattr(self.data, key) <= 1.0:
                raise GediError(f"data.{key} must lie in [0, 1], got {getattr(self.data, key)}")
        if str(self.data.hflip).lower() not in ("auto", "true", "false"):
            raise GediError(f"data.hflip must be auto, true or false, got {self.data.hflip!r}")
        if self.data.aug_noise < 0:
            raise GediError(f"data.aug_noise must be >= 0, got {self.data.aug_noise}")
        return self


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
    """Convert ``value`` to the type of ``default`` (ints, floats, bools, strings)."""
    if default is None or value is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            return type(default)(value)
        return type(default)(value)
    except (TypeError, ValueError):
        raise GediError(f"{source}: '{key}' expects {type(default).__name__}, got {value!r}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise GediError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise GediError(f"{path}: cannot parse config: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GediError(f"{path}: top level must be a mapping of config keys")
    return data


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
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def parse_set(items: list[str] | None) -> dict[str, str]:
    """Parse ``--set key=value`` items."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise GediError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
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
