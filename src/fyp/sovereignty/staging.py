"""Private working directories that hold plaintext copies of a region's data.

A backup snapshots the store into ``regions/<r>/.backup-<id>/``, a restore unpacks a
backup into ``.restore-<id>/``, the residency scan decrypts each backup into
``.scan-<name>/`` and ``fyp eval deployment`` cuts a copy in ``.eval-<id>/``: full
copies of the region's users, erased ones included. Each is removed when its run ends,
but a process killed mid-run (``kill -9``, a crash, a power cut) cannot remove it, and a
leftover copy would keep erased users forever.

So each directory holds a lock file that its run keeps locked (``flock``) from the
moment it exists until it is removed: a directory whose lock nobody holds belongs to a
dead run and is *stale*. :func:`remove_stale` deletes stale ones (the next backup or
restore, and ``fyp erasure process``, call it); one a live run holds is never touched.
The one exception is the staging directory of a restore that was interrupted while
swapping its files in (named by the region's pending-restore marker, see
:mod:`fyp.sovereignty.restore`): finishing that restore still needs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from fyp.errors import StorageError
from fyp.filelock import try_lock

EVAL_PREFIX = ".eval-"  # ``fyp eval deployment``'s copy of the region (fyp.evaluation.temporal)
PREFIXES = (".backup-", ".restore-", ".scan-", EVAL_PREFIX)
LOCK_FILE = ".lock"
PENDING_RESTORE = ".pending-restore.json"
"""The marker of a restore whose erasures are not re-applied yet (in the region's dir)."""


class Staging:
    """A staging directory, locked for as long as it is in use, removed on exit
    (unless :attr:`keep` is set: an interrupted restore leaves its files for the next run).

    ``create=False`` takes over an existing directory (finishing a restore)."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = path
        self.create = create
        self.keep = False
        self._fd: int | None = None

    def __enter__(self) -> Staging:
        if self.create:
            self.path.mkdir(parents=True)
        lock = self.path / LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if self.create else 0)
        try:
            fd = os.open(lock, flags, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot lock staging directory {self.path}: {exc}") from exc
        self._fd = fd
        if not try_lock(fd):
            self._close()
            raise StorageError(f"staging directory {self.path} is in use by another process")
        # a cleaner may have removed the directory between its creation and the lock
        if not _same_file(fd, lock):
            self._close()
            raise StorageError(f"staging directory {self.path} was removed while being created")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self.keep:
                shutil.rmtree(self.path, ignore_errors=True)  # removed before it is unlocked
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def staging_dirs(region_dir: Path) -> list[Path]:
    """Every staging directory in a region's directory, live or stale."""
    if not region_dir.is_dir():
        return []
    return sorted(p for p in region_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIXES))


def is_live(path: Path) -> bool:
    """Whether a running process holds the staging directory's lock."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def pending_restore_staging(region_dir: Path) -> str | None:
    """The staging directory an interrupted restore still needs, if any."""
    try:
        marker = json.loads((region_dir / PENDING_RESTORE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return ".restore-"  # unreadable marker: keep every restore staging directory
    staging = marker.get("staging") if isinstance(marker, dict) else None
    return str(staging) if staging else None


def remove_stale(region_dir: Path) -> list[Path]:
    """Delete the staging directories of dead runs; returns what was deleted.

    Each is locked before it goes, so a run starting meanwhile cannot lose its own."""
    needed = pending_restore_staging(region_dir)
    removed: list[Path] = []
    for path in staging_dirs(region_dir):
        if needed is not None and path.name.startswith(needed):
            continue
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:  # removed meanwhile
            continue
        try:
            if not try_lock(fd):
                continue  # a live run's
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                raise StorageError(f"cannot remove stale staging directory {path}")
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def refuse_while_restoring(region_dir: Path, region: str, what: str) -> None:
    """Refuse to copy a region whose restore did not finish: its store may hold users
    erased since the backup again, until the restore's re-application has run."""
    if (region_dir / PENDING_RESTORE).exists():
        raise StorageError(
            f"region {region!r} cannot be {what}: a restore of it did not finish, so erasures "
            "made since its backup may not be re-applied yet; open the deployment (any fyp "
            "command, e.g. `fyp erasure process`) or run `fyp restore` again to finish it",
            region=region,
        )
