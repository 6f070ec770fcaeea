"""Restore a region from one of its backups, then erase again whoever was erased since.

Order matters: the backup is verified and unpacked completely (every checksum, the
seal, the manifest's MAC) into a staging directory inside the region's directory
(:mod:`fyp.sovereignty.staging`) before the live region is touched, so a damaged or
tampered backup changes nothing. Then the live store and data files are swapped for
the restored ones (each by an atomic rename), and
:func:`fyp.sovereignty.erasure.reapply_erasures` erases every restored user that the
region's erasure ledger — never part of a backup, never rolled back — says was erased:
an erased user never comes back. The audit log is not rolled
back either: the entries the replaced store holds beyond the backup (an operator's read,
a moderation decision) are read before the swap and appended to the restored log with
their original time, actor and subject (:func:`carry_audit_history`).

The store must not be in use: a server holding it open would keep writing to the
replaced file. SQLite holds a shared lock on its ``-shm`` file for as long as a
connection is open in WAL mode; :func:`store_in_use` probes that lock and a restore
refuses while another process holds it. (Stop ``fyp serve`` first.)
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fyp.config import DeploymentConfig
from fyp.errors import AlreadyExists, StorageError
from fyp.sovereignty.backup import (
    FILES_PREFIX,
    NOT_BACKED_UP,
    STORE_PART,
    find_backup,
    read_only,
    region_data_files,
    store_companions,
    store_file,
    unpack_backup,
)
from fyp.sovereignty.staging import Staging, remove_stale

if TYPE_CHECKING:
    from fyp.audit.log import AuditLog, Record

_SHM_DMS_BYTE = 128  # SQLite's "dead man switch" lock in the -shm file of a WAL database
STAGING = ".restore-"  # + backup id + a nonce, in the region's directory
UNPACKED = "backup"  # the unpacked backup inside the staging directory


class StoreInUse(AlreadyExists):
    """The region's store is open in another process (409): stop the server first."""

    code = "store_in_use"


def store_in_use(path: Path) -> bool:
    """Whether another process has the SQLite database at ``path`` open (WAL mode).

    Every connection holds a read lock on one byte of the ``-shm`` file; if an exclusive
    lock on that byte cannot be taken, someone is connected. Locks are per process, so
    connections of the calling process are invisible here: close them first."""
    shm = path.with_name(path.name + "-shm")
    if not shm.exists():
        return False
    fd = os.open(shm, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


@dataclass
class RestoreReport:
    region: str
    backup_id: str
    backup_created_at: str
    backup_path: str
    verified_parts: int
    restored_bytes: int
    store: dict[str, Any]
    reerased: list[str] = field(default_factory=list)
    # audit entries written after the backup, carried into the restored log; None when
    # the replaced store's log could not be read (the restore entry says so)
    carried_audit_entries: int | None = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reerased"] = len(self.reerased)  # how many, never who: this lands in logs
        return out


def _checkpoint_and_close(path: Path) -> None:
    """Fold the WAL into the old store file, so no stale -wal can meet the new one."""
    if not path.exists():
        return
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


class Restorer:
    """Restores one region of a deployment (the deployment must not be open on it)."""

    def __init__(self, config: DeploymentConfig, region: str) -> None:
        self.config = config
        self.region = config.region(region).name

    def run(self, backup_id: str = "latest", source: str | None = None) -> RestoreReport:
        t0 = time.perf_counter()
        backup = find_backup(self.config, self.region, backup_id, source)
        live = store_file(self.config, self.region)
        if store_in_use(live):
            raise StoreInUse(
                f"the store of region {self.region!r} ({live}) is open in another process: "
                "stop the server (fyp serve) before restoring",
                region=self.region,
            )
        region_dir = self.config.region_dir(self.region)
        remove_stale(region_dir)
        name = f"{STAGING}{backup.backup_id}-{secrets.token_hex(3)}"
        with Staging(region_dir / name) as staging:
            unpacked = staging.path / UNPACKED
            unpack_backup(self.config, self.region, backup, unpacked)  # nothing touched
            t_verified = time.perf_counter()
            history = audit_history(live)  # before the swap: the log must survive the restore
            self._swap(unpacked, live, region_dir)
        t_swapped = time.perf_counter()
        reerased, carried = self._reapply(backup.backup_id, history)
        t_done = time.perf_counter()
        m = backup.manifest
        return RestoreReport(
            region=self.region,
            backup_id=backup.backup_id,
            backup_created_at=str(m["created_at"]),
            backup_path=str(backup.path),
            verified_parts=len(m["parts"]),
            restored_bytes=int(m["plaintext_bytes"]),
            store=dict(m["store"]),
            reerased=reerased,
            carried_audit_entries=carried,
            seconds={
                "verify_unpack": round(t_verified - t0, 3),
                "swap": round(t_swapped - t_verified, 3),
                "reapply_erasures": round(t_done - t_swapped, 3),
                "total": round(t_done - t0, 3),
            },
        )

    def _swap(self, staging: Path, live: Path, region_dir: Path) -> None:
        """Replace the live store and data files with the unpacked ones.

        The restored store goes in by one rename once the old one's WAL is folded in and
        its side files are gone; the data files are replaced as a set (everything the
        backup covers that is not in it is removed: a backup is the whole region)."""
        if store_in_use(live):  # checked again right before the swap
            raise StoreInUse(f"the store of region {self.region!r} was opened meanwhile")
        _checkpoint_and_close(live)
        for side in store_companions(live)[1:]:
            side.unlink(missing_ok=True)
        live.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / STORE_PART, live)
        restored_root = staging / FILES_PREFIX.rstrip("/")
        old = set(region_data_files(self.config, self.region))
        new: set[Path] = set()
        if restored_root.is_dir():
            new = {p.relative_to(restored_root) for p in restored_root.rglob("*") if p.is_file()}
        for rel in sorted(new):
            if rel.parts[0] in NOT_BACKED_UP:
                raise StorageError(f"backup holds {rel}, which backups never hold")
            dest = region_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(restored_root / rel, dest)
        for rel in sorted(old - new):
            (region_dir / rel).unlink(missing_ok=True)
        _prune_empty_dirs(region_dir)

    def _reapply(
        self, backup_id: str, history: list[tuple[Any, ...]] | None
    ) -> tuple[list[str], int | None]:
        from fyp.access.keys import reapply_revocations
        from fyp.audit.log import AuditLog
        from fyp.moderation.service import reapply_moderation
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.erasure import reapply_erasures

        with Deployment(self.config) as d:
            log = AuditLog(d.store(self.region))
            records = None if history is None else carry_audit_history(log, history)
            carried = None if records is None else len(records)
            # decisions made after the backup: removals stand again, the rest is judged
            # again (before the erasures, which may delete some of those videos)
            remoderated = reapply_moderation(d, self.region, records or [], backup_id)
            reerased = reapply_erasures(d, self.region)
            revoked = reapply_revocations(d.store(self.region), self.config.region_dir(self.region))
            log.append(
                "fyp restore",
                "restore",
                backup_id,
                {
                    "reerased": len(reerased),
                    "rerevoked_keys": revoked,
                    "remoderated_videos": remoderated,
                    "carried_audit_entries": "unreadable" if carried is None else carried,
                },
            )
        return reerased, carried


_HISTORY_COLS = "seq, ts_ms, actor, action, subject, details, hash"


def audit_history(path: Path) -> list[tuple[Any, ...]] | None:
    """Every entry of the audit log in the store file about to be replaced, parsed, or
    None if it cannot be read (a damaged store is a reason to restore). Read and parsed
    before the swap, so nothing after it can fail on a damaged entry."""
    if not path.exists():
        return []
    try:
        conn = read_only(path)
        try:
            rows = conn.execute(f"SELECT {_HISTORY_COLS} FROM audit_log ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [
            # (an empty actor or action, which the log refuses, cannot stop a restore)
            (int(seq), int(ts), str(a) or "?", str(act) or "?", str(sub), json.loads(det), str(h))
            for seq, ts, a, act, sub, det, h in rows
        ]
    except (sqlite3.DatabaseError, ValueError, TypeError):
        return None


def carry_audit_history(log: AuditLog, history: list[tuple[Any, ...]]) -> list[Record]:
    """Append to the restored log, in order, every entry of the replaced one that the
    backup does not hold (same seq and hash): what happened after the backup was taken
    (an operator's read, a decision, an erasure) stays on record, with its original
    time, actor and subject and, in ``details.carried_from``, where it was. The chain
    goes on from the backup's head, so ``fyp audit verify`` checks the result whole."""
    restored = {int(seq): str(h) for seq, h in log.store.query("SELECT seq, hash FROM audit_log")}
    records: list[Record] = [
        (
            actor,
            action,
            subject,
            {
                **(details if isinstance(details, dict) else {"details": details}),
                "carried_from": {"seq": seq, "hash": h},
            },
            ts,
        )
        for seq, ts, actor, action, subject, details, h in history
        if restored.get(seq) != h
    ]
    log.append_many(records)
    return records


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _, _ in os.walk(root, topdown=False):
        here = Path(dirpath)
        if here != root and not here.name.startswith(".") and not any(here.iterdir()):
            here.rmdir()
