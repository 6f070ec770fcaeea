"""A region's retention limit covers all its users' behaviour in the store, not only
events: experiment exposures, held-out label sets and served pages past the limit go in
the same expiry (chunked, counted per table in ``retention.expire``), ``fyp retention
check`` counts each table, a restore expires what its backup held, and users' reports
(``report`` events) are refused at ingestion like any event past the limit."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from region_helpers import cli
from retention_helpers import iso, now_ms

from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog, sql_store
from fyp.catalog.models import User, UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.config import DAY_MS
from fyp.events.ingest import Ingestor
from fyp.experiments.exposures import exposures, record_exposure
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.sovereignty.retention import expire_region
from fyp.sovereignty.retention_tables import EXPOSURES, LABELS, SERVED
from fyp.storage import open_store
from fyp.storage.base import Store

LIMIT_DAYS = 30
HOUR_MS = 3_600_000
OLD_MS = 60 * DAY_MS  # past the limit by far more than the 24 h retrain deadline
PENDING_MS = LIMIT_DAYS * DAY_MS + 2 * HOUR_MS  # past the limit, within the deadline
NEW_MS = DAY_MS
TABLES = ("events", EXPOSURES.table, LABELS.table, SERVED.table)


def counted(n: int) -> dict[str, int]:
    """An expiry's counts: ``n`` of each table, and no record of an unfollow (none made)."""
    return {**dict.fromkeys(TABLES, n), "follow_actions": 0}


def add_limit(root: Path, days: int = LIMIT_DAYS, region: str = "us") -> None:
    toml = root / "fyp.toml"
    text = f"\n[regions.{region}.policy.retention]\nevents_days = {days}\n"
    toml.write_text(toml.read_text("utf-8") + text, "utf-8")


def fill(store: Store, user: str, age_ms: int, now: int) -> None:
    """One event, one exposure, one label set and one served page of ``user``, each
    ``age_ms`` old."""
    at = now - age_ms
    record_exposure(store, "exp", "A", user, at)
    store.insert_label_sets("ds", "test", {user: ["v1", "v2"]}, stored_at_ms=at)
    store.record_served(user, ["v3", "v4"], at)
    store.flush_served()


def build(root: Path, ages: dict[str, int]) -> Path:
    """Users of us (``ages``: user -> how old their rows are) and the same in eu (no
    limit); a limit of 30 days set on us afterwards."""
    now = now_ms()
    with Deployment.init(root, ["us", "eu"]) as d:
        catalog = Catalog(d)
        for v in range(6):
            catalog.create_video(
                VideoIn(video_id=f"v{v}", duration_ms=20_000, regions=["us", "eu"])
            )
        events = []
        for user, age in ages.items():
            for region in ("us", "eu"):
                uid = f"{region}-{user}"
                catalog.create_user(UserIn(user_id=uid, home_region=region))
                fill(d.store(region), uid, age, now)
                events.append(
                    {"event_id": f"e-{uid}", "user_id": uid, "video_id": "v0", "type": "like"}
                    | {"ts": iso(now - age)}
                )
        assert Ingestor(d).ingest(events).counts["stored"] == len(events)
    add_limit(root)
    return root


def held(store: Store) -> dict[str, set[str]]:
    """The users each table holds a row of."""
    sql = sql_store(store)
    queries = {
        "events": "SELECT user_id FROM events",
        EXPOSURES.table: f"SELECT user_id FROM {EXPOSURES.table}",
        LABELS.table: "SELECT user_id FROM labels",
        SERVED.table: "SELECT user_id FROM served_pages",
    }
    return {t: {str(r[0]) for r in sql.query(q)} for t, q in queries.items()}


def test_every_table_past_the_limit_goes_in_one_counted_expiry(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fyp.sovereignty.retention.CHUNK", 2)  # several chunks per table
    monkeypatch.setattr("fyp.sovereignty.retention.ROWS_CHUNK", 2)
    monkeypatch.setattr("fyp.sovereignty.retention.PAUSE_S", 0.0)
    ages = {f"old{n}": OLD_MS + n * HOUR_MS for n in range(5)} | {"new0": NEW_MS, "new1": 0}
    root = build(tmp_path / "d", ages)
    with Deployment.open(root) as d:
        done = expire_region(d, "us")
        assert done.tables == counted(5) and done.events == 5
        assert done.summary() == (
            "deleted 5 events, 5 experiment exposure(s), 5 held-out label set(s), 5 served page(s)"
        )
        assert held(d.store("us")) == {t: {"us-new0", "us-new1"} for t in TABLES}
        everyone = {f"eu-{u}" for u in ages}
        assert held(d.store("eu")) == {t: everyone for t in TABLES}  # eu: no limit
        (entry,) = AuditLog(d.store("us")).entries(action="retention.expire")
        assert entry.details["tables"] == counted(5)
        # the fields an older reader of the entry knows are still there
        assert entry.details["events"] == 5 and entry.details["events_days"] == LIMIT_DAYS
        assert entry.details["before_ms"] == done.before_ms
        assert set(exposures(d.store("us"), "exp")) == {"us-new0", "us-new1"}
        again = expire_region(d, "us")
        assert again.tables == counted(0)
        assert len(list(AuditLog(d.store("us")).entries(action="retention.expire"))) == 1


def test_the_check_counts_each_table_overdue_then_pending(tmp_path: Path, backend: str) -> None:
    root = build(tmp_path / "d", {"old": OLD_MS, "soon": PENDING_MS, "new": NEW_MS})
    code, out = cli("retention", "check", str(root), "--json")
    assert code == 1, out
    us = {r["region"]: r for r in json.loads(out)["regions"]}["us"]
    assert us["tables"] == {t: {"overdue": 1, "pending": 1} for t in TABLES}
    assert us["overdue_events"] == 1
    for noun in ("event(s)", "experiment exposure(s)", "held-out label set(s)", "served page(s)"):
        assert any(p.startswith(f"1 {noun} older than the 30-day limit") for p in us["problems"])
        assert any(n.startswith(f"1 {noun} past the limit, due") for n in us["notes"])

    with Deployment.open(root) as d:  # only the one within the deadline left: a note
        user = sql_store(d.store("us"))
        for table in (EXPOSURES, LABELS, SERVED):
            user.execute(f"DELETE FROM {table.table} WHERE user_id = 'us-old'")
        d.store("us").expire_events_before(now_ms() - OLD_MS + HOUR_MS, 10)
    code, out = cli("retention", "check", str(root), "--json")
    assert code == 0, out
    us = {r["region"]: r for r in json.loads(out)["regions"]}["us"]
    assert us["problems"] == []
    assert us["tables"] == {t: {"overdue": 0, "pending": 1} for t in TABLES}
    code, out = cli("retention", "check", str(root))
    assert code == 0 and "1 held-out label set(s) past the limit, due for deletion" in out


def test_a_restore_expires_the_old_rows_its_backup_held(tmp_path: Path, backend: str) -> None:
    root = build(tmp_path / "d", {"old": OLD_MS, "new": NEW_MS})
    code, out = cli("backup", str(root), "--region", "us", "--json")
    assert code == 0, out
    backup_id = json.loads(out)["manifest"]["backup_id"]
    code, out = cli("retention", "apply", str(root))
    assert code == 0, out
    assert "us: deleted 1 events, 1 experiment exposure(s), 1 held-out label set(s)" in out
    code, out = cli("restore", str(root), "--region", "us", "--backup", backup_id, "--json")
    assert code in (0, 1), out  # 1: the restore's warning about what it dropped
    with Deployment.open(root) as d:
        assert held(d.store("us")) == {t: {"us-new"} for t in TABLES}
        restore = list(AuditLog(d.store("us")).entries(action="restore"))[-1]
        assert restore.details["expired_events"] == 1
        assert restore.details["expired"] == counted(1)


def test_training_expires_every_table_before_it_reads(tmp_path: Path) -> None:
    root = build(tmp_path / "d", {"old": OLD_MS, "new": NEW_MS})
    code, out = cli("train", str(root), "--region", "us")
    assert code == 0, out
    assert (
        "us: deleted 1 events, 1 experiment exposure(s), 1 held-out label set(s), "
        "1 served page(s) past the region's retention limit"
    ) in " ".join(out.split())
    with Deployment.open(root) as d:
        assert held(d.store("us")) == {t: {"us-new"} for t in TABLES}


def test_served_pages_go_at_a_limit_shorter_than_the_seen_window(tmp_path: Path) -> None:
    """The seen window (30 days by default) bounds the served log; a 7-day limit is
    shorter, and the limit wins."""
    root = build(tmp_path / "d", {"ten": 10 * DAY_MS, "new": NEW_MS})
    add_limit(root, 7, region="eu")
    with Deployment.open(root) as d:
        assert expire_region(d, "eu").tables == counted(1)
        assert held(d.store("eu")) == {t: {"eu-new"} for t in TABLES}


def test_a_report_already_past_the_limit_is_refused(tmp_path: Path) -> None:
    """A user's report of a video is a ``report`` event: its time is the client's, and
    one past the limit is refused like any event (422 naming ``ts``)."""
    root = build(tmp_path / "d", {"new": NEW_MS})
    with Deployment.open(root) as d:
        _, token = KeyStore(d).create("app", ["ingest"])
        with TestClient(create_app(d), headers={"Authorization": f"Bearer {token}"}) as client:

            def report(user: str, event_id: str, age_ms: int) -> Any:
                event = {"event_id": event_id, "user_id": user, "video_id": "v1"}
                return client.post(
                    "/v1/events", json=event | {"type": "report", "ts": iso(now_ms() - age_ms)}
                )

            late = report("us-new", "r1", (LIMIT_DAYS + 1) * DAY_MS)
            assert late.status_code == 422
            error = late.json()["error"]
            assert error["code"] == "validation_failed"
            assert [p["field"] for p in error["details"]["problems"]] == ["body.ts"]
            assert report("us-new", "r2", (LIMIT_DAYS - 1) * DAY_MS).status_code == 201
            assert report("eu-new", "r3", (LIMIT_DAYS + 1) * DAY_MS).status_code == 201


def test_a_moved_user_keeps_the_time_of_their_label_sets(tmp_path: Path, backend: str) -> None:
    root = build(tmp_path / "d", {"old": OLD_MS})
    with Deployment.open(root) as d:
        src = sql_store(d.store("eu"))
        (before,) = src.query("SELECT stored_at_ms FROM labels WHERE user_id = 'eu-old'")
    toml = root / "fyp.toml"
    moves = '\n[regions.eu.policy.moves]\nallow_to = ["us"]\n'
    toml.write_text(toml.read_text("utf-8") + moves, "utf-8")
    code, out = cli("user", "move", str(root), "eu-old", "--to", "us", "--reason", "test")
    assert code == 0, out
    with Deployment.open(root) as d:
        dst = sql_store(d.store("us"))
        assert dst.query("SELECT stored_at_ms FROM labels WHERE user_id = 'eu-old'") == [before]
        assert expire_region(d, "us").tables[LABELS.table] == 2  # us-old's and eu-old's


def test_a_growing_label_set_keeps_its_first_time(tmp_path: Path, backend: str) -> None:
    root = build(tmp_path / "d", {"old": OLD_MS})
    with Deployment.open(root) as d:
        store = d.store("us")
        (before,) = sql_store(store).query("SELECT stored_at_ms FROM labels")
        assert store.insert_label_sets("ds", "test", {"us-old": ["v5"]}) == 1
        assert sql_store(store).query("SELECT stored_at_ms FROM labels") == [before]
        assert int(before[0]) < now_ms() - LIMIT_DAYS * DAY_MS


def test_expiry_and_the_check_read_the_time_indexes(tmp_path: Path) -> None:
    root = build(tmp_path / "d", {"new": NEW_MS})
    with Deployment.open(root) as d:
        sql = sql_store(d.store("us"))
        for table, index in ((EXPOSURES, "experiment_exposures_time"), (LABELS, "labels_time")):
            for query in (
                f"SELECT {table.key} FROM {table.table} WHERE {table.column} < ? "
                f"ORDER BY {table.column} LIMIT ?",
                f"SELECT COUNT(*) FROM {table.table} WHERE {table.column} < ?",
            ):
                params = (0, 10)[: query.count("?")]
                plan = " / ".join(
                    str(r[-1]) for r in sql.query("EXPLAIN QUERY PLAN " + query, params)
                )
                assert index in plan and "SCAN" not in plan.replace(
                    f"SCAN {table.table} USING", ""
                ), plan


def test_a_store_made_before_migration_29_dates_its_label_sets_when_migrated(
    tmp_path: Path,
) -> None:
    from fyp.storage.migrations import split_statements, sqlite_migrations

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, "
        "applied_at_ms INTEGER)"
    )
    for m in sqlite_migrations():
        if m.version < 29:
            for statement in split_statements(m.sql.format(region="us")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
    conn.execute(
        "INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms) "
        "VALUES ('u1', 'us', 0, 0)"
    )
    conn.execute(
        "INSERT INTO labels (dataset, split, user_id, video_ids) VALUES ('d', 't', 'u1', '[\"v\"]')"
    )
    conn.commit()
    conn.close()
    started = now_ms()
    store = open_store(f"sqlite:///{path}", "us", create=True)
    try:
        (at,) = sql_store(store).query("SELECT stored_at_ms FROM labels")
        assert started - 1000 <= int(at[0]) <= now_ms() + 1000
    finally:
        store.close()


@settings(max_examples=30, deadline=None)
@given(
    ages=st.lists(st.integers(0, 100), min_size=0, max_size=40),
    limit=st.integers(1, 100),
    chunk=st.integers(1, 7),
)
def test_expiry_leaves_exactly_the_rows_within_the_limit(
    ages: list[int], limit: int, chunk: int
) -> None:
    """Whatever the rows' times and the chunk size, the rows before the cutoff go and
    every other row stays, in each table."""
    cutoff = 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/s.sqlite", "us", create=True)
        try:
            sql = sql_store(store)
            for n, age in enumerate(ages):
                store.insert_user(
                    User(user_id=f"u{n}", home_region="us", created_at_ms=0, updated_at_ms=0)
                )
                at = cutoff + (limit - age) * 1000  # age > limit: before the cutoff
                record_exposure(store, "x", "A", f"u{n}", at)
                store.insert_label_sets("d", "t", {f"u{n}": ["v"]}, stored_at_ms=at)
            for table in (EXPOSURES, LABELS):
                gone, _ = table.expire_before(sql, cutoff, chunk, 0.0)
                kept = {str(r[0]) for r in sql.query(f"SELECT user_id FROM {table.table}")}
                assert kept == {f"u{n}" for n, age in enumerate(ages) if age <= limit}
                assert gone == sum(age > limit for age in ages)
        finally:
            store.close()
