"""An exclusive lock on a file, held for the rest of the process's life: one writer per run.

`fcntl.flock` locks an open file description, and the kernel releases it when the last descriptor
to it closes, which a dying process does however it dies: a `kill -9` leaves no stale lock to
delete by hand. The holder writes its PID into the file, so a second process can say whom it met.
The lock is advisory: it keeps out other lmforge processes, not a user's `rm`.

A process asking again for a lock it holds gets it at once; `release_lock` gives it up when a run
ends inside a longer-lived process (the Python API, a notebook, a test), so that another process
can continue the run. A forked child shares its parent's lock, as the kernel does.
Windows has no fcntl: there nothing is locked (lmforge targets Linux and macOS).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lmforge.errors import LmforgeError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_HELD: dict[Path, int] = {}
"""Resolved lock file -> the open descriptor holding its lock (closing it unlocks)."""


def hold_lock(path: Path, *, what: str) -> None:
    """Take the lock of `path` (created if absent; its folder must exist) for the rest of the
    process's life, or raise naming the PID that holds it. `what` names the locked thing."""
    path = path.resolve()
    if fcntl is None or path in _HELD:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise LmforgeError(
            f"cannot create the lock file {path} ({error.strerror}); choose a --run.dir you "
            "can write to"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise LmforgeError(
            f"{what} is in use by another lmforge process (pid {holder}); wait for it to "
            "finish or stop it, or choose another --run.dir"
        ) from None
    except OSError as error:  # a file system without locks (some network mounts)
        os.close(fd)
        logger.warning("%s cannot be locked (%s); make sure no other process uses it", what, error)
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[path] = fd


def release_lock(path: Path) -> None:
    """Give up the lock of `path` if this process holds it (closing the descriptor unlocks)."""
    fd = _HELD.pop(path.resolve(), None)
    if fd is not None:
        os.close(fd)


def _read_pid(fd: int) -> str:
    # The holder writes its PID just after taking the lock: a process that meets it in between
    # reads nothing, hence "unknown".
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
