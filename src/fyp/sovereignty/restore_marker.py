"""The pending-restore marker: what a restore that has begun to swap still has to do.

Written durably before the swap (``regions/<r>/.pending-restore.json``) and removed only
once everything since the backup is re-applied (:mod:`fyp.sovereignty.restore`); while
it exists, every open of the deployment finishes the restore first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fyp.durable import fsync_path
from fyp.errors import StorageError
from fyp.sovereignty.quarantine import new_quarantine
from fyp.sovereignty.salvage import Assessment
from fyp.sovereignty.staging import PENDING_RESTORE


@dataclass
class Pending:
    """The marker's content."""

    backup_id: str
    started_at_ms: int
    staging: str  # the staging directory's name; gone once the swap is complete
    files: list[str]  # the backup's data files, relative to the region's directory
    history: list[Sequence[Any]] | None  # the replaced store's audit log (None: unreadable)
    # (the fields below have defaults: a marker an older version wrote lacks them)
    restore_id: str = ""  # names the restore in its audit entry, so that is written once
    quarantine: str = ""  # where a damaged replaced store goes (relative to the region dir)
    salvage: dict[str, Any] = field(default_factory=dict)  # Assessment.to_dict()

    @property
    def assessment(self) -> Assessment:
        """The replaced store as the restore found it (history included)."""
        return Assessment.from_dict(self.salvage, self.history)


def read_pending(region_dir: Path) -> Pending | None:
    path = region_dir / PENDING_RESTORE
    try:
        pending = Pending(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(f"cannot read the pending-restore marker {path}: {exc}") from exc
    # an older marker's restore: named after its staging directory, the same every time
    pending.restore_id = pending.restore_id or pending.staging
    if not pending.quarantine:
        nonce = pending.staging.rsplit("-", 1)[-1]
        pending.quarantine = new_quarantine(pending.started_at_ms, nonce)
    return pending


def write_pending(region_dir: Path, pending: Pending) -> None:
    """Durably: the file, then its name in the directory."""
    path = region_dir / PENDING_RESTORE
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(vars(pending))  # (asdict would deep-copy the history first)
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(region_dir)


def remove_pending(region_dir: Path) -> None:
    (region_dir / PENDING_RESTORE).unlink(missing_ok=True)
    fsync_path(region_dir)
