"""A wall-clock limit on one piece of work that may never end (grounding one query of a program
whose recursion does not terminate, e.g. ``nat(N) :- nat(M), N is M + 1.``)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
import threading
import time
from typing import Iterator

from gedi_core.errors import GediError

DEFAULT_GROUND_TIMEOUT = 300.0  # seconds for grounding and compiling one query (--ground-timeout)
RETRY_SECONDS = 0.05  # past the limit, the alarm repeats this often until the block stops


class _Expired(BaseException):
    """Raised by the alarm; a BaseException, so that no ``except Exception`` inside ProbLog swallows it."""


def _expire(signum, frame) -> None:
    raise _Expired


def _quiet_expiry(hook, unraisable) -> None:
    """``sys.unraisablehook`` while a limit runs: an alarm lost in a finalizer is not reported
    (the next one stops the block); anything else goes to ``hook``."""
    if unraisable.exc_type is not _Expired:
        hook(unraisable)


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Run the block; after ``seconds`` of wall-clock time stop it with :class:`GediError`
    (``message``). Uses a ``SIGALRM`` timer, so the limit holds in the main thread of a Unix
    process (the command line); elsewhere (other threads, Windows) or with ``seconds <= 0`` the
    block runs without a limit. A timer already set is restored afterwards, less the time the
    block took.

    Past the limit the alarm repeats every ``RETRY_SECONDS``: Python ignores an exception raised
    inside a finalizer (a ``__del__`` that the garbage collector runs during grounding, e.g.
    ProbLog's ``SDDManager`` freeing a large manager), so one alarm that lands there is lost and
    a one-shot timer would let a non-terminating grounding run until memory runs out."""
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM}) if hasattr(signal, "pthread_sigmask") else None
    previous = signal.signal(signal.SIGALRM, _expire)
    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_quiet_expiry, hook)
    start = time.monotonic()
    outer = signal.setitimer(signal.ITIMER_REAL, seconds, RETRY_SECONDS)
    try:
        try:
            yield
        finally:  # an alarm landing before the timer is off raises _Expired here: caught below
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Expired:
        raise GediError(message) from None
    finally:
        signal.signal(signal.SIGALRM, previous)
        sys.unraisablehook = hook
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if outer[0] > 0:
            left = max(outer[0] - (time.monotonic() - start), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, left, outer[1])


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
