"""The table commands' worker processes end with the command: a table stopped by a signal leaves
no run training on behind it (experiments/common/workers.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMMAND = """
import os, time
from experiments.common.workers import worker_pool
if __name__ == "__main__":
    with worker_pool(1) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 120).result()
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left unreaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_worker_ends_when_its_command_is_killed(sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", COMMAND], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        worker = int(parent.stdout.readline())
        assert alive(worker)  # the worker is busy with its 120 s job
        parent.send_signal(sig)
        parent.wait(timeout=30)
        deadline = time.time() + 30
        while alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not alive(worker), f"worker {worker} still runs after its command got {sig.name}"
    finally:
        parent.kill()
        parent.wait()
