"""A wall-clock limit on one piece of work that may never end (grounding one query of a program
whose recursion does not terminate, e.g. ``nat(N) :- nat(M), N is M + 1.``)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import Iterator

from gedi_core.errors import GediError

DEFAULT_GROUND_TIMEOUT = 300.0  # seconds for grounding and compiling one query (--ground-timeout)


class _Expired(BaseException):
    """Raised by the alarm; a BaseException, so that no ``except Exception`` inside ProbLog swallows it."""


def _expire(signum, frame) -> None:
    raise _Expired


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Run the block; after ``seconds`` of wall-clock time stop it with :class:`GediError`
    (``message``). Uses a ``SIGALRM`` timer, so the limit holds in the main thread of a Unix
    process (the command line); elsewhere (other threads, Windows) or with ``seconds <= 0`` the
    block runs without a limit. A timer already set is restored afterwards."""
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expire)
    outer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise GediError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *outer)


def grounding_limit(seconds: float, program: str, query) -> contextlib.AbstractContextManager:
    """:func:`time_limit` for grounding and compiling ``query`` of ``program``."""
    return time_limit(seconds, f"{program}: grounding query {query} took longer than {seconds:g} s "
                               "(--ground-timeout SECONDS; does a recursive rule never terminate?)")


def timeout_flag(text: str) -> float:
    """``--ground-timeout``'s value: seconds >= 0 (0: no limit)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: no limit), got '{text}'")
    return seconds
