"""Configuration of a gedi-nesy run: dataclasses built with gedi_core's layered config tools.

Layers, later ones winning: the defaults below < ``--config FILE`` (YAML/JSON) < flags.
A config file may hold an ``arms:`` section, ``arms: {<arm>: {<keys>}}``, whose keys apply only
to runs of that arm (the paper's Table 9 likewise gives loss weights per column).
Unknown keys raise :class:`GediError` naming the key and its source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gedi_core.config import (LEARNING_RATE, NON_NEGATIVE, POSITIVE, SEED, ModelConfig, Range, SGLDConfig, amp_setting,
                              build_config, check_choices, check_config, check_sgld_init, download_setting, loss_weight,
                              ranges_of, read_text_file, section, setting)
from gedi_core.errors import GediError

ARMS = ("nesy", "gedi", "gedi+nesy")
TASKS = ("auto", "addition", "sum", "multi_addition")
PRIORS = ("entropy", "uniform")
PRIOR_TARGETS = ("uniform", "program")
DATA_NAMES = ("digits", "mnist", "npz")
ENGINES = ("batched", "exact")


def lenet_config() -> ModelConfig:
    """The NeSy network: LeNet, a 32-d unit-norm head over 10 classes, tau 0.1."""
    return ModelConfig(backbone="lenet", feature_dim=84, proj_hidden=84, proj_dim=32, num_clusters=10, tau=0.1)


def nesy_sgld() -> SGLDConfig:
    """SGLD of the paper's NeSy experiments (appendix O / Table 9): 20 steps of size 1, noise
    0.01, buffer 10k, reinit 0.05, one chain per image on every optimizer step; the images live in
    ``[-1, 1]``, so the buffer starts there. The plugin's ``GEDILoss`` uses it (any batch size)."""
    return SGLDConfig(steps=20, step_size=1.0, noise=0.01, buffer_size=10000, reinit_freq=0.05,
                      init_low=-1.0, init_high=1.0)


def nesy_fast_sgld() -> SGLDConfig:
    """The recipe's SGLD (gedi-nesy, batches of 60 queries): :func:`nesy_sgld` with 60 chains on
    every 2nd optimizer step (the step in between re-scores the kept samples) and a buffer of 3333
    chains, a third of 10k as 60 is a third of the 180 images of a batch of MNIST additions
    (flags ``--sgld-chains 60 --sgld-every 2 --buffer-size 3333``; ``--sgld-chains 0 --sgld-every 1
    --buffer-size 10000`` is the paper's).

    Measured (docs/trials/nesy.md): 3.3-3.7x the queries/s of ``nesy_sgld()``; on the MNIST
    validation split (seeds 0-2, entry "2026-11-29: the recipe re-chosen") digit accuracy 0.983 /
    0.976 / 0.983 at 1000 examples in ~400 s a run (2 runs on 2 cores), and within the seed spread
    at 100; on the embedded digits (entry "2026-11-29: SGLD speed levers", 300 examples) NMI
    0.686 ± 0.011 against 0.677 ± 0.009. Keeping the 10k buffer with 60 chains lost NMI
    (0.628 ± 0.029 at 300 examples)."""
    return dataclasses.replace(nesy_sgld(), chains=60, every=2, buffer_size=3333)


def plugin_sgld() -> SGLDConfig:
    """SGLD of the plugin's ``GEDILoss`` (DeepProbLog's ``train_model``, any batch size):
    :func:`nesy_sgld` with 16 chains on every optimizer step from a buffer of 1000, so that the cost
    and the number of samples per step do not follow the batch size (DeepProbLog's scripts train
    with batches of 2 queries) and each chain is revisited often within a short training."""
    return dataclasses.replace(nesy_sgld(), chains=16, every=1, buffer_size=1000)


@dataclass
class NesyWeights:
    """``w_nesy L_NESY + w_gen L_GEN + w_prior L_PRIOR + w_inv L_INV``; the arm masks some of them.

    Defaults: the NeSy recipe (gen 0.04 = the paper's gen/nesy ratio 1/25); how it was chosen
    and what each setting gave: docs/trials/nesy.md."""

    nesy: float = loss_weight("nesy", 1.0)
    gen: float = loss_weight("gen", 0.04)
    inv: float = loss_weight("inv", 0.0)
    prior: float = loss_weight("prior", 25.0)


@dataclass
class NesyDataConfig:
    """Where the images and the queries come from (``images`` given: ``name`` is ``npz``)."""

    name: str = setting("digits", "--data", "digits (embedded, offline) | mnist | npz", choices=DATA_NAMES,
                        kind="data")
    data_root: str | None = setting(None, "--data-root", "folder with the MNIST raw files (t10k-* and/or train-*)")
    download: bool = download_setting(True)  # mnist without data_root: let torchvision download it
    images: str | None = setting(None, "--images", ".npz with train_images, test_images, test_labels")
    queries: str | None = setting(None, "--queries", "training queries, one ground ProbLog query per line")
    # test queries (same syntax, tensor(test(I)) terms)
    test_queries: str | None = setting(None, "--test-queries", "test queries for query_acc (same syntax)")
    # built-in example generator (auto: from the program's name)
    task: str = setting("auto", "--task", "example generator: auto | addition | sum | multi_addition", choices=TASKS,
                        kind="task")
    examples: int = setting(100, "--examples", "number of training examples", range=POSITIVE)
    # multi_addition: digits per number (programs/multi_addition.pl, DeepProbLog's form, for small N;
    # programs/long_addition.pl for long numbers, e.g. 4, 15, 100)
    digits: int = setting(2, "--digits", "multi_addition: digits per number (default 2); queries are cut from "
                          "seeded permutations of the training pool, 2N distinct images each: pool / 2N queries use "
                          "each image once, more queries reuse images in further permutations", range=POSITIVE)
    # evaluation queries generated by the task (for query_acc; on the validation pool with validation)
    test_examples: int = setting(200, "--test-examples", "number of generated test queries (validation queries "
                                 "with --validation)", range=POSITIVE)
    # share of a single split held out as the test pool
    test_fraction: float = setting(0.2, range=Range(0, 1, True, True))
    # seed of the train/test split of a single set of images (digits, MNIST t10k only); -1: the
    # run's seed. Fix it (e.g. 0) for a test pool shared by every run of a study, so that no run's
    # training or validation pool holds another run's test images
    split_seed: int = setting(-1, "--split-seed", "seed of the train/test split of a single image set (-1: --seed)",
                              range=Range(-1, 2**32 - 1))
    # share of the training pool carved out (seeded by the run's seed) as the validation pool
    # (tensor(val(I))): training examples come from the rest, the run is evaluated on it and the
    # test pool is not read at all. For choosing hyperparameters; 0: off (final runs, test pool)
    validation: float = setting(0.0, "--validation", "share of the training pool held out as the validation pool: "
                                "evaluate there, never read the test pool (for choosing hyperparameters; 0: off)",
                                range=Range(0, 1, False, True))
    # Gaussian-noise augmentation sigma (L_INV)
    aug_noise: float = setting(0.2, "--aug-noise", "Gaussian-noise augmentation sigma", range=NON_NEGATIVE)
    # random shift (pixels) of the training images the networks see (0: off); not in the paper,
    # part of the recipe (docs/trials/nesy.md, "2026-11-29: the 100-example row")
    train_shift: int = setting(2, "--train-shift", "random shift in pixels of the training images (0: off)",
                               range=NON_NEGATIVE)

    def __post_init__(self) -> None:
        if self.images is not None:  # an .npz given is the data: normalised where the config is built
            self.name = "npz"


@dataclass
class NesyConfig:
    """Everything one gedi-nesy training run needs.

    A field and its flag are declared together (:func:`gedi_core.config.setting`); the CLI's flag
    table and the range checks are built from these declarations."""

    program: str = setting("programs/addition.pl", "--program", "ProbLog program (.pl) with nn(...) predicates")
    # comma-separated names registered with DeepProbLog
    networks: str = setting("gedi_net", "--network", "name(s) the GEDI network(s) are registered under, "
                            "comma-separated")
    arm: str = setting("gedi+nesy", "--arm", "nesy | gedi | gedi+nesy", choices=ARMS, kind="arm")
    seed: int = setting(0, "--seed", "random seed (data split, examples, initialisation)", range=SEED)
    # 0: the paper's default for the number of examples (500 / 100 / 25)
    epochs: int = setting(0, "--epochs", "epochs (0: paper default 500/100/25 for 100/1000/10000 examples)",
                          range=NON_NEGATIVE)
    batch_size: int = setting(60, "--batch-size", "queries per batch", range=POSITIVE)
    # Adam; the paper's is 1e-4 (docs/trials/nesy.md, "2026-11-29: the 100-example row")
    lr: float = setting(3e-3, "--lr", "Adam learning rate", range=LEARNING_RATE)
    weight_decay: float = setting(1e-4, "--weight-decay", "Adam L2 weight decay", range=NON_NEGATIVE)
    # entropy: -H(mean p) (paper appendix O) | uniform: CE(uniform, mean p)
    prior: str = setting("entropy", "--prior", "entropy | uniform", choices=PRIORS, kind="prior")
    # the class prior L_PRIOR pulls towards: program: the class marginal the training queries imply
    # under uninformative networks (gedi_nesy.prior; (21 - d)/165 for addition; chosen on the MNIST
    # validation split, docs/trials/nesy.md, "2026-11-29: the recipe re-chosen") | uniform: the paper's
    prior_target: str = setting("program", "--prior-target", "uniform | program: the class prior the training "
                                "queries imply", choices=PRIOR_TARGETS, kind="prior target")
    # inputs over which L_PRIOR estimates the class marginal (GEDILoss(prior_window=...)); 0: the
    # batch mean (the recipe's, at batches of 60 queries); the plugin's train_model uses 64
    prior_window: float = setting(0.0, "--prior-window", "images over which L_PRIOR estimates the class marginal "
                                  "(0: the batch)", range=NON_NEGATIVE)
    # epochs between searches for a renaming of each GEDI network's classes that lowers the
    # training L_NESY (gedi_nesy.renaming: label-free repair of wrongly named digits; the last
    # epoch always searches); 0: off
    rename_every: int = setting(0, "--rename-every", "epochs between searches for a renaming of the clusters that "
                                "lowers the training L_NESY (label-free repair of wrongly named digits; 0: off)",
                                range=NON_NEGATIVE)
    # training queries (a fixed seeded subset) the renaming search scores
    rename_queries: int = setting(256, "--rename-queries", "training queries the renaming search scores",
                                  range=POSITIVE)
    # starts drawn afresh while a start ends with a training L_NESY above restart_above (gedi_nesy.train:
    # the start with the lowest is kept; out/start<k> each); 0: one start
    restarts: int = setting(0, "--restarts", "starts drawn afresh while a start ends with training L_NESY above "
                            "--restart-above (the lowest is kept; OUT/start<k> each; 0: one start)", range=NON_NEGATIVE)
    restart_above: float = setting(0.5, "--restart-above", "training L_NESY above which a start is restarted",
                                   range=NON_NEGATIVE)
    device: str = setting("cpu", "--device", "torch device")
    # bfloat16 autocast of the networks and GEDI terms (for CUDA; runs on CPU too; inference stays float32)
    amp: bool = amp_setting()
    # batched (gedi_nesy.engine, circuits of a batch at once) | exact (DeepProbLog's)
    engine: str = setting("batched", "--engine", "inference: batched (tensorised circuits, default) | exact "
                          "(DeepProbLog's ExactEngine)", choices=ENGINES, kind="engine")
    # folder keeping the batched engine's compiled query shapes across runs
    compile_cache: str | None = setting(None, "--compile-cache", "folder keeping the batched engine's compiled "
                                        "query shapes across runs")
    # epochs between digit accuracy / NMI evaluations (query_acc: at the end)
    eval_every: int = setting(1, "--eval-every", "epochs between digit accuracy / NMI evaluations", range=POSITIVE)
    data: NesyDataConfig = section(NesyDataConfig)
    model: ModelConfig = section(lenet_config, hide=("width",), help={
        "num_clusters": "network outputs (must equal the nn domain size)", "backbone": "backbone (lenet, mlp, resnet8)"})
    weights: NesyWeights = section(NesyWeights)
    sgld: SGLDConfig = section(nesy_fast_sgld, help={"steps": "SGLD steps per batch"})

    def network_names(self) -> list[str]:
        names = [n.strip() for n in self.networks.split(",") if n.strip()]
        if not names:
            raise GediError("networks: give at least one network name (e.g. --network gedi_net)")
        return names

    def resolved_epochs(self, n_examples: int | None = None) -> int:
        """``epochs``, or the paper's default for the number of training examples (``n_examples``,
        e.g. the lines of a query file; default ``data.examples``): 500 / 100 / 25 epochs for up
        to 100 / 1000 / more examples."""
        if self.epochs > 0:
            return self.epochs
        n = self.data.examples if n_examples is None else n_examples
        return 500 if n <= 100 else 100 if n <= 1000 else 25

    def active_weights(self) -> dict[str, float]:
        """The weights after the arm's mask: ``nesy`` keeps only L_NESY, ``gedi`` drops it."""
        w = {"nesy": self.weights.nesy, "gen": self.weights.gen, "inv": self.weights.inv, "prior": self.weights.prior}
        if self.arm == "nesy":
            w.update(gen=0.0, inv=0.0, prior=0.0)
        elif self.arm == "gedi":
            w["nesy"] = 0.0
        return w

    def validate(self) -> "NesyConfig":
        """Check every value (names, finite numbers, ranges); raise :class:`GediError` naming the
        key. Changes nothing: returns the config itself."""
        check_choices(self)
        check_config(self, NESY_RANGES)
        if self.data.validation > 0:
            given = [flag for flag, path in (("--queries", self.data.queries), ("--test-queries", self.data.test_queries))
                     if path is not None]
            if given:
                raise GediError(f"data.validation: cannot be combined with {' and '.join(given)} (a query file names "
                                "images by index in the pools that the validation split re-cuts); use the generated "
                                "examples (--task), or put your own validation images in the .npz's test arrays")
        check_sgld_init(self.sgld)
        active = {k: w for k, w in self.active_weights().items() if w > 0}
        if not active:
            raise GediError(f"arm '{self.arm}': every weight it uses is 0, so nothing would train "
                            "(set --w-nesy, --w-gen, --w-prior or --w-inv above 0)")
        self.network_names()
        from gedi_core.devices import resolve_device  # torch: imported once the cheap checks passed

        resolve_device(self.device)
        check_input_files(self)
        return self


NESY_RANGES = ranges_of(NesyConfig)


def check_input_files(cfg: NesyConfig) -> None:
    """The files the run reads exist, the program is text and the query files parse (before any
    image is loaded).

    The program may also be a path relative to the repository (the CLI resolves it): it is
    only checked where it exists as given."""
    for flag, path in (("--queries", cfg.data.queries), ("--test-queries", cfg.data.test_queries),
                       ("--images", cfg.data.images)):
        if path is not None and not Path(path).is_file():
            raise GediError(f"{flag} {path}: no such file")
    if Path(cfg.program).is_file():
        read_text_file(cfg.program, "ProbLog program (.pl)")
    from gedi_nesy.query_file import parse_query_file  # ProbLog's parser: imported only when needed

    for flag, path in (("--queries", cfg.data.queries), ("--test-queries", cfg.data.test_queries)):
        if path is not None:
            parse_query_file(path, flag)


def build_nesy_config(layers: list[tuple[str, Mapping[str, Any]]]) -> NesyConfig:
    """:func:`gedi_core.config.build_config` for :class:`NesyConfig`, with per-arm sections.

    Each layer's ``arms.<arm>`` mapping is applied right after that layer, for the arm the
    merged layers select; the result is validated.
    """
    common: list[tuple[str, dict[str, Any]]] = []
    per_arm: list[dict[str, Any]] = []
    for source, layer in layers:
        layer = dict(layer)
        arms = layer.pop("arms", None) or {}
        if not isinstance(arms, Mapping):
            raise GediError(f"{source}: 'arms' must map arm names to config keys, got {type(arms).__name__}")
        for arm, section in arms.items():
            if arm not in ARMS:
                raise GediError(f"{source}: arms: unknown arm '{arm}' (known: {', '.join(ARMS)})")
            if not isinstance(section, Mapping):
                raise GediError(f"{source}: arms.{arm} must be a mapping of config keys")
        common.append((source, layer))
        per_arm.append(dict(arms))
    arm = build_config(NesyConfig, common).arm
    final: list[tuple[str, Mapping[str, Any]]] = []
    for (source, layer), arms in zip(common, per_arm):
        final.append((source, layer))
        if arm in arms:
            final.append((f"{source} (arms.{arm})", arms[arm]))
    return build_config(NesyConfig, final).validate()
