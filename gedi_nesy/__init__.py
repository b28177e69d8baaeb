"""gedi_nesy: GEDI models as DeepProbLog neural predicates.

A GEDI network (gedi_core backbone + cluster head) is registered with DeepProbLog under any
name; ProbLog programs use it through ``nn(NAME, [X], Y, Domain) :: pred(X, Y).``. Training
adds GEDI's generative, prior (and invariance) terms to DeepProbLog's NeSy loss.

Python API (about ten lines)::

    from gedi_nesy import NesyConfig, build_nesy_model, gedi_network, load_pools, task_queries, train_nesy
    cfg = NesyConfig()                          # programs/addition.pl, embedded digits, gedi+nesy
    pools = load_pools(cfg.data, cfg.seed)
    model = build_nesy_model(cfg.program, [gedi_network("gedi_net")], pools)
    train_q = task_queries("addition", pools.train_y, 100, seed=0, source="train")
    metrics = train_nesy(cfg, model, train_q, pools, out="runs/api")

The names below are loaded on first use (PEP 562), so that ``import gedi_nesy.cli`` (and with it
``gedi-nesy --help``) does not pay for importing torch, ProbLog and DeepProbLog.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module defining it
_EXPORTS: dict[str, str] = {
    "NesyConfig": "gedi_nesy.config",
    "NesyDataConfig": "gedi_nesy.config",
    "NesyWeights": "gedi_nesy.config",
    "BatchedEngine": "gedi_nesy.engine",
    "Pools": "gedi_nesy.pools",
    "load_pools": "gedi_nesy.image_sets",
    "read_query_file": "gedi_nesy.query_file",
    "task_queries": "gedi_nesy.tasks",
    "evaluate_nesy": "gedi_nesy.evaluation",
    "GEDINetwork": "gedi_nesy.network",
    "gedi_network": "gedi_nesy.network",
    "GEDILoss": "gedi_nesy.plugin",
    "GEDITrainObject": "gedi_nesy.plugin",
    "train_model": "gedi_nesy.plugin",
    "load_network": "gedi_nesy.predict",
    "program_prior": "gedi_nesy.prior",
    "build_nesy_model": "gedi_nesy.program",
    "inspect_program": "gedi_nesy.program",
    "network_domains": "gedi_nesy.program",
    "train_nesy": "gedi_nesy.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``gedi_nesy.NAME`` for the names of ``__all__``, imported from their module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gedi_nesy' has no attribute '{name}'")
    from gedi_nesy.deepproblog_import import import_deepproblog

    import_deepproblog()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
