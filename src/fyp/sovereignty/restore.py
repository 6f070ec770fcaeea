"""Restore a region from one of its backups, then erase again whoever was erased since.

Order matters: the backup is verified and unpacked completely (every checksum, the
seal, the manifest's MAC) into a staging directory inside the region's directory
(:mod:`fyp.sovereignty.staging`) before the live region is touched, so a damaged or
tampered backup changes nothing. The store about to be replaced is read before the
swap (:func:`fyp.sovereignty.salvage.assess`): its audit history, and for a damaged
store whatever can still be salvaged of its log and its moderation verdicts. Then the
live store and data files are swapped for the restored ones (each by an atomic rename,
each file fsynced first), and what happened since the backup is put back on top
(:mod:`fyp.sovereignty.restore_reapply`: audit entries, moderation decisions,
erasures, key revocations).

A damaged replaced store (the usual reason to restore) is never deleted: it is moved
aside untouched, with its WAL, into ``regions/<r>/.quarantine/``
(:mod:`fyp.sovereignty.quarantine`). What could not be read of it is said: the
report's ``warnings`` (``fyp restore`` exits 1 on any), the restore's audit entry
(``details.replaced_store``), and when no moderation decision since the backup can be
confirmed, the restored videos approved only by the automated checks go back to pending
(:mod:`fyp.moderation.restored`).

Erasures are never lost on the way: before the swap, a durable marker
(``regions/<r>/.pending-restore.json``, :mod:`fyp.sovereignty.restore_marker`: the
backup, the replaced store's audit history and what was salvaged of it, the files to put
in place) records that the region holds, or is about to hold, restored data with erased
users in it. Until the re-application has succeeded and removed the marker, every open
of the deployment (:class:`fyp.regions.deployment.Deployment`: ``fyp serve`` and every
CLI command that reads the stores) first finishes it — the swap too, if it was cut
short — and refuses to open, naming the region, while it fails; ``fyp backup`` and
``fyp region export`` refuse the region.

The store must not be in use: a server holding it open would keep writing to the
replaced file. SQLite holds a shared lock on its ``-shm`` file for as long as a
connection is open in WAL mode; :func:`store_in_use` probes that lock and a restore
refuses while another process holds it. (Stop ``fyp serve`` first.) A region whose store
is on a database server is restored the same way but for the store itself: its rows are
replaced in one transaction (:mod:`fyp.sovereignty.restore_server`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fyp.audit.log import now_ms
from fyp.config import DeploymentConfig
from fyp.durable import fsync_path
from fyp.errors import Conflict, FypError, StorageError, StoreInUse
from fyp.regions.deployment import Deployment
from fyp.sovereignty import restore_server
from fyp.sovereignty.backup import FILES_PREFIX, STORE_PART, find_backup, unpack_backup
from fyp.sovereignty.quarantine import move_aside, new_quarantine
from fyp.sovereignty.region_data import (
    NOT_BACKED_UP,
    open_server_store,
    region_data_files,
    server_url,
    store_companions,
    store_file,
)
from fyp.sovereignty.restore_marker import (
    Pending,
    read_pending,
    remove_pending,
    write_pending,
)
from fyp.sovereignty.restore_preview import (
    RestorePreview,
    count_dropped,
    removed_again,
    to_carry_count,
)
from fyp.sovereignty.restore_reapply import reapply, restore_warnings
from fyp.sovereignty.salvage import Assessment, assess, reassess
from fyp.sovereignty.staging import PENDING_RESTORE, Staging, remove_stale
from fyp.storage.postgres_dialect import redact

log = logging.getLogger("fyp.restore")

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
    restore_id: str = ""
    reerased: list[str] = field(default_factory=list)
    # audit entries written after the backup, carried into the restored log; None when
    # the replaced store's log could not be read (the restore entry says so)
    carried_audit_entries: int | None = 0
    remoderated_videos: int = 0
    held_for_recheck: int = 0  # pending again: nothing confirms their verdict
    resynced_blocks: int = 0  # blocks' two sides made to agree (fyp.catalog.blocks_check)
    # a damaged replaced store: what was wrong, where it is now, what could be read
    replaced_store: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what since the backup is lost
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reerased"] = len(self.reerased)  # how many, never who: this lands in logs
        return out


def _checkpoint_and_close(path: Path) -> str | None:
    """Fold the WAL into the old store file, so no stale -wal can meet the new one.
    Returns why not, for a store too damaged to open (it is moved aside instead)."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "its WAL could not be folded in (busy)" if busy else None


@contextmanager
def _claimed(config: DeploymentConfig, region: str) -> Iterator[Any]:
    """The claimed store of a region on a database server (None for a SQLite file)."""
    if server_url(config, region) is None:
        yield None
        return
    server = restore_server.claim(config, region)
    try:
        yield server
    finally:
        server.close()


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


def _refuse_in_use(config: DeploymentConfig, region: str) -> None:
    """Refused while another process has a SQLite store open (a store on a server is
    claimed instead, :func:`fyp.sovereignty.restore_server.claim`)."""
    if server_url(config, region) is not None:
        return
    live = store_file(config, region)
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
        _refuse_in_use(self.config, self.region)
        region_dir = self.config.region_dir(self.region)
        with _restore_lock(region_dir):
            remove_stale(region_dir)
            earlier = read_pending(region_dir)
            name = f"{STAGING}{backup.backup_id}-{secrets.token_hex(3)}"
            with Staging(region_dir / name) as staging:
                unpacked = staging.path / UNPACKED
                unpack_backup(self.config, self.region, backup, unpacked)  # nothing touched
                t_verified = time.perf_counter()
                with _claimed(self.config, self.region) as server:  # held till swapped
                    found = self._replaced(unpacked / STORE_PART, earlier, server, name)
                    started = now_ms()
                    pending = Pending(
                        backup.backup_id,
                        started,
                        name,
                        _restored_files(unpacked),
                        found.history,
                        restore_id=secrets.token_hex(8),
                        quarantine=earlier.quarantine if earlier else new_quarantine(started),
                        salvage=found.to_dict(),
                    )
                    _refuse_in_use(self.config, self.region)  # again right before the swap
                    write_pending(region_dir, pending)
                    try:
                        _swap(self.config, self.region, pending, staging, server)
                    except Exception as exc:
                        if server is not None and restore_server.loaded(server, pending) is False:
                            _nothing_changed(region_dir, earlier, staging)
                            raise _refused(self.region, pending, exc) from exc
                        state = _swap_cut_short(self.config, self.region, pending, server)
                        raise _unfinished(self.region, state, pending, exc) from exc
                if earlier is not None:
                    shutil.rmtree(region_dir / earlier.staging, ignore_errors=True)
            t_swapped = time.perf_counter()
            try:
                with Deployment(self.config, finish_restores=False) as d:
                    done = reapply(d, self.region, pending)
            except Exception as exc:
                raise _unfinished(self.region, _in_place(pending), pending, exc) from exc
        t_done = time.perf_counter()
        m = backup.manifest
        notes = []
        if done.replaced is not None:
            notes.append(
                f"the replaced store was damaged ({done.replaced['damage']}): moved aside to "
                f"{done.replaced['quarantined']}, not deleted; remove it with `fyp quarantine "
                "remove` (recorded in the audit log) once nothing more is to be salvaged from "
                "it (until then `fyp erasure verify` and "
                "`fyp residency check` report it: it holds the region's users as they were)"
            )
        return RestoreReport(
            region=self.region,
            backup_id=backup.backup_id,
            backup_created_at=str(m["created_at"]),
            backup_path=str(backup.path),
            verified_parts=len(m["parts"]),
            restored_bytes=int(m["plaintext_bytes"]),
            store=dict(m["store"]),
            restore_id=pending.restore_id,
            reerased=done.reerased,
            carried_audit_entries=done.carried,
            remoderated_videos=done.remoderated,
            held_for_recheck=done.held,
            resynced_blocks=done.resynced_blocks,
            replaced_store=done.replaced,
            notes=notes,
            warnings=restore_warnings(self.config, self.region, str(m["created_at"]), done),
            seconds={
                "verify_unpack": round(t_verified - t0, 3),
                "swap": round(t_swapped - t_verified, 3),
                "reapply_erasures": round(t_done - t_swapped, 3),
                "total": round(t_done - t0, 3),
            },
        )

    def preview(self, backup_id: str = "latest", source: str | None = None) -> RestorePreview:
        """What :meth:`run` would do with the backup, found without changing anything:
        the backup is verified and unpacked into a staging directory (removed after) and
        the store it would replace is read, not claimed (the server may keep running)."""
        backup = find_backup(self.config, self.region, backup_id, source)
        region_dir = self.config.region_dir(self.region)
        with _restore_lock(region_dir):
            remove_stale(region_dir)
            if (region_dir / PENDING_RESTORE).exists():
                raise Conflict(
                    f"region {self.region!r} has an unfinished restore: run `fyp restore` "
                    "again (or open the deployment) to finish it first"
                )
            name = f"{STAGING}{backup.backup_id}-{secrets.token_hex(3)}"
            with Staging(region_dir / name) as staging:
                unpacked = staging.path / UNPACKED
                unpack_backup(self.config, self.region, backup, unpacked)
                restored = unpacked / STORE_PART
                server = None
                if server_url(self.config, self.region) is not None:
                    server = open_server_store(self.config, self.region)
                try:
                    found = self._replaced(restored, None, server, name)
                finally:
                    if server is not None:
                        server.close()
                to_carry = to_carry_count(found.history, restored)
                to_remove = removed_again(self.config, restored)
        m = backup.manifest
        return RestorePreview(
            region=self.region,
            backup_id=backup.backup_id,
            backup_created_at=str(m["created_at"]),
            verified_parts=len(m["parts"]),
            store=dict(m["store"]),
            replaced_store_damage=found.damage,
            dropped_since_backup=found.since_backup,
            audit_entries_to_carry=to_carry,
            users_to_remove_again=to_remove,
        )

    def _replaced(
        self, restored: Path, earlier: Pending | None, server: Any, staging: str
    ) -> Assessment:
        """The store last served, as the restore must know it: read now, or as an
        unfinished restore's marker describes it (that store may be gone, or aside).
        ``server``: the claimed store of a region on a database server."""
        region_dir = self.config.region_dir(self.region)
        if earlier is None:
            if server is not None:
                copy = restore_server.replaced_copy(region_dir, staging)
                found = restore_server.assess_server(server, restored, copy)
            else:
                found = assess(store_file(self.config, self.region), restored)
            # what it holds that the backup lacks (an unfinished restore's marker has it)
            found.since_backup = count_dropped(self.config, self.region, restored, server)
            return found
        found = earlier.assessment
        if found.damage is None:
            return found
        # another backup than the unfinished restore's: its verdicts are compared anew
        if server is None:
            live = store_file(self.config, self.region)
            aside = region_dir / earlier.quarantine / live.name
            return reassess(found, aside if aside.exists() else live, restored)
        # what was read of a damaged server store: aside, or still in the unfinished
        # restore's staging directory (copied to this one's, whose swap puts it aside)
        damaged = region_dir / earlier.quarantine / restore_server.STORE_NAME
        staged = restore_server.replaced_copy(region_dir, earlier.staging)
        if not damaged.exists() and staged.exists():
            damaged = restore_server.replaced_copy(region_dir, staging)
            damaged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staged, damaged)
        return reassess(found, damaged, restored) if damaged.exists() else found


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


def swap_in(config: DeploymentConfig, region: str, pending: Pending, server: Any = None) -> None:
    """Replace the live store and data files with the unpacked ones.

    A healthy replaced store has its WAL folded in and its side files removed; a damaged
    one (the marker says so, or its WAL cannot be folded in) is moved aside as it is,
    side files included, into the marker's quarantine directory. Then the restored store
    goes in by one rename; the data files are replaced as a set (everything the backup
    covers that is not in it is removed: a backup is the whole region). Each file is on
    disk before it takes its name. What is in place has left the staging directory, so
    running it again finishes a swap that was cut short. A store on a database server is
    loaded in one transaction instead (``server``: the restore's claimed store)."""
    region_dir = config.region_dir(region)
    unpacked = region_dir / pending.staging / UNPACKED
    if server_url(config, region) is not None:
        if (unpacked / STORE_PART).exists():
            url = redact(config.resolve_url(config.region(region).store))

            def why(damage: str | None) -> dict[str, Any]:
                return _why(region, pending, url, damage)

            restore_server.load(config, region, pending, unpacked / STORE_PART, why, server)
    elif (unpacked / STORE_PART).exists():
        live = store_file(config, region)
        aside = region_dir / pending.quarantine
        damage = pending.assessment.damage
        if damage is None and not aside.exists():
            damage = _checkpoint_and_close(live)
        if damage is not None or aside.exists():  # (a run cut short began to move it)
            move_aside(store_companions(live), aside, _why(region, pending, str(live), damage))
        else:
            for side in store_companions(live)[1:]:
                side.unlink(missing_ok=True)
        live.parent.mkdir(parents=True, exist_ok=True)
        fsync_path(unpacked / STORE_PART)
        os.replace(unpacked / STORE_PART, live)
        fsync_path(live.parent)
    restored_root = unpacked / FILES_PREFIX.rstrip("/")
    new = {Path(rel) for rel in pending.files}
    for rel in sorted(new):
        if (restored_root / rel).exists():
            dest = region_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsync_path(restored_root / rel)
            os.replace(restored_root / rel, dest)
    for rel in sorted(set(region_data_files(config, region)) - new):
        (region_dir / rel).unlink(missing_ok=True)
    _prune_empty_dirs(region_dir)
    for directory in sorted({(region_dir / rel).parent for rel in new}):
        if directory.is_dir():
            fsync_path(directory)


def _why(region: str, pending: Pending, live: str, damage: str | None) -> dict[str, Any]:
    """What ``why.json`` of a quarantined store says (nothing about any user)."""
    return {
        "region": region,
        "store": live,
        "damage": damage or "moved aside by a restore that was cut short",
        "quarantined_at_ms": now_ms(),
        "restore_id": pending.restore_id,
        "replaced_by_backup": pending.backup_id,
    }


_NOT_REAPPLIED = (
    "erasures, key revocations and moderation decisions made since the backup are not "
    "re-applied yet"
)


def _in_place(pending: Pending) -> str:
    return f"was changed: backup {pending.backup_id} is in place, but {_NOT_REAPPLIED}"


def _swap_cut_short(
    config: DeploymentConfig, region: str, pending: Pending, server: Any = None
) -> str:
    """What a swap that stopped left, as it is for the region's kind of store: a SQLite
    file and data files are renamed in one by one; a store on a server is loaded in one
    transaction, whole or not at all, before the data files (``server``: the restore's
    claimed store; else one is opened to ask)."""
    backup = pending.backup_id
    if server_url(config, region) is None:
        return f"was changed: backup {backup} was swapped in only partly, and {_NOT_REAPPLIED}"
    loaded = restore_server.load_state(config, region, pending, server)
    if loaded is None:
        return (
            f"may have been changed: whether backup {backup} is loaded into its store cannot "
            "be told now (the load is one transaction: the store holds either all of the "
            f"backup's rows or none of them), and {_NOT_REAPPLIED}"
        )
    if loaded:
        return (
            f"was changed: backup {backup} is loaded into its store (whole, in one "
            f"transaction), but its data files are not all in place yet, and {_NOT_REAPPLIED}"
        )
    return (
        f"is not changed yet: backup {backup} is not loaded into its store (the load is one "
        "transaction and the one cut short rolled back whole: the store holds its rows from "
        "before the restore, and the region's files are as they were)"
    )


def _unfinished(region: str, state: str, pending: Pending, exc: Exception) -> StorageError:
    """``state``: what the region holds now (:func:`_swap_cut_short`, :func:`_in_place`)."""
    why = exc.message if isinstance(exc, FypError) else f"{type(exc).__name__}: {exc}"
    return StorageError(
        f"region {region!r} {state} ({why}); the region is marked restore-incomplete "
        f"({PENDING_RESTORE}): every fyp command that opens the deployment, fyp serve "
        "included, finishes the restore first and refuses to run until that succeeds; fix "
        "the cause, then run any of them or fyp restore again",
        region=region,
        backup_id=pending.backup_id,
    )


def _refused(region: str, pending: Pending, exc: Exception) -> StorageError:
    why = exc.message if isinstance(exc, FypError) else f"{type(exc).__name__}: {exc}"
    return StorageError(
        f"restore of region {region!r} from backup {pending.backup_id} failed before its "
        f"store was replaced, and changed nothing ({why})",
        region=region,
        backup_id=pending.backup_id,
    )


def _nothing_changed(region_dir: Path, earlier: Pending | None, staging: Staging) -> None:
    """A server store's load rolled back: the region is as it was, and so is its marker
    (an earlier restore's, if that one is still to be finished)."""
    if earlier is not None:
        write_pending(region_dir, earlier)
    else:
        remove_pending(region_dir)
    staging.keep = False


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
                _refuse_in_use(config, region)
                with Staging(region_dir / pending.staging, create=False) as staging:
                    _swap(config, region, pending, staging)
            except Exception as exc:
                state = _swap_cut_short(config, region, pending)
                raise _unfinished(region, state, pending, exc) from exc


def finish_pending_restores(deployment: Deployment) -> None:
    """Re-apply what happened since the backup in every region whose restore stopped
    before doing so (called on every open); while it fails, the open is refused. What
    it could not put back is logged as a warning (and is in the restore's audit entry)."""
    for region, region_dir in _marked(deployment.config):
        with _restore_lock(region_dir):
            pending = read_pending(region_dir)
            if pending is None:
                continue  # another process finished it meanwhile
            try:
                done = reapply(deployment, region, pending, late=True)
            except Exception as exc:
                raise _unfinished(region, _in_place(pending), pending, exc) from exc
            for warning in restore_warnings(deployment.config, region, None, done):
                log.warning("restore of region %r finished at open: %s", region, warning)


def _swap(
    config: DeploymentConfig, region: str, pending: Pending, staging: Staging, server: Any = None
) -> None:
    staging.keep = True  # until the swap is complete: finishing it needs these files
    swap_in(config, region, pending, server)
    staging.keep = False


def _prune_empty_dirs(root: Path) -> None:
    for dirpath, _, _ in os.walk(root, topdown=False):
        here = Path(dirpath)
        if here != root and not here.name.startswith(".") and not any(here.iterdir()):
            here.rmdir()
