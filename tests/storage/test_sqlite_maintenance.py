"""The serving-time WAL checkpointer moves checkpoints off the request path."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
import test_sqlite as sqlite_tests
from hypothesis import given, settings
from hypothesis import strategies as st

import fyp.storage.sqlite_served_log as served_log_module
from fyp.catalog.models import User
from fyp.storage import EventRow, Store, open_store


def test_background_checkpointer_checkpoints_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(served_log_module, "CHECKPOINT_INTERVAL_S", 0.05)
    path = tmp_path / "us.sqlite"
    store = open_store(f"sqlite:///{path}", "us", create=True)
    store.insert_user(User(user_id="a", home_region="us", created_at_ms=1, updated_at_ms=1))
    store.start_background_maintenance()
    store.start_background_maintenance()  # idempotent
    for k in range(50):
        store.insert_events([EventRow(f"e{k}", "a", "v", "like", 1, None, None, 0, 0, 0)])
    deadline = time.monotonic() + 5
    probe = sqlite3.connect(path)
    while True:
        busy, log, done = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log == done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    probe.close()
    assert busy == 0 and log == done
    page = open_store(f"sqlite:///{path}", "us", migrate=False, create=True)
    assert page.count_events() == 50
    page.close()
    thread = store._checkpointer  # type: ignore[attr-defined]
    assert thread is not None and thread.is_alive()
    store.close()  # joins the checkpointer thread
    assert not thread.is_alive()


def test_a_burst_of_writes_is_checkpointed_before_the_interval_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At ~10,000 single-event writes a second, a second's WAL went past the safety cap,
    and the request whose commit crossed it ran the checkpoint itself."""
    monkeypatch.setattr(served_log_module, "CHECKPOINT_INTERVAL_S", 3600.0)
    monkeypatch.setattr(served_log_module, "CHECKPOINT_AFTER_WRITES", 40)
    checkpoints: list[float] = []
    real = served_log_module.SQLiteServedLog._checkpoint
    monkeypatch.setattr(
        served_log_module.SQLiteServedLog,
        "_checkpoint",
        lambda self, conn: checkpoints.append(time.monotonic()) or real(self, conn),
    )
    store = open_store(f"sqlite:///{tmp_path / 'us.sqlite'}", "us", create=True)
    store.insert_user(User(user_id="a", home_region="us", created_at_ms=1, updated_at_ms=1))
    store.start_background_maintenance()
    for k in range(15):  # 30 writes: not yet
        store.insert_events([EventRow(f"e{k}", "a", "v", "like", 1, None, None, 0, 0, 0)])
    time.sleep(3 * served_log_module.SERVED_SWEEP_S)
    assert checkpoints == []
    for k in range(15, 30):
        store.insert_events([EventRow(f"e{k}", "a", "v", "like", 1, None, None, 0, 0, 0)])
    deadline = time.monotonic() + 5
    while not checkpoints and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close()
    assert len(checkpoints) == 1


def test_a_serving_store_forgets_pages_older_than_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(served_log_module, "SERVED_FORGET_S", 0.05)
    monkeypatch.setattr(served_log_module, "SERVED_FORGET_CHUNK", 3)  # several transactions
    path = tmp_path / "us.sqlite"
    store = open_store(f"sqlite:///{path}", "us", create=True)
    for user in ("a", "b"):
        store.insert_user(User(user_id=user, home_region="us", created_at_ms=1, updated_at_ms=1))
    now = time.time_ns() // 1_000_000
    for k in range(4):
        store.record_served("a", [f"old{k}"], now - 3_600_000 - k)
    store.record_served("b", ["old"], now - 3_600_000)
    store.record_served("b", ["new"], now)
    counters = (store.user_version("a"), store.user_version("b"))
    store.start_background_maintenance(served_window_ms=60_000)
    deadline = time.monotonic() + 5
    while store.served_since("a", 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.served_since("a", 0) == [] and store.served_since("b", 0) == ["new"]
    assert (store.user_version("a"), store.user_version("b")) == counters
    store.close()


class TestSQLiteStoreWhileServing(sqlite_tests.TestSQLiteStore):
    """The whole store contract again with the serving-time maintenance on: the served
    log is then written behind by a thread, and must read the same."""

    def open_database(self, name: str, region: str = "us", *, migrate: bool = True) -> Store:
        store = super().open_database(name, region, migrate=migrate)
        store.start_background_maintenance()
        return store


def serving_store(path: Path) -> Store:
    store = open_store(f"sqlite:///{path}", "us", create=True)
    for user in ("a", "b"):
        store.insert_user(User(user_id=user, home_region="us", created_at_ms=1, updated_at_ms=1))
    store.start_background_maintenance()
    return store


def committed(path: Path, user: str) -> tuple[int, list[str]]:
    """What another process sees: the counter and the served rows, committed."""
    other = open_store(f"sqlite:///{path}", "us", migrate=False, create=True)
    try:
        version = other.user_version(user)
        assert version is not None
        return version[2], sorted(other.served_since(user, 0))
    finally:
        other.close()


def test_the_served_log_is_committed_behind_and_read_at_once(tmp_path: Path) -> None:
    path = tmp_path / "us.sqlite"
    store = serving_store(path)
    assert store.record_served("a", ["v1", "v2"], 1_000) == 1
    assert store.record_served("a", ["v3"], 2_000) == 2
    # this process sees its records at once, whether committed yet or not
    assert store.user_version("a") == (1, -1, 2)
    assert sorted(store.served_since("a", 0)) == ["v1", "v2", "v3"]
    assert store.served_since("a", 1_500) == ["v3"]
    deadline = time.monotonic() + 5
    while committed(path, "a") != (2, ["v1", "v2", "v3"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert committed(path, "a") == (2, ["v1", "v2", "v3"])  # others see them shortly after
    assert store.user_version("a") == (1, -1, 2)  # and counted once, not twice
    store.close()


def test_closing_commits_what_is_queued_and_a_gone_user_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "us.sqlite"
    store = serving_store(path)
    store._served.max_age_s = 60  # type: ignore[attr-defined]  # no request commits it
    with store._lock:  # type: ignore[attr-defined]  # nor the sweep, until b is gone
        store.record_served("a", ["v1"], 10)
        store.record_served("b", ["v9"], 10)
        raw = sqlite3.connect(path)  # b is erased by another process before the commit
        raw.execute("DELETE FROM users WHERE user_id='b'")
        raw.commit()
        raw.close()
    store.close()  # commits the group: a's record lands, the gone user's is skipped
    assert committed(path, "a") == (1, ["v1"])
    check = sqlite3.connect(path)
    assert check.execute("SELECT COUNT(*) FROM served WHERE user_id='b'").fetchone()[0] == 0
    check.close()


RECORDS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.lists(st.sampled_from(["v1", "v2", "v3", "v4"]), max_size=3),
        st.integers(0, 100),  # time step
        st.one_of(st.none(), st.integers(0, 60)),  # then forget what is older than now - x
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(RECORDS, st.integers(0, 400))
def test_written_behind_reads_exactly_like_written_at_once(
    records: list[tuple[str, list[str], int, int | None]], since: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        behind, at_once = serving_store(Path(tmp) / "b.sqlite"), serving_store_off(Path(tmp))
        now = 0
        for user, videos, step, forget in records:
            now += step
            assert behind.record_served(user, videos, now) == at_once.record_served(
                user, videos, now
            )
            if forget is not None:
                assert behind.forget_served_before(now - forget) == (
                    at_once.forget_served_before(now - forget)
                )
            for u in ("a", "b"):
                assert behind.user_version(u) == at_once.user_version(u)
                assert sorted(behind.served_since(u, since)) == sorted(
                    at_once.served_since(u, since)
                )
        behind.close()
        at_once.close()


def serving_store_off(directory: Path) -> Store:
    store = open_store(f"sqlite:///{directory / 'a.sqlite'}", "us", create=True)
    for user in ("a", "b"):
        store.insert_user(User(user_id=user, home_region="us", created_at_ms=1, updated_at_ms=1))
    return store


def test_erasing_a_user_drops_their_records_not_committed_yet(tmp_path: Path) -> None:
    path = tmp_path / "us.sqlite"
    store = serving_store(path)
    store._served.max_age_s = 60  # type: ignore[attr-defined]  # nothing commits on its own
    store.record_served("a", ["v1"], 10)
    store.record_served("b", ["v2"], 10)
    store.delete_user("a")
    store.insert_user(User(user_id="a", home_region="us", created_at_ms=2, updated_at_ms=2))
    assert store.served_since("a", 0) == []  # the new "a" was shown nothing
    store.close()
    assert committed(path, "a") == (0, [])
    assert committed(path, "b") == (1, ["v2"])


WRITES = st.lists(
    st.tuples(
        st.sampled_from(["serve", "event", "profile", "commit"]),
        st.sampled_from(["here", "other"]),  # this serving store, or another connection
        st.sampled_from(["a", "b"]),
    ),
    max_size=14,
)


@settings(max_examples=40, deadline=None)
@given(WRITES)
def test_user_version_stays_exact_whichever_connection_writes(
    writes: list[tuple[str, str, str]],
) -> None:
    """A serving store keeps what user_version read while only its served log writes;
    anything else, here or by another process, must show in the next call."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "us.sqlite"
        store = serving_store(path)
        store._served.max_age_s = 60  # type: ignore[attr-defined]  # commits only when told
        other = open_store(f"sqlite:///{path}", "us", migrate=False, create=True)
        try:
            for k, (kind, where, user) in enumerate(writes):
                writer = store if where == "here" else other
                if kind == "serve":
                    writer.record_served(user, [f"v{k}"], 1_000 + k)
                elif kind == "event":
                    writer.insert_events(
                        [EventRow(f"e{k}", user, "v", "like", k, None, None, 0, 0, 0)]
                    )
                elif kind == "profile":
                    writer.update_user(
                        User(user_id=user, home_region="us", created_at_ms=1, updated_at_ms=10 + k)
                    )
                else:
                    with store._lock:  # type: ignore[attr-defined]
                        store._commit_served()  # type: ignore[attr-defined]
                for u in ("a", "b"):
                    truth = other.user_version(u)  # committed: a connection of its own
                    assert truth is not None
                    queued = len(store._served.queued(u))  # type: ignore[attr-defined]
                    assert store.user_version(u) == (truth[0], truth[1], truth[2] + queued)
        finally:
            other.close()
            store.close()


def test_the_change_token_ignores_only_the_served_log(tmp_path: Path) -> None:
    path = tmp_path / "us.sqlite"
    store = serving_store(path)
    token = store.change_token()  # type: ignore[attr-defined]
    store.record_served("a", ["v1"], 1)
    with store._lock:  # type: ignore[attr-defined]
        store._commit_served()  # type: ignore[attr-defined]
    assert store.change_token() == token  # type: ignore[attr-defined]
    store.insert_events([EventRow("e1", "a", "v", "like", 1, None, None, 0, 0, 0)])
    assert store.change_token() != token  # type: ignore[attr-defined]
    token = store.change_token()  # type: ignore[attr-defined]
    raw = sqlite3.connect(path)  # another process
    raw.execute("UPDATE users SET updated_at_ms = 99 WHERE user_id = 'b'")
    raw.commit()
    raw.close()
    assert store.change_token() != token  # type: ignore[attr-defined]
    store.close()


def test_nothing_read_inside_a_rolled_back_transaction_is_kept(tmp_path: Path) -> None:
    store = serving_store(tmp_path / "us.sqlite")
    before = store.user_version("a")
    with pytest.raises(RuntimeError), store.transaction():  # type: ignore[attr-defined]
        store.insert_events([EventRow("e1", "a", "v", "like", 1, None, None, 0, 0, 0)])
        assert store.user_version("a") != before  # seen inside the transaction
        raise RuntimeError("rolled back")
    assert store.user_version("a") == before
    store.close()


def _wal_resets(path: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time it starts
    the WAL over (https://www.sqlite.org/fileformat.html, "WAL File Format")."""
    with open(f"{path}-wal", "rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_the_served_log_waits_while_the_wal_is_checkpointed(tmp_path: Path) -> None:
    """A due group stays buffered (still seen by this process) while any checkpoint
    runs, and is committed right after this store's checkpoint."""
    path = tmp_path / "us.sqlite"
    store = open_store(f"sqlite:///{path}", "us", create=True)
    store.insert_user(User(user_id="a", home_region="us", created_at_ms=1, updated_at_ms=1))
    store.start_background_maintenance()
    other = sqlite3.connect(path)
    checkpoints = served_log_module._Checkpoints
    try:
        # holding the lock, as a running checkpoint does: no other store's checkpoint
        # in this process (a leaked one of another test, say) can clear the flag
        with checkpoints.lock:
            checkpoints.running = True  # another store's checkpoint, say
            store.record_served("a", ["v1"], 1)
            time.sleep(3 * served_log_module.SERVED_SWEEP_S)  # due, and the sweep has passed
            assert store.record_served("a", ["v2"], 2) == 2
            assert sorted(store.served_since("a", 0)) == ["v1", "v2"]
            assert other.execute("SELECT COUNT(*) FROM served_pages").fetchone()[0] == 0
            checkpoints.running = False
        store._checkpoint(other)  # type: ignore[attr-defined]
        assert other.execute("SELECT COUNT(*) FROM served_pages").fetchone()[0] == 2
    finally:
        checkpoints.running = False
        other.close()
        store.close()


def test_the_wal_starts_over_under_steady_served_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With group commits every few ms, a checkpoint that let them run never found the
    whole WAL copied when a write began, so the WAL was never started over and grew with
    every page served."""
    monkeypatch.setattr(served_log_module, "CHECKPOINT_INTERVAL_S", 0.05)
    path = tmp_path / "us.sqlite"
    store = open_store(f"sqlite:///{path}", "us", create=True)
    users = [f"u{k}" for k in range(200)]
    for u in users:
        store.insert_user(User(user_id=u, home_region="us", created_at_ms=1, updated_at_ms=1))
    store.start_background_maintenance()
    first = _wal_resets(path)
    deadline, k = time.monotonic() + 1.0, 0
    while time.monotonic() < deadline:
        store.record_served(users[k % len(users)], [f"v{k}"], k)
        k += 1
    assert _wal_resets(path) >= first + 3  # ~20 checkpoints in the second
    store.close()
