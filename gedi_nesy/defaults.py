"""The names a gedi-nesy run chooses among (arms, tasks, priors, data, engines) and the recipe's
default sections (the NeSy LeNet, the SGLD settings): constants and factories with no import of
the rest of gedi_nesy, so that the engine and the networks read them without the config."""

from __future__ import annotations

import dataclasses

from gedi_core.config import ModelConfig, SGLDConfig

ARMS = ("nesy", "gedi", "gedi+nesy")
TASKS = ("auto", "addition", "sum", "multi_addition")
PRIORS = ("entropy", "uniform")
PRIOR_TARGETS = ("uniform", "program")
DATA_NAMES = ("digits", "mnist", "npz")
ENGINES = ("batched", "exact")
ARITHMETIC = ("auto", "always", "never")  # BatchedEngine(arithmetic=...): when queries are planned on distributions


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
