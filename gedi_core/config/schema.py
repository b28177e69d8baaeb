"""The run configuration of ``gedi-core``: its sections, their defaults, flags and ranges.

Each field is declared once (:func:`~gedi_core.config.fields.setting`); the flag tables of both
CLIs and the range tables are built from these declarations. :class:`SGLDConfig`,
:class:`ModelConfig` and the loss weights (:func:`loss_weight`) are shared with ``gedi_nesy``'s config.
"""

from __future__ import annotations

from dataclasses import dataclass

from gedi_core.config.checks import (LEARNING_RATE, NON_NEGATIVE, POSITIVE, PROBABILITY, SEED, Range, check_config,
                                     check_sgld_init)
from gedi_core.config.fields import ranges_of, section, setting
from gedi_core.errors import GediError


@dataclass
class SGLDConfig:
    """Stochastic-gradient Langevin dynamics with a persistent replay buffer (JEM-style).

    One step: ``x <- x - step_size * dE/dx + noise * N(0, I)``.

    ``chains``: SGLD chains drawn per training step (0: one per input of the batch, the paper's
    setting); ``L_GEN`` compares the batch's mean energy with the mean over these chains.
    ``every``: run SGLD only on every ``every``-th step (1: every step, the paper's setting); in
    between, ``L_GEN`` re-scores the samples of the last SGLD run with the current network.
    """

    steps: int = setting(1, "--sgld-steps", "SGLD steps per iteration", range=NON_NEGATIVE)
    step_size: float = setting(0.01**2 / 2, "--sgld-step-size", "SGLD step size", range=NON_NEGATIVE)
    noise: float = setting(0.01, "--sgld-noise", "SGLD noise standard deviation", range=NON_NEGATIVE)
    buffer_size: int = setting(10000, "--buffer-size", "replay buffer size", range=POSITIVE)
    reinit_freq: float = setting(0.05, "--reinit-freq", "replay buffer reinitialisation frequency", range=PROBABILITY)
    init_low: float = -3.0
    init_high: float = 3.0
    chains: int = setting(0, "--sgld-chains", "SGLD chains per step (0: one per input image)", range=NON_NEGATIVE)
    every: int = setting(1, "--sgld-every", "run SGLD every N steps, re-scoring the last samples in between "
                         "(1: every step)", range=POSITIVE)


def loss_weight(term: str, default: float) -> float:
    """The weight field of loss term ``term`` (``gen``: ``L_GEN``): flag ``--w-<term>``, >= 0."""
    return setting(default, f"--w-{term}", f"weight of L_{term.upper()}", range=NON_NEGATIVE)


def amp_setting() -> bool:
    """The ``amp`` field (off by default), flag ``--amp``."""
    return setting(False, "--amp", "mixed precision (bfloat16 autocast; for CUDA, also runs on CPU)")


def download_setting(default: bool) -> bool:
    """The ``data.download`` field, flag ``--download``."""
    return setting(default, "--download", "let torchvision download missing data files into --data-root")


@dataclass
class LossWeights:
    """Weights of the loss terms; a zero weight switches a term (and its cost) off."""

    gen: float = loss_weight("gen", 1.0)
    inv: float = loss_weight("inv", 50.0)
    prior: float = loss_weight("prior", 10.0)


@dataclass
class ModelConfig:
    """Backbone, projector and cluster head."""

    backbone: str = setting("mlp", "--backbone", "backbone (mlp, resnet8, lenet)")
    hidden: int = setting(100, range=POSITIVE)  # MLP hidden units (toy: 2 layers of 100)
    feature_dim: int = setting(2, range=POSITIVE)  # encoder output h
    proj_hidden: int = setting(4, range=POSITIVE)  # projector hidden units (toy: 4; ResNet: 2F)
    proj_dim: int = setting(4, range=POSITIVE)  # projector output, the space of the cluster head U
    width: int = setting(128, "--width", "ResNet-8 channels F", range=POSITIVE)
    num_clusters: int = setting(2, "--num-clusters", "number of clusters c", range=Range(2))
    tau: float = setting(0.1, "--tau", "temperature of the cluster head", range=POSITIVE)
    normalize: bool = True  # unit-norm embeddings and prototypes in the cluster head


@dataclass
class DataConfig:
    """Which data set, how much of it, and its augmentation."""

    name: str = setting("moons", "--dataset", "data set name (moons, circles, svhn, cifar10, cifar100, mnist, "
                        "fashion-mnist, mnist-t10k)")
    n_train: int = setting(2000, "--n-train", "training points (toy data)", range=POSITIVE)
    n_test: int = setting(2000, range=POSITIVE)
    data_noise: float = setting(0.05, range=NON_NEGATIVE)  # noise of the toy generators themselves
    aug_noise: float = setting(0.03, "--aug-noise", "Gaussian-noise augmentation sigma", range=NON_NEGATIVE)
    standardize: bool = False  # toy data: zero mean, unit variance per coordinate
    data_root: str | None = setting(None, "--data-root", "folder with local data files (torchvision layout)")
    # image data sets (gedi_core.data.vision); Table 9 augmentations
    download: bool = download_setting(False)
    train_subset: int = setting(0, "--train-subset", "use only the first N training images (0: all)",
                                range=NON_NEGATIVE)
    test_subset: int = setting(0, "--test-subset", "use only the first N test images (0: all)", range=NON_NEGATIVE)
    # share of the training set held out (seeded by the run's seed) as the split the run is
    # evaluated on, the test split not read at all
    validation: float = setting(0.0, "--validation", "share of the training set held out and evaluated on instead "
                                "of the test split, which is then never read (for choosing hyperparameters; 0: off)",
                                range=Range(0, 1, open_high=True))
    jitter_p: float = setting(0.1, range=PROBABILITY)  # probability of colour jitter per image
    # brightness/contrast/saturation factors in [1-s, 1+s], hue in [-s/4, s/4]
    jitter_strength: float = setting(0.4, range=PROBABILITY)
    gray_p: float = setting(0.1, range=PROBABILITY)  # probability of grayscale per image
    # random crop: pad by this many pixels (reflect), crop back to size (0: off)
    crop_pad: int = setting(4, range=NON_NEGATIVE)
    # > 0: random resized crop of area share in [crop_scale, 1] instead (not the paper's)
    crop_scale: float = setting(0.0, range=PROBABILITY)
    hflip: str = "auto"  # horizontal flip with p=0.5: auto (CIFAR only), true, false


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    method: str = setting("gedi", "--method", "method name (gedi, gedi_no_gen, gedi_no_inv, gedi_no_prior, jem, "
                          "barlow, swav)")
    seed: int = setting(0, "--seed", "random seed", range=SEED)
    iters: int = setting(7000, "--iters", "training iterations", range=POSITIVE)
    batch_size: int = setting(400, "--batch-size", "batch size", range=POSITIVE)
    lr: float = setting(1e-3, "--lr", "Adam learning rate", range=LEARNING_RATE)
    weight_decay: float = setting(0.0, "--weight-decay", "Adam weight decay", range=NON_NEGATIVE)
    log_every: int = setting(100, "--log-every", "log and monitor every N iterations", range=POSITIVE)
    ckpt_every: int = setting(1000, "--ckpt-every", "checkpoint every N iterations", range=POSITIVE)
    device: str = setting("cpu", "--device", "torch device (cpu, cuda, cuda:1)")
    # epoch-based training (image data sets, gedi_core.train); 0 keeps the iteration loop
    epochs: int = setting(0, "--epochs", "training epochs (image data sets)", range=NON_NEGATIVE)
    amp: bool = amp_setting()
    # also evaluate NMI/ACC on the test split every N epochs (0: only at the end)
    eval_every: int = setting(0, "--eval-every", "also evaluate test NMI every N epochs", range=NON_NEGATIVE)
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    weights: LossWeights = section(LossWeights)
    sgld: SGLDConfig = section(SGLDConfig)

    def validate(self) -> "TrainConfig":
        """Check every value (finite numbers, ranges); raise :class:`GediError` naming the key."""
        check_config(self, TRAIN_RANGES)
        check_sgld_init(self.sgld)
        if str(self.data.hflip).lower() not in ("auto", "true", "false"):
            raise GediError(f"data.hflip must be auto, true or false, got {self.data.hflip!r}")
        from gedi_core.devices import resolve_device

        resolve_device(self.device)
        return self


#: the ranges of the sections both CLIs share, by dotted key
MODEL_RANGES = ranges_of(ModelConfig, "model.")
SGLD_RANGES = ranges_of(SGLDConfig, "sgld.")
TRAIN_RANGES = ranges_of(TrainConfig)
