"""A region's SQLite store locked by another process, for the tests of what a locked
store answers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fyp.regions.deployment import Deployment
from fyp.storage.sqlite import SQLiteStore


@contextmanager
def locked(deployment: Deployment, region: str) -> Iterator[None]:
    """Another connection holds ``region``'s write lock past the store's busy timeout
    (shortened to 50 ms, from 10 s): SQLite says 'database is locked'."""
    store = deployment.store(region)
    if not isinstance(store, SQLiteStore):  # PostgreSQL locks rows, not the database
        pytest.skip("holds SQLite's database write lock")
    store._conn.execute("PRAGMA busy_timeout=50")
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()
