"""Where a region's data is: its store (a SQLite file and its side files, or a database
server), the data files of its directory that a backup carries; taking a consistent
snapshot of its store as a SQLite file, and reading one without writing it.

Backups (:mod:`fyp.sovereignty.backup_writer`), restores, carve-outs, erasure checks
and the residency scan all need to know which files are a region's data and how to copy
or read its live store; this is where they find out, apart from any one of them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from fyp.access.keys import REVOCATIONS_FILE
from fyp.config import DeploymentConfig
from fyp.errors import ConfigError, StorageError
from fyp.sovereignty.ledger import LEDGER_FILE
from fyp.storage.postgres_dialect import redact

NOT_BACKED_UP = {"secrets", LEDGER_FILE, REVOCATIONS_FILE}
"""Entries of a region directory a backup leaves out (besides the live store files)."""


def server_url(config: DeploymentConfig, region: str) -> str | None:
    """The URL of a region's store when it is on a database server (None: a SQLite file)."""
    url = config.resolve_url(config.region(region).store)
    return None if url.startswith("sqlite:") else url


def store_backend(config: DeploymentConfig, region: str) -> str:
    """What keeps the region's store: ``sqlite``, or a server's URL scheme."""
    url = server_url(config, region)
    scheme = "sqlite" if url is None else url.split(":", 1)[0].lower()
    return "postgresql" if scheme == "postgres" else scheme


def store_file(config: DeploymentConfig, region: str) -> Path:
    """The SQLite file of a region's store (a ConfigError for a store on a server)."""
    url = config.resolve_url(config.region(region).store)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"region {region!r}: its store is not a SQLite file ({redact(url)})")
    path = url[len("sqlite:///") :].partition("?")[0]
    if not path or path == ":memory:":
        raise ConfigError(f"region {region!r}: an in-memory store cannot be backed up")
    return Path(path)


def store_companions(path: Path) -> list[Path]:
    """The live store file and SQLite's side files next to it."""
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]


def live_store_files(config: DeploymentConfig, region: str) -> set[Path]:
    """The files of the region's live store (none for a store on a server), resolved."""
    if server_url(config, region) is not None:
        return set()
    return {p.resolve() for p in store_companions(store_file(config, region))}


def open_server_store(config: DeploymentConfig, region: str, create: bool = False) -> Any:
    """The region's store on its database server, opened and migrated (a
    :class:`fyp.storage.postgres.PostgresStore`); ``create``: make it if missing."""
    from fyp.storage import open_store

    url = server_url(config, region)
    if url is None:
        raise ConfigError(f"region {region!r}: its store is a SQLite file, not on a server")
    return open_store(url, region, create=create)


def snapshot_region(config: DeploymentConfig, region: str, dest: Path) -> None:
    """A consistent snapshot of the region's live store as a SQLite store file ``dest``,
    whichever backend holds it (backups and carve-outs are made of these)."""
    if server_url(config, region) is None:
        snapshot_store(store_file(config, region), dest)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    store = open_server_store(config, region)
    try:
        store.export_sqlite(dest)
    finally:
        store.close()


def region_data_files(config: DeploymentConfig, region: str) -> list[Path]:
    """Files of the region's directory that are region data, relative to it.

    Leaves out the live store files (snapshotted instead), secrets, the erasure ledger
    and dot-entries (temporaries: half-written artifacts, staging directories)."""
    root = config.region_dir(region)
    live = live_store_files(config, region)
    out: list[Path] = []
    if not root.is_dir():
        return out
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and not (here == root and d in NOT_BACKED_UP)
        )
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or (here == root and name in NOT_BACKED_UP):
                continue
            if path.resolve() in live or path.is_symlink():
                continue
            out.append(path.relative_to(root))
    return out


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (a URI, so any character in the path is quoted)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def snapshot_store(src: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite store, taken in one read transaction.

    In WAL mode the read does not block the server's writers; the copy is what the
    store held at one instant (every transaction committed before it, none after)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_file():
        raise StorageError(f"store {src} does not exist")
    source = read_only(src)
    target = sqlite3.connect(dest)
    try:
        source.execute("PRAGMA busy_timeout=10000")
        source.backup(target)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot snapshot store {src}: {exc}") from exc
    finally:
        target.close()
        source.close()


def store_facts(path: Path) -> dict[str, Any]:
    """What a manifest says about a store snapshot (schema, last event, row counts)."""
    conn = read_only(path)
    try:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        return {
            "region": one("SELECT value FROM store_meta WHERE key='region'"),
            "schema_version": int(one("SELECT MAX(version) FROM schema_migrations") or 0),
            "max_event_seq": int(one("SELECT COALESCE(MAX(seq), 0) FROM events")),
            "users": int(one("SELECT COUNT(*) FROM users")),
            "events": int(one("SELECT COUNT(*) FROM events")),
        }
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read store snapshot {path}: {exc}") from exc
    finally:
        conn.close()
