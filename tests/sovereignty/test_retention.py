"""A region's retention limit (``[regions.R.policy.retention] events_days``): events past
it are refused at ingestion, deleted before every training (and by ``fyp retention
apply``), again after a restore, and ``fyp retention check`` proves the store, the live
model and the backups hold none past it for longer than the retrain deadline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from region_helpers import cli
from retention_helpers import iso, now_ms

from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.config import DAY_MS, load_config
from fyp.errors import ConfigError
from fyp.events.ingest import Ingestor
from fyp.models.artifacts import current_version, read_manifest
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.sovereignty.lineage import LineageVerifier
from fyp.sovereignty.retention import check_retention, expire_region

LIMIT_DAYS = 30
OLD, NEW = 60, 1  # days before now of the two kinds of events
N_OLD, N_NEW = 120, 80


def add_policy(root: Path, lines: str, region: str = "us") -> None:
    toml = root / "fyp.toml"
    toml.write_text(
        toml.read_text("utf-8") + f"\n[regions.{region}.policy.retention]\n{lines}\n", "utf-8"
    )


def build(root: Path) -> Path:
    """us users a0..a3, eu users b0..b3, each with events 60 days old and 1 day old,
    ingested before us set its limit of 30 days (eu has none)."""
    with Deployment.init(root, ["us", "eu"]) as d:
        catalog = Catalog(d)
        for n in range(4):
            catalog.create_user(UserIn(user_id=f"a{n}", home_region="us"))
            catalog.create_user(UserIn(user_id=f"b{n}", home_region="eu"))
        for v in range(12):
            catalog.create_video(
                VideoIn(
                    video_id=f"v{v}",
                    duration_ms=20_000,
                    regions=["us", "eu"],
                    categories=[f"c{v % 3}"],
                )
            )
        now = now_ms()
        events = []
        for k in range(N_OLD + N_NEW):
            days = OLD if k < N_OLD else NEW
            for who in "ab":
                events.append(
                    {
                        "event_id": f"{who}{k}",
                        "user_id": f"{who}{k % 4}",
                        "video_id": f"v{k % 12}",
                        "type": "play",
                        "watch_ms": 20_000,
                        "ts": iso(now - days * DAY_MS + k * 1000),
                    }
                )
        assert Ingestor(d).ingest(events).counts["stored"] == len(events)
    add_policy(root, f"events_days = {LIMIT_DAYS}")
    return root


def check(root: Path) -> tuple[int, dict[str, Any]]:
    code, out = cli("retention", "check", str(root), "--json")
    return code, {r["region"]: r for r in json.loads(out)["regions"]}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("events_days = 0", "whole number of days"),
        ("events_days = -3", "whole number of days"),
        ("events_days = true", "whole number of days"),
        ('events_days = "30"', "whole number of days"),
        ("events_days = 1.5", "whole number of days"),
        ("event_days = 30", "did you mean 'events_days'"),
    ],
)
def test_a_bad_limit_stops_every_command(tmp_path: Path, lines: str, message: str) -> None:
    Deployment.init(tmp_path / "d", ["us"]).close()
    add_policy(tmp_path / "d", lines)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "d")
    code, out = cli("retention", "check", str(tmp_path / "d"))
    assert code == 3 and message in out


def test_training_deletes_expired_events_first_and_the_check_proves_it(
    tmp_path: Path, backend: str
) -> None:
    root = build(tmp_path / "d")
    code, before = check(root)
    assert code == 1
    assert before["us"]["overdue_events"] == N_OLD
    assert before["eu"]["problems"] == [] and before["eu"]["events_days"] is None

    code, out = cli("train", str(root))
    assert code == 0, out
    assert f"us: deleted {N_OLD:,} events past the region's retention limit" in out
    with Deployment.open(root) as d:
        cutoff = now_ms() - LIMIT_DAYS * DAY_MS
        assert d.store("us").count_events() == N_NEW
        assert d.store("us").count_events_before(cutoff) == 0
        assert d.store("eu").count_events() == N_OLD + N_NEW  # eu keeps everything
        (entry,) = AuditLog(d.store("us")).entries(action="retention.expire")
        assert entry.details["events"] == N_OLD and entry.details["events_days"] == LIMIT_DAYS
        assert not list(AuditLog(d.store("eu")).entries(action="retention.expire"))
        region_dir = d.config.region_dir("us")
        manifest = read_manifest(region_dir, current_version(region_dir) or "")
        assert manifest.lineage["oldest_event_ms"] >= cutoff
        assert manifest.snapshot.event_count == N_NEW
    code, after = check(root)
    assert code == 0, after
    code, out = cli("lineage", "verify", str(root))
    assert code == 0, out
    code, out = cli("retention", "apply", str(root), "--json")  # nothing left to delete
    assert code == 0
    assert {r["region"]: r["events"] for r in json.loads(out)["regions"]} == {"us": 0, "eu": 0}


def test_an_event_already_past_the_limit_is_refused_at_ingestion(tmp_path: Path) -> None:
    root = build(tmp_path / "d")
    with Deployment.open(root) as d:
        _, token = KeyStore(d).create("app", ["ingest"])
        with TestClient(create_app(d), headers={"Authorization": f"Bearer {token}"}) as client:

            def post(user: str, event_id: str, days: float) -> Any:
                return client.post(
                    "/v1/events",
                    json={
                        "event_id": event_id,
                        "user_id": user,
                        "video_id": "v1",
                        "type": "like",
                        "ts": iso(now_ms() - int(days * DAY_MS)),
                    },
                )

            old = post("a0", "late-1", LIMIT_DAYS + 1)
            assert old.status_code == 422
            error = old.json()["error"]
            assert error["code"] == "validation_failed"
            assert [p["field"] for p in error["details"]["problems"]] == ["body.ts"]
            assert "30 days" in error["message"]
            assert post("a0", "late-2", LIMIT_DAYS - 1).status_code == 201
            assert post("b0", "late-3", LIMIT_DAYS + 1).status_code == 201  # eu: no limit
            # a retry of an event stored before the limit was set is still a duplicate
            (stored,) = [e for e in d.store("us").user_events("a0", 1000) if e.event_id == "a0"]
            retry = client.post(
                "/v1/events",
                json={
                    "event_id": "a0",
                    "user_id": "a0",
                    "video_id": stored.video_id,
                    "type": stored.type,
                    "watch_ms": stored.watch_ms,
                    "ts": iso(stored.ts_ms),
                },
            )
            assert retry.status_code == 200, retry.json()


def test_ingestion_follows_a_limit_edited_while_serving(tmp_path: Path) -> None:
    """A live edit of fyp.toml swaps the deployment's config (fyp.serving.reload): the
    ingestor reads the region's limit from the config in force, not the one it began with."""
    root = build(tmp_path / "d")
    with Deployment.open(root) as d:
        ingestor = Ingestor(d)

        def send(event_id: str, days: int) -> str:
            event = {"event_id": event_id, "user_id": "b0", "video_id": "v1", "type": "like"}
            event["ts"] = iso(now_ms() - days * DAY_MS)
            return ingestor.ingest([event]).results[0].status

        assert send("eu-old-1", 10) == "stored"  # eu has no limit yet
        add_policy(root, "events_days = 7", region="eu")
        d.config = load_config(root)  # what a reload's swap does
        assert send("eu-old-2", 10) == "rejected"
        assert send("eu-new", 3) == "stored"


def test_an_expiry_after_training_is_pending_then_a_problem_until_a_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = build(tmp_path / "d")
    assert cli("train", str(root))[0] == 0
    grace_ms = 24 * 3_600_000  # [erasure] retrain_within_hours
    monkeypatch.setattr("fyp.sovereignty.retention.CHUNK", 7)  # 80 events: 12 transactions
    with Deployment.open(root) as d:
        later = now_ms() + LIMIT_DAYS * DAY_MS  # every event of us is past the limit then
        assert expire_region(d, "us", at_ms=later).events == N_NEW
        (_, entry) = AuditLog(d.store("us")).entries(action="retention.expire")  # one more
        assert entry.details["events"] == N_NEW
        live = next(r for r in LineageVerifier(d).verify(["us"]) if r.current)
        # the model's events are gone: not recomputable, said why, and not a problem
        assert live.snapshot == "not_recomputable" and live.problems == []
        assert any("retention limit" in n for n in live.notes)
        soon = check_retention(d, "us", at_ms=later)
        assert soon.problems == [] and soon.overdue_events == 0
        overdue = check_retention(d, "us", at_ms=later + grace_ms + 3_600_000)
        assert len(overdue.problems) == 1 and "live model" in overdue.problems[0]


def test_old_backups_are_reported_and_a_restore_deletes_expired_events_again(
    tmp_path: Path,
) -> None:
    root = build(tmp_path / "d")
    code, out = cli("backup", str(root), "--region", "us", "--json")
    assert code == 0, out
    backup_id = json.loads(out)["manifest"]["backup_id"]
    code, out = cli("retention", "apply", str(root))
    assert code == 0 and f"us: deleted {N_OLD:,} events" in out
    # the backup still holds them: a restore brings them back, then deletes them again
    code, out = cli("restore", str(root), "--region", "us", "--backup", backup_id, "--json")
    assert code in (0, 1), out  # 1: the restore's warning about what it dropped
    with Deployment.open(root) as d:
        store = d.store("us")
        assert store.count_events() == N_NEW
        restore = list(AuditLog(store).entries(action="restore"))[-1]
        assert restore.details["expired_events"] == N_OLD
        # kept past the limit, the backup itself holds expired events: a problem
        grace_ms = 24 * 3_600_000
        late = check_retention(d, "us", at_ms=now_ms() + LIMIT_DAYS * DAY_MS + grace_ms + 60_000)
        assert any(backup_id in p for p in late.problems)
        assert not any(backup_id in p for p in check_retention(d, "us").problems)
