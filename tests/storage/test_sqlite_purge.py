"""An erasure's last step on SQLite: the WAL, which holds the deleted rows' bytes, is
emptied even while another connection is checkpointing (a serving store's background
checkpointer runs every second; SQLite answers busy at once instead of waiting)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import fyp.storage.sqlite as sqlite_module
from fyp.audit.log import SQLStore, sql_store
from fyp.catalog.models import User
from fyp.errors import StorageError
from fyp.storage import open_store

ERASED = "purge-me-7f3a9c"  # distinctive: found in the raw bytes only if left there
WAIT_S = 10.0  # generous: how long a loaded machine may take to reach a state


def erased_store(path: Path) -> SQLStore:
    """A store whose WAL holds ``ERASED``'s row (deleted later: :func:`delete_erased`)."""
    store = open_store(f"sqlite:///{path}", "us", create=True)
    store.insert_user(User(user_id=ERASED, home_region="us", created_at_ms=1, updated_at_ms=1))
    return sql_store(store)


def delete_erased(store: SQLStore) -> None:
    store.prepare_erasure()  # secure_delete: the row's bytes are zeroed in its pages
    with store.transaction():
        store.execute("DELETE FROM users WHERE user_id = ?", (ERASED,))


def checkpoint_lock_taken(path: Path) -> bool:
    """True while another connection runs a checkpoint (a PASSIVE one answers busy)."""
    probe = sqlite3.connect(path, isolation_level=None)
    try:
        return bool(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0])
    finally:
        probe.close()


@contextmanager
def checkpointing(store: SQLStore, path: Path, holds_s: float) -> Iterator[threading.Event]:
    """Another connection checkpointing the store for up to ``holds_s``: a RESTART
    checkpoint that waits (holding the checkpoint lock) for an older reader. Setting the
    yielded event ends the reader, so the checkpoint finishes."""
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM users").fetchone()  # a snapshot with the row
    delete_erased(store)  # after the reader's snapshot: a checkpoint must wait for it
    release = threading.Event()

    def checkpoint() -> None:  # again when it met the probe's: it gets the lock first
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={int(holds_s * 1000)}")
        while conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]:
            if release.is_set():
                break
            time.sleep(0.001)
        conn.close()

    def end_reader() -> None:
        release.wait(WAIT_S + holds_s)
        reader.execute("COMMIT")

    threads = [threading.Thread(target=checkpoint), threading.Thread(target=end_reader)]
    for t in threads:
        t.start()
    try:
        give_up = time.monotonic() + WAIT_S
        while not checkpoint_lock_taken(path):
            assert time.monotonic() < give_up, "the other checkpoint never started"
            time.sleep(0.01)
        yield release
    finally:
        release.set()
        for t in threads:
            t.join()
        reader.close()


def test_the_wal_is_emptied_once_another_checkpoint_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "us.sqlite"
    store = erased_store(path)
    wal = Path(f"{path}-wal")
    try:
        with checkpointing(store, path, holds_s=WAIT_S) as release:
            threading.Timer(0.3, release.set).start()  # the other checkpoint ends soon
            store.purge_deleted()
            assert wal.stat().st_size == 0  # before: busy at once, the WAL left as it was
        assert ERASED.encode() not in path.read_bytes()
    finally:
        store.close()


def test_a_wal_kept_busy_past_the_timeout_is_an_error_not_silence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "us.sqlite"
    store = erased_store(path)
    try:
        with checkpointing(store, path, holds_s=WAIT_S):
            with pytest.raises(StorageError, match="could not be emptied"):
                store.purge_deleted()
            assert ERASED.encode() in Path(f"{path}-wal").read_bytes()  # what it warns of
            assert store.purge_is_owed()  # type: ignore[attr-defined]
        store.purge_deleted()  # nothing holds it now
        assert Path(f"{path}-wal").stat().st_size == 0
        assert not store.purge_is_owed()  # type: ignore[attr-defined]
    finally:
        store.close()


def test_an_owed_truncation_is_done_by_the_next_purge_owed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fyp erasure process``'s step: a process that is not serving (no checkpointer)
    finishes what the erasure could not, once, and says so."""
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "us.sqlite"
    store = erased_store(path)
    try:
        with checkpointing(store, path, holds_s=WAIT_S), pytest.raises(StorageError):
            store.purge_deleted()
        assert store.purge_owed()
        assert ERASED.encode() not in Path(f"{path}-wal").read_bytes()
        assert ERASED.encode() not in path.read_bytes()
        assert not store.purge_owed()  # nothing owed any more
    finally:
        store.close()
    reopened = sql_store(open_store(f"sqlite:///{path}", "us"))
    try:
        assert not reopened.purge_owed()
    finally:
        reopened.close()


def test_a_serving_store_empties_an_owed_wal_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The serving checkpointer truncates instead of its PASSIVE checkpoint while a
    truncation is owed, so the erased bytes go within a second or so of the WAL's release."""
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "us.sqlite"
    store = erased_store(path)
    wal = Path(f"{path}-wal")
    try:
        with checkpointing(store, path, holds_s=WAIT_S), pytest.raises(StorageError):
            store.purge_deleted()
        assert ERASED.encode() in wal.read_bytes()
        store.start_background_maintenance()  # type: ignore[attr-defined]
        give_up = time.monotonic() + WAIT_S
        while store.purge_is_owed():  # type: ignore[attr-defined]
            assert time.monotonic() < give_up, "the checkpointer never truncated the WAL"
            time.sleep(0.05)
        assert ERASED.encode() not in wal.read_bytes()
        assert not store.purge_owed()
    finally:
        store.close()


def test_purging_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    store = erased_store(tmp_path / "us.sqlite")
    try:
        with store.transaction(), pytest.raises(StorageError, match="outside transactions"):
            store.purge_deleted()
    finally:
        store.close()
