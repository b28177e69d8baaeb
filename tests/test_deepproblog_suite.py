"""DeepProbLog's own test suite (the installed ``deepproblog.tests``) with ``BatchedEngine`` in
place of ``ExactEngine`` (plugin ``tests/deepproblog_swap.py``): every test passes, every solve
goes through the batched solver, and both of its paths (KLay circuits, DeepProbLog's own
evaluation for t(_), tensor probabilities and nn/3 networks) are used."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # DeepProbLog's own test suite, run in a subprocess

REPO = Path(__file__).resolve().parents[1]


def test_deepproblogs_test_suite_passes_with_the_batched_engine(tmp_path):
    report = tmp_path / "swap.json"
    path = [str(REPO), str(REPO / "tests")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path),
               GEDI_SWAP_REPORT=str(report), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "deepproblog.tests", "-q",
                           "-p", "deepproblog_swap", "-p", "no:cacheprovider"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) == 65 and "failed" not in proc.stdout, tail
    record = json.loads(report.read_text())
    assert record["solves"] > 0 and record["batched_solves"] == record["solves"], record
    assert record["klay_shapes"] > 0 and record["fallback_shapes"] > 0, record
