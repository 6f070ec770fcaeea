"""Restore a region from one of its backups, then erase again whoever was erased since.

Order matters: the backup is verified and unpacked completely (every checksum, the
seal, the manifest's MAC) into a staging directory inside the region's directory
(:mod:`fyp.sovereignty.staging`) before the live region is touched, so a damaged or
tampered backup changes nothing. Then the live store and data files are swapped for the
restored ones (each by an atomic rename), and what happened since the backup is put
back on top (:func:`_reapply`): the audit entries the replaced store holds beyond the
backup (read before the swap) are appended to the restored log with their original
time, actor and subject (:func:`carry_audit_history`); moderation decisions since the
backup are re-applied; :func:`fyp.sovereignty.erasure.reapply_erasures` erases every
restored user that a region's erasure ledger — never part of a backup, never rolled
back — says was erased; and keys revoked since are revoked again.

Erasures are never lost on the way: before the swap, a durable marker
(``regions/<r>/.pending-restore.json``: the backup, the replaced store's audit history
and the files to put in place) records that the region holds, or is about to hold,
restored data with erased users in it. Until the re-application has succeeded and
removed the marker, every open of the deployment (:class:`fyp.regions.deployment.Deployment`:
``fyp serve`` and every CLI command that reads the stores) first finishes it — the swap
too, if it was cut short — and refuses to open, naming the region, while it fails;
``fyp backup`` and ``fyp region export`` refuse the region. A damaged replaced store
(the usual reason to restore) is replaced as it is, with a note; its audit history is
then reported unreadable.

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
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fyp.audit.log import now_ms
from fyp.config import DeploymentConfig
from fyp.errors import FypError, StorageError, StoreInUse
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup import FILES_PREFIX, STORE_PART, find_backup, unpack_backup
from fyp.sovereignty.region_data import (
    NOT_BACKED_UP,
    read_only,
    region_data_files,
    store_companions,
    store_file,
)
from fyp.sovereignty.staging import PENDING_RESTORE, Staging, remove_stale

if TYPE_CHECKING:
    from fyp.audit.log import AuditLog, Record

_SHM_DMS_BYTE = 128  # SQLite's "dead man switch" lock in the -shm file of a WAL database
STAGING = ".restore-"  # + backup id + a nonce, in the region's directory
UNPACKED = "backup"  # the unpacked backup inside the staging directory


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
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reerased"] = len(self.reerased)  # how many, never who: this lands in logs
        return out


def _checkpoint_and_close(path: Path) -> str | None:
    """Fold the WAL into the old store file, so no stale -wal can meet the new one.
    Returns why not, for a store too damaged to open (it is replaced as it is)."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None


@dataclass
class Pending:
    """What a restore that has begun to swap still has to do (the marker's content)."""

    backup_id: str
    started_at_ms: int
    staging: str  # the staging directory's name; gone once the swap is complete
    files: list[str]  # the backup's data files, relative to the region's directory
    history: list[Sequence[Any]] | None  # the replaced store's audit log (None: unreadable)


def read_pending(region_dir: Path) -> Pending | None:
    path = region_dir / PENDING_RESTORE
    try:
        return Pending(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(f"cannot read the pending-restore marker {path}: {exc}") from exc


def _write_pending(region_dir: Path, pending: Pending) -> None:
    """Durably: the file, then its name in the directory."""
    path = region_dir / PENDING_RESTORE
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(vars(pending))  # (asdict would deep-copy the history first)
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(region_dir)


def _remove_pending(region_dir: Path) -> None:
    (region_dir / PENDING_RESTORE).unlink(missing_ok=True)
    _fsync_dir(region_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _restore_lock(region_dir: Path) -> Iterator[None]:
    """One restore (or finisher of one) per region at a time, across processes."""
    region_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(region_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _refuse_in_use(live: Path, region: str) -> None:
    if store_in_use(live):
        raise StoreInUse(
            f"the store of region {region!r} ({live}) is open in another process: "
            "stop the server (fyp serve) before restoring",
            region=region,
        )


class Restorer:
    """Restores one region of a deployment (the deployment must not be open on it)."""

    def __init__(self, config: DeploymentConfig, region: str) -> None:
        self.config = config
        self.region = config.region(region).name

    def run(self, backup_id: str = "latest", source: str | None = None) -> RestoreReport:
        t0 = time.perf_counter()
        backup = find_backup(self.config, self.region, backup_id, source)
        live = store_file(self.config, self.region)
        _refuse_in_use(live, self.region)
        region_dir = self.config.region_dir(self.region)
        notes: list[str] = []
        with _restore_lock(region_dir):
            remove_stale(region_dir)
            earlier = read_pending(region_dir)
            name = f"{STAGING}{backup.backup_id}-{secrets.token_hex(3)}"
            with Staging(region_dir / name) as staging:
                unpacked = staging.path / UNPACKED
                unpack_backup(self.config, self.region, backup, unpacked)  # nothing touched
                t_verified = time.perf_counter()
                # the log of the store last served: an unfinished restore's marker has it
                history = audit_history(live) if earlier is None else earlier.history
                pending = Pending(
                    backup.backup_id, now_ms(), name, _restored_files(unpacked), history
                )
                _refuse_in_use(live, self.region)  # checked again right before the swap
                _write_pending(region_dir, pending)
                if earlier is not None:
                    shutil.rmtree(region_dir / earlier.staging, ignore_errors=True)
                try:
                    damaged = _swap(self.config, self.region, pending, staging)
                except Exception as exc:
                    raise _unfinished(
                        self.region, pending, "was swapped in only partly", exc
                    ) from exc
            if damaged is not None:
                notes.append(f"the replaced store was damaged ({damaged}): replaced as it was")
            t_swapped = time.perf_counter()
            try:
                with Deployment(self.config, finish_restores=False) as d:
                    reerased, carried = _reapply(d, self.region, pending)
            except Exception as exc:
                raise _unfinished(self.region, pending, "is in place", exc) from exc
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
            notes=notes,
            seconds={
                "verify_unpack": round(t_verified - t0, 3),
                "swap": round(t_swapped - t_verified, 3),
                "reapply_erasures": round(t_done - t_swapped, 3),
                "total": round(t_done - t0, 3),
            },
        )


def _restored_files(unpacked: Path) -> list[str]:
    """The data files an unpacked backup holds (refused if any may never be in one)."""
    root = unpacked / FILES_PREFIX.rstrip("/")
    rels = (
        sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    )
    for rel in rels:
        if rel.parts[0] in NOT_BACKED_UP:
            raise StorageError(f"backup holds {rel}, which backups never hold")
    return [rel.as_posix() for rel in rels]


def swap_in(config: DeploymentConfig, region: str, pending: Pending) -> str | None:
    """Replace the live store and data files with the unpacked ones; returns why the
    replaced store could not be read, if it could not.

    The restored store goes in by one rename once the old one's WAL is folded in and
    its side files are gone; the data files are replaced as a set (everything the
    backup covers that is not in it is removed: a backup is the whole region). What is
    in place has left the staging directory, so running it again finishes a swap that
    was cut short."""
    region_dir = config.region_dir(region)
    unpacked = region_dir / pending.staging / UNPACKED
    live = store_file(config, region)
    damaged = None
    if (unpacked / STORE_PART).exists():
        damaged = _checkpoint_and_close(live)
        for side in store_companions(live)[1:]:
            side.unlink(missing_ok=True)
        live.parent.mkdir(parents=True, exist_ok=True)
        os.replace(unpacked / STORE_PART, live)
    restored_root = unpacked / FILES_PREFIX.rstrip("/")
    new = {Path(rel) for rel in pending.files}
    for rel in sorted(new):
        if (restored_root / rel).exists():
            dest = region_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(restored_root / rel, dest)
    for rel in sorted(set(region_data_files(config, region)) - new):
        (region_dir / rel).unlink(missing_ok=True)
    _prune_empty_dirs(region_dir)
    return damaged


def _unfinished(region: str, pending: Pending, state: str, exc: Exception) -> StorageError:
    why = exc.message if isinstance(exc, FypError) else f"{type(exc).__name__}: {exc}"
    return StorageError(
        f"region {region!r} was changed: backup {pending.backup_id} {state}, but erasures, "
        f"key revocations and moderation decisions made since the backup are not re-applied "
        f"yet ({why}); the region is marked restore-incomplete ({PENDING_RESTORE}): every "
        "fyp command that opens the deployment, fyp serve included, finishes the restore "
        "first and refuses to run until that succeeds; fix the cause, then run any of them "
        "or fyp restore again",
        region=region,
        backup_id=pending.backup_id,
    )


def _marked(config: DeploymentConfig) -> Iterator[tuple[str, Path]]:
    for region in config.region_names:
        region_dir = config.region_dir(region)
        if (region_dir / PENDING_RESTORE).exists():
            yield region, region_dir


def finish_pending_swaps(config: DeploymentConfig) -> None:
    """Complete the swaps that restores left cut short (before any store is opened)."""
    for region, region_dir in _marked(config):
        with _restore_lock(region_dir):
            pending = read_pending(region_dir)
            if pending is None or not (region_dir / pending.staging).is_dir():
                continue  # finished meanwhile, or the swap was complete
            try:
                _refuse_in_use(store_file(config, region), region)
                with Staging(region_dir / pending.staging, create=False) as staging:
                    _swap(config, region, pending, staging)
            except Exception as exc:
                raise _unfinished(region, pending, "was swapped in only partly", exc) from exc


def finish_pending_restores(deployment: Deployment) -> None:
    """Re-apply what happened since the backup in every region whose restore stopped
    before doing so (called on every open); while it fails, the open is refused."""
    for region, region_dir in _marked(deployment.config):
        with _restore_lock(region_dir):
            pending = read_pending(region_dir)
            if pending is None:
                continue  # another process finished it meanwhile
            try:
                _reapply(deployment, region, pending, late=True)
            except Exception as exc:
                raise _unfinished(region, pending, "is in place", exc) from exc


def _swap(config: DeploymentConfig, region: str, pending: Pending, staging: Staging) -> str | None:
    staging.keep = True  # until the swap is complete: finishing it needs these files
    damaged = swap_in(config, region, pending)
    staging.keep = False
    return damaged


def _reapply(
    deployment: Deployment, region: str, pending: Pending, late: bool = False
) -> tuple[list[str], int | None]:
    """Put back on the restored region what happened since the backup, then remove the
    marker. Each step may run again after a crash: audit entries already carried are
    not carried twice, and the rest finds nothing left to do."""
    from fyp.access.keys import reapply_revocations
    from fyp.audit.log import AuditLog
    from fyp.moderation.service import reapply_moderation
    from fyp.sovereignty.erasure import reapply_erasures

    log = AuditLog(deployment.store(region))
    history = pending.history
    records = None if history is None else carry_audit_history(log, history)
    carried = None if records is None else len(records)
    # decisions made after the backup: removals stand again, the rest is judged
    # again (before the erasures, which may delete some of those videos)
    remoderated = reapply_moderation(deployment, region, records or [], pending.backup_id)
    reerased = reapply_erasures(deployment, region)
    region_dir = deployment.config.region_dir(region)
    revoked = reapply_revocations(deployment.store(region), region_dir)
    details: dict[str, Any] = {
        "reerased": len(reerased),
        "rerevoked_keys": revoked,
        "remoderated_videos": remoderated,
        "carried_audit_entries": "unreadable" if carried is None else carried,
    }
    if late:  # the restore itself stopped before this point
        details["finished_at_open"] = True
    log.append("fyp restore", "restore", pending.backup_id, details)
    _remove_pending(region_dir)
    return reerased, carried


_HISTORY_COLS = "seq, ts_ms, actor, action, subject, details, hash"


def audit_history(path: Path) -> list[Sequence[Any]] | None:
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


def carry_audit_history(log: AuditLog, history: list[Sequence[Any]]) -> list[Record]:
    """Append to the restored log, in order, every entry of the replaced one that the
    backup does not hold (same seq and hash): what happened after the backup was taken
    (an operator's read, a decision, an erasure) stays on record, with its original
    time, actor and subject and, in ``details.carried_from``, where it was. The chain
    goes on from the backup's head, so ``fyp audit verify`` checks the result whole."""
    restored = {int(seq): str(h) for seq, h in log.store.query("SELECT seq, hash FROM audit_log")}
    already = {  # carried by a run of this restore that stopped before its end
        (int(seq), str(h))
        for seq, h in log.store.query(
            "SELECT json_extract(details, '$.carried_from.seq'), "
            "json_extract(details, '$.carried_from.hash') FROM audit_log "
            "WHERE instr(details, 'carried_from') > 0"
        )
        if seq is not None
    }
    since = [e for e in history if restored.get(int(e[0])) != e[6]]
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
        for seq, ts, actor, action, subject, details, h in since
    ]
    log.append_many([r for r, e in zip(records, since, strict=True) if (e[0], e[6]) not in already])
    return records


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _, _ in os.walk(root, topdown=False):
        here = Path(dirpath)
        if here != root and not here.name.startswith(".") and not any(here.iterdir()):
            here.rmdir()
