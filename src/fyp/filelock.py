"""Exclusive file locks between the processes, and hosts, that share a deployment directory.

An exclusive ``flock`` on a lock file. The lock belongs to the open file, not to a
process: it is released when the last descriptor of that open file closes, so a holder
killed with ``kill -9`` never leaves it behind, and a child process handed the
descriptor holds it for as long as it lives (``fyp.regions.background`` relies on
that). A lock file is never deleted: a process waiting on a deleted one would lock a
name nobody else opens. One copy of these lines for the models lock, the moves lock,
staging directories and the background schedules.

Across machines a lock is only as good as the filesystem: Linux NFSv4 clients honour
``flock`` (as byte-range locks the server sees); NFSv3 without a lock manager, some
SMB and FUSE mounts do not, and there every host would take every lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


def try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting; False if another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def open_locked(path: Path) -> int:
    """A descriptor of ``path`` (created mode 0600, and its directory) holding an
    exclusive lock, once it is free. Not inheritable: a child gets it only when passed."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_open_locked(path: Path, create: bool = True) -> int | None:
    """:func:`open_locked` without waiting: None when another open file holds the lock
    (or, not ``create``, when there is no such file)."""
    try:
        fd = _open(path) if create else os.open(path, os.O_RDWR)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        if try_lock(fd):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def unlock(fd: int) -> None:
    """Release the lock, also for any process the descriptor was passed to, and close it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
