"""Worker processes for the table commands' ``--jobs``: fresh interpreters (``spawn``: no torch
threads or compiled circuits inherited from the command) that end when the command ends.

A table command stopped by a signal, even SIGKILL, leaves no run training on behind it: each
worker is sent SIGTERM by the kernel when the command's process dies (Linux), and the runs it held
resume from their last checkpoint when the command is run again."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def end_with_parent() -> None:
    """Linux: this process is sent SIGTERM when the process that started it ends. Elsewhere
    nothing is done (a stopped command's workers then run on to the end of their current run)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes that end with this one (:func:`end_with_parent`)."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=end_with_parent)
