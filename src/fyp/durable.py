"""Writes that are on disk before anyone is told they happened.

A rename or a reply acknowledges a file; without an fsync of the file (and of the
directory that holds its name) a power cut can leave the name pointing at nothing, or
no name at all. One copy of these few lines for every module that needs them."""

from __future__ import annotations

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
