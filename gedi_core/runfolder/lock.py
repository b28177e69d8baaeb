"""The run folder's lock: one writer at a time; a lock whose process is dead is taken over with a warning."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

from gedi_core.errors import GediError
from gedi_core.runfolder.atomic import write_error


def _read_lock(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` of a lock file, None when it is empty or unreadable."""
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _stale(path: Path, holder: tuple[int, str] | None) -> bool:
    """A lock whose process is dead on this host (or an empty lock older than 30 s)."""
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > 30
        except OSError:
            return True
    pid, host = holder
    return host == socket.gethostname() and not _pid_alive(pid)


def _create_with(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` in one step (a hard link of a written temporary file, so
    that no reader ever sees it empty); FileExistsError if it exists. Where the file system has
    no hard links, ``O_EXCL`` creation, then the write."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(text)}.tmp")
    tmp.write_text(text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def release_lock(path: Path, pid: int) -> None:
    """Remove lock file ``path`` if process ``pid`` holds it."""
    holder = _read_lock(path)
    if holder is not None and holder[0] == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def acquire_lock(path: Path, folder: Path) -> None:
    """Create the lock file ``path`` of run folder ``folder`` (made in one step, holding this PID
    and host). A live holder is refused in one line; a dead one's lock is taken over with a warning."""
    for _ in range(3):
        try:
            _create_with(path, f"{os.getpid()} {socket.gethostname()}\n")
        except FileExistsError:
            holder = _read_lock(path)
            if not _stale(path, holder):
                who = f"process {holder[0]} on {holder[1]}" if holder else "another process"
                raise GediError(f"--out {folder}: {who} is writing this run folder (lock {path}); "
                                "wait for it to end or choose another --out") from None
            gone = f"process {holder[0]} on {holder[1]}" if holder else "a process"
            print(f"warning: --out {folder}: taking over the lock of {gone}, which is no longer running",
                  file=sys.stderr)
            if _read_lock(path) == holder:  # not meanwhile taken over by another process
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        except OSError as exc:
            raise write_error(path, exc) from None
        return
    raise GediError(f"--out {folder}: cannot take the lock {path} (other processes keep taking it)")
