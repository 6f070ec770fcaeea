"""Writes that are on disk before anyone is told they happened.

A rename or a reply acknowledges a file; without an fsync of the file (and of the
directory that holds its name) a power cut can leave the name pointing at nothing, or
no name at all. One copy of these few lines for every module that needs them."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """A file's bytes, or a directory's entries, on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write ``path`` whole and fsync it (its directory is the caller's to sync)."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def append_durable(path: Path, line: str) -> None:
    """Append ``line`` to ``path`` (made mode 0600) and fsync it. Under a lock: hosts
    sharing the directory over NFS append to the same ledgers, and O_APPEND alone is not
    atomic across machines there (a lock makes the client see the file's current end)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
