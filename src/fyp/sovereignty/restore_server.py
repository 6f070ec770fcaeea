"""Restoring a region whose store is on a database server (PostgreSQL).

A backup's store is a SQLite store file whichever backend wrote it
(:func:`fyp.sovereignty.region_data.snapshot_region`), so verifying, unpacking, the
pending-restore marker, the data files and everything re-applied afterwards are the
SQLite restore's (:mod:`fyp.sovereignty.restore`). What differs is the store:

- *In use*: the restore takes the store's open lock exclusively
  (:meth:`fyp.storage.postgres_snapshot.PostgresSnapshots.claim_exclusive`), which every
  open store holds shared, so it refuses while a server (any other process) has the
  region's store open, and a store opened meanwhile waits until the load is done.
- *The swap* is one transaction (``PostgresSnapshots.import_sqlite``): every row is
  replaced by the backup's under the region's writer lock, and the restore's id recorded
  with them, so a restore that stops before it commits changed nothing, and one that
  stops after it is known to have loaded (:func:`load`, run again, does not load twice).
- *A damaged store*: the region is damaged when its audit log cannot be read whole
  (:func:`assess_server`); what can still be read of each table is copied into a SQLite
  file before the load, salvaged like a damaged SQLite store
  (:mod:`fyp.sovereignty.salvage`), and kept in ``regions/<r>/.quarantine/`` once the
  load has replaced the rows (:mod:`fyp.sovereignty.quarantine`), never deleted by fyp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fyp.audit.log import sql_store
from fyp.config import DeploymentConfig
from fyp.errors import StoreInUse
from fyp.sovereignty.quarantine import move_aside
from fyp.sovereignty.region_data import open_server_store, store_companions
from fyp.sovereignty.restore_marker import Pending
from fyp.sovereignty.salvage import HISTORY_COLS, Assessment, assess, parse_history
from fyp.storage.postgres_dialect import redact

REPLACED = "replaced"  # in the staging directory: what could be read of a damaged region
STORE_NAME = "store.sqlite"  # that copy's name, here and in the quarantine


def claim(config: DeploymentConfig, region: str) -> Any:
    """The region's server store, opened (created if missing: a restore makes a store)
    and held exclusively; StoreInUse while another process has it open."""
    store = open_server_store(config, region, create=True)
    try:
        if not store.claim_exclusive():
            raise StoreInUse(
                f"the store of region {region!r} ({redact(store.url)}) is open in another "
                "process: stop the server (fyp serve) before restoring",
                region=region,
            )
    except BaseException:
        store.close()
        raise
    return store


def replaced_copy(region_dir: Path, staging: str) -> Path:
    """Where the readable part of a damaged region is copied (in the staging directory)."""
    return region_dir / staging / REPLACED / STORE_NAME


def assess_server(store: Any, restored: Path, copy: Path) -> Assessment:
    """The region about to be replaced, as a restore must know it (see
    :func:`fyp.sovereignty.salvage.assess`): healthy when its audit log reads whole;
    otherwise damaged, and what can be read of it is copied to ``copy`` and salvaged."""
    try:
        return Assessment(
            history=parse_history(
                sql_store(store).query(f"SELECT {HISTORY_COLS} FROM audit_log ORDER BY seq")
            )
        )
    except Exception as exc:  # whatever stops the read is the damage
        damage = f"its audit log cannot be read ({type(exc).__name__}: {str(exc).strip()})"
    copy.parent.mkdir(parents=True, exist_ok=True)
    skipped = store.export_sqlite(copy, lenient=True)
    if skipped:
        damage += f"; tables that could not be read: {'; '.join(skipped)}"
    found = assess(copy, restored)
    return replace(found, damage=damage)


def load(
    config: DeploymentConfig,
    region: str,
    pending: Pending,
    snapshot: Path,
    why: Callable[[str | None], dict[str, Any]],
    store: Any = None,
) -> None:
    """Put the unpacked backup's store (``snapshot``) in place of the region's rows, once
    per restore; then the damaged region's copy, if any, goes into the quarantine
    directory (``why`` says why, for its ``why.json``). ``store``: the restore's claimed
    store (else one is claimed here, as when an open finishes a restore)."""
    from fyp.storage import open_store

    region_dir = config.region_dir(region)
    own = store is None
    store = claim(config, region) if own else store
    try:
        if store.restored_by() != pending.restore_id:
            open_store(f"sqlite:///{snapshot}", region).close()  # an older backup: migrated
            store.import_sqlite(snapshot, pending.restore_id)
    finally:
        if own:
            store.close()
    for path in store_companions(snapshot):  # loaded: it leaves the staging directory,
        path.unlink(missing_ok=True)  # as a SQLite restore's file does by its rename
    copy = replaced_copy(region_dir, pending.staging)
    if copy.exists():
        move_aside([copy], region_dir / pending.quarantine, why(pending.assessment.damage))


def loaded(store: Any, pending: Pending) -> bool | None:
    """Whether this restore's load committed (None: the server cannot tell now)."""
    try:
        return bool(store.restored_by() == pending.restore_id)
    except Exception:  # a StorageError, or the driver's own: cannot tell
        return None


def load_state(
    config: DeploymentConfig, region: str, pending: Pending, store: Any = None
) -> bool | None:
    """:func:`loaded`, asking ``store`` (a restore's claimed store) or, without one, the
    region's store opened for the question (None also when it cannot be opened)."""
    if store is not None:
        return loaded(store, pending)
    try:
        store = open_server_store(config, region)
    except Exception:  # a StorageError, or the driver's own: cannot tell
        return None
    try:
        return loaded(store, pending)
    finally:
        store.close()
