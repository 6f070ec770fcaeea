"""The serving-time WAL checkpointer moves checkpoints off the request path."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import fyp.storage.sqlite as sqlite_module
from fyp.catalog.models import User
from fyp.storage import EventRow, open_store


def test_background_checkpointer_checkpoints_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_INTERVAL_S", 0.05)
    path = tmp_path / "us.sqlite"
    store = open_store(f"sqlite:///{path}", "us")
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
    page = open_store(f"sqlite:///{path}", "us", migrate=False)
    assert page.count_events() == 50
    page.close()
    thread = store._checkpointer  # type: ignore[attr-defined]
    assert thread is not None and thread.is_alive()
    store.close()  # joins the checkpointer thread
    assert not thread.is_alive()
