"""The server's log: timestamped lines, and a failure repeated per request is one line."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fyp.serving.logs import FORMAT, RepeatFilter, configure
from fyp.storage import served_log
from fyp.storage.served_log import ATTEMPTS, ServedBuffer, ServedRecord


def record(msg: str, exc: type[BaseException] | None = None) -> logging.LogRecord:
    info = (exc, exc(), None) if exc else None
    return logging.LogRecord("fyp.serving", logging.ERROR, __file__, 1, msg, (), info)


def test_a_repeated_record_is_held_back_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("fyp.serving.logs.time.monotonic", lambda: clock[0])
    f = RepeatFilter(window_s=10)
    assert f.filter(record("disk full: %s", OSError))
    assert not any(f.filter(record("disk full: %s", OSError)) for _ in range(999))
    assert f.filter(record("disk full: %s", ValueError))  # another exception: its own run
    assert f.filter(record("another message"))
    clock[0] += 10.5
    again = record("disk full: %s", OSError)
    assert f.filter(again) and "[999 like it in the last 10 s not shown]" in again.msg


def test_the_access_log_is_never_held_back() -> None:
    """Every access record shares one template: grouped by it, ``--access-log`` wrote
    one request per 10 s (an audit review saw ~15 requests and no line)."""
    f = RepeatFilter(window_s=10)
    line = '%s - "%s %s HTTP/%s" %d'
    records = [
        logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, line, args, None)
        for args in [("127.0.0.1:5", "GET", "/healthz", "1.1", 200)] * 50
    ]
    assert all(f.filter(r) for r in records)


def test_configure_formats_fyp_records_and_refuses_unknown_levels() -> None:
    handler = configure("warning")
    try:
        assert logging.getLogger("fyp").level == logging.WARNING
        assert handler.formatter is not None and handler.formatter._fmt == FORMAT
        assert any(isinstance(f, RepeatFilter) for f in handler.filters)
        with pytest.raises(ValueError, match="log level"):
            configure("loud")
    finally:
        for name in ("fyp", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_serve_refuses_an_unknown_log_level(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "serve", str(tmp_path), "--log-level", "loud"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "debug, info, warning, error" in done.stderr


def test_a_failed_served_log_commit_reports_its_own_cause(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite ends the transaction itself on a full disk; the ROLLBACK that followed
    raised 'cannot rollback - no transaction is active' and hid the cause."""
    conn = sqlite3.connect(":memory:", isolation_level=None)

    def full(c: sqlite3.Connection, pending: object) -> dict[str, int]:
        c.execute("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(served_log, "write_records", full)
    buffer = ServedBuffer()
    buffer.add("u1", ServedRecord(("v1",), 1))
    with caplog.at_level(logging.ERROR, logger="fyp"):
        for _ in range(ATTEMPTS):
            assert buffer.commit(conn) == {}
    assert "database or disk is full" in caplog.text and "cannot rollback" not in caplog.text


def test_a_full_disk_is_a_503_storage_error_not_a_500() -> None:
    from fyp.serving.errors import failure

    status, body, _ = failure(sqlite3.OperationalError("database or disk is full"))
    assert status == 503 and body["error"]["code"] == "storage_error"
    assert "retry later" in body["error"]["message"]
    for locked in ("database is locked", "database table is locked"):  # past the busy timeout
        status, body, _ = failure(sqlite3.OperationalError(locked))
        assert status == 503 and body["error"]["code"] == "storage_error", locked
    status, body, _ = failure(sqlite3.OperationalError("no such column: x"))  # a bug: 500
    assert status == 500 and body["error"]["code"] == "internal_error"


def test_rows_deferred_to_the_served_logs_group_commit_with_it_or_alone() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    buffer = ServedBuffer(max_age_s=3600.0, max_records=3)
    buffer.defer("INSERT OR IGNORE INTO t (k) VALUES (?)", ("a",))
    buffer.drop("someone")  # an erasure of another user keeps the deferred row due
    assert not buffer.due() and buffer.due(age_s=0.0)
    buffer.defer("INSERT OR IGNORE INTO t (k) VALUES (?)", ("b",))
    buffer.defer("INSERT OR IGNORE INTO t (k) VALUES (?)", ("a",))
    assert buffer.due()  # deferred rows count towards a full group
    assert buffer.commit(conn) == {}  # no page in the group: the rows alone
    assert [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")] == ["a", "b"]
    assert buffer.extras == [] and not buffer.due(age_s=0.0)
