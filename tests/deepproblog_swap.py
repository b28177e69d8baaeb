"""A pytest plugin (``-p deepproblog_swap``) that runs DeepProbLog's own test suite with
``BatchedEngine`` in place of ``ExactEngine``, and records every ``Model.solve``: which solver
answered and how many of its query shapes took the KLay path or DeepProbLog's evaluation.
The record is written as JSON to the file named by ``$GEDI_SWAP_REPORT`` at the end."""

from __future__ import annotations

import json
import os

from gedi_nesy.deepproblog_import import import_deepproblog

import_deepproblog()
import deepproblog.engines  # noqa: E402
from deepproblog.model import Model  # noqa: E402

from gedi_nesy.engine import BatchedEngine, BatchedSolver

deepproblog.engines.ExactEngine = BatchedEngine  # before DeepProbLog's test modules import it
_RECORD = {"solves": 0, "batched_solves": 0, "klay_shapes": 0, "fallback_shapes": 0}
_solve = Model.solve


def _recording_solve(self, batch):
    results = _solve(self, batch)
    _RECORD["solves"] += 1
    if isinstance(self.solver, BatchedSolver):
        _RECORD["batched_solves"] += 1
        shapes = [self.solver.shape(q) for q in batch]
        _RECORD["klay_shapes"] += sum(s.fallback is None for s in shapes)
        _RECORD["fallback_shapes"] += sum(s.fallback is not None for s in shapes)
    return results


Model.solve = _recording_solve


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("GEDI_SWAP_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_RECORD, f)
