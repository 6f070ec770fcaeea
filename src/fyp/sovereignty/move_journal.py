"""The journal of a move in progress: what a killed move still has to do.

A move (:mod:`fyp.sovereignty.move`) writes to two stores, a ledger, artifacts and maybe
two Redis servers; no one transaction spans them. So before its first write it records
itself, durably, in ``regions/<source>/.moves/<move id>.json`` (the user, both regions,
who asked and why, and the step reached), and removes the file only once every step is
done. Every step can run again: a move killed anywhere is finished by running the move
again or by the next open of the deployment (:func:`fyp.sovereignty.move.finish_moves`).

The journal names the user (it must, to finish the move) and lives in the source
region's directory, where the user's data still is while it exists; it is a dot-entry,
so no backup holds it. While it exists ``fyp residency check`` reports the move as
unfinished (the user may have two homes) and says how to finish it.

A running move holds the source region's moves lock (:class:`MovesLock`): an open of
the deployment that finds it held leaves the journals to their owner.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from fyp.config import DeploymentConfig
from fyp.durable import fsync_path
from fyp.errors import MoveInProgress, StorageError
from fyp.filelock import open_locked, try_open_locked

JOURNAL_DIR = ".moves"
LOCK_FILE = ".lock"
COPY, REMOVE = "copy", "remove"
"""Steps: copying into the destination, then removing from the source."""


@dataclass
class MoveJournal:
    move_id: str
    user_id: str
    source: str
    dest: str
    reason: str
    actor: str
    started_at_ms: int
    step: str = COPY

    def path(self, config: DeploymentConfig) -> Path:
        return config.region_dir(self.source) / JOURNAL_DIR / f"{self.move_id}.json"

    def finish_command(self, config: DeploymentConfig) -> str:
        return (
            f"fyp user move {config.root} {self.user_id} --to {self.dest} "
            f"--reason {json.dumps(self.reason)}"
        )


def write_journal(config: DeploymentConfig, journal: MoveJournal) -> None:
    """Durably: the file, then its name in the directory."""
    path = journal.path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(asdict(journal), sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def remove_journal(config: DeploymentConfig, journal: MoveJournal) -> None:
    path = journal.path(config)
    path.unlink(missing_ok=True)
    fsync_path(path.parent)


def read_journal(path: Path) -> MoveJournal:
    try:
        return MoveJournal(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(f"cannot read the move journal {path}: {exc}") from exc


def journal_paths(config: DeploymentConfig, region: str) -> list[Path]:
    folder = config.region_dir(region) / JOURNAL_DIR
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def pending_moves(config: DeploymentConfig) -> Iterator[MoveJournal]:
    """Every unfinished move of the deployment, oldest region first."""
    for region in config.region_names:
        for path in journal_paths(config, region):
            yield read_journal(path)


def pending_move_of(config: DeploymentConfig, user_id: str) -> MoveJournal | None:
    return next((j for j in pending_moves(config) if j.user_id == user_id), None)


class MovesLock:
    """One mover of a region's users at a time, across processes: an exclusive ``flock``
    on ``.moves/.lock``, released by the kernel when its process dies, so a killed
    move's journal is free to finish. ``wait=False``: refuse at once when it is held
    (an open of the deployment leaves a running move to its owner)."""

    def __init__(self, config: DeploymentConfig, region: str, wait: bool = True) -> None:
        self.path = config.region_dir(region) / JOURNAL_DIR / LOCK_FILE
        self.region = region
        self.wait = wait
        self._fd: int | None = None

    def __enter__(self) -> MovesLock:
        fd = open_locked(self.path) if self.wait else try_open_locked(self.path)
        if fd is None:
            raise MoveInProgress(
                f"a move of a user of region {self.region!r} is being run by another "
                "process right now",
                region=self.region,
            )
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
