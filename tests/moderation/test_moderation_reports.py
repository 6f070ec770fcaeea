"""Users' reports reach moderation: report reviews, holds, residency, the checkpoint.

Every test runs on SQLite, and on PostgreSQL when ``FYP_TEST_POSTGRES_URL`` names a
server (each deployment in schemas of its own)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from moderation_helpers import video, with_policies

from fyp.audit.log import AuditLog, now_ms
from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.config import DeploymentConfig
from fyp.events.ingest import Ingestor
from fyp.moderation import Moderator, Reviews
from fyp.moderation.reports import DAY_MS
from fyp.moderation.schedule import ModerationScheduler
from fyp.regions.deployment import Deployment
from fyp.storage.migrations import Migration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from postgres_server import SERVER, deployments_on_postgres

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set"),
    ),
]
US_REPORTS = {"review_reporters": 3, "hold_reporters": 5, "window_days": 7}
EU_REPORTS = {"review_reporters": 2, "hold_reporters": 0, "window_days": 7}
US_USERS = [f"r{k}" for k in range(8)]
EU_USERS = [f"e{k}" for k in range(6)]


@pytest.fixture(params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """us (review at 3, hold at 5) and eu (review at 2, never hold); reporters r0-r7 in
    us, e0-e5 in eu; videos v1-v4 in both regions, approved."""
    on_pg = request.param == "postgresql"
    with deployments_on_postgres(monkeypatch) if on_pg else nullcontext():
        policies: dict[str, dict[str, Any]] = {
            "us": {"banned_terms": ["赌博"], "reports": US_REPORTS},
            "eu": {"reports": EU_REPORTS},
        }
        with with_policies(tmp_path / "dep", policies) as d:
            catalog = Catalog(d)
            catalog.create_user(UserIn(user_id="a1", home_region="us", birth_year=1990))
            for uid in US_USERS:
                catalog.create_user(UserIn(user_id=uid, home_region="us", birth_year=1990))
            for uid in EU_USERS:
                catalog.create_user(UserIn(user_id=uid, home_region="eu", birth_year=1990))
            for k in range(1, 5):
                catalog.create_video(video(f"v{k}", f"第{k}个视频，今天天气很好我们去公园散步"))
            moderator = Moderator(d)
            for region in d.regions:
                moderator.run(region)
            yield d


_ids = iter(range(10**9))


def report(d: Deployment, user: str, video_id: str, days_ago: float = 0) -> None:
    event: dict[str, Any] = {
        "event_id": f"rep-{next(_ids)}",
        "user_id": user,
        "video_id": video_id,
        "type": "report",
    }
    if days_ago:
        event["ts"] = (now_ms() - int(days_ago * DAY_MS)) / 1000
    result = Ingestor(d).ingest([event])
    assert result.to_dict()["stored"] == 1, result.to_dict()


def state(d: Deployment, region: str, video_id: str) -> str:
    return str(Moderator(d).status(video_id)["regions"][region]["state"])


def report_jobs(d: Deployment, region: str) -> list[dict[str, Any]]:
    jobs = Reviews(Moderator(d)).jobs(region)
    return [j.to_dict() for j in jobs if j.kind == "report"]


def run(d: Deployment, region: str = "us") -> dict[str, Any]:
    return Moderator(d).run(region).to_dict()


def decide(d: Deployment, job_id: str, verdict: str = "approved") -> None:
    reviews = Reviews(Moderator(d))
    job = reviews.claim("rita", job_id.rpartition("-")[0])
    assert job is not None and job.job_id == job_id
    reviews.decide(job_id, "rita", verdict, "looked at it")


def test_review_opens_at_n_distinct_reporters_and_not_at_n_minus_1(world: Deployment) -> None:
    report(world, "r0", "v1")
    report(world, "r0", "v1")  # the same user twice counts once
    report(world, "r1", "v1")
    assert run(world)["reports"]["report_jobs"] == 0
    assert report_jobs(world, "us") == []
    report(world, "r2", "v1")
    summary = run(world)
    assert summary["reports"]["report_jobs"] == 1 and summary["reports"]["held"] == 0
    [job] = report_jobs(world, "us")
    assert job["video_id"] == "v1" and job["status"] == "open"
    assert job["details"]["reporters"] == 3 and job["details"]["window_days"] == 7
    assert job["details"]["held"] is False
    assert "3 distinct users" in job["reason"]
    assert state(world, "us", "v1") == "approved"  # under the hold threshold: still served
    text = json.dumps(job)
    assert not any(uid in text for uid in US_USERS)  # counts only, never who
    [opened] = [
        e for e in AuditLog(world.store("us")).entries(subject="v1") if e.action == "job.open"
    ]
    assert opened.actor == "fyp-moderation" and opened.details["kind"] == "report"
    assert opened.details["reporters"] == 3 and opened.details["review_reporters"] == 3
    assert not any(uid in json.dumps(opened.details) for uid in US_USERS)


def test_hold_at_n_distinct_reporters_not_at_n_minus_1(world: Deployment) -> None:
    for uid in US_USERS[:4]:
        report(world, uid, "v2")
    run(world)
    [job] = report_jobs(world, "us")
    assert job["details"]["reporters"] == 4 and state(world, "us", "v2") == "approved"
    report(world, "r4", "v2")
    summary = run(world)["reports"]
    assert summary["held"] == 1 and summary["report_jobs"] == 0  # the open job is kept
    assert state(world, "us", "v2") == "pending"
    [job] = report_jobs(world, "us")
    assert job["details"] == {**job["details"], "reporters": 5, "held": True}
    [hold] = [
        e
        for e in AuditLog(world.store("us")).entries(subject="v2", action="verdict")
        if e.details.get("source") == "reports"
    ]
    assert hold.details["state"] == "pending" and hold.details["hold_reporters"] == 5
    assert hold.details["previous_state"] == "approved"
    assert AuditLog(world.store("us")).verify().ok


def test_a_human_approval_lifts_the_hold_and_old_reports_do_not_reopen_it(
    world: Deployment,
) -> None:
    for uid in US_USERS[:5]:
        report(world, uid, "v1")
    run(world)
    assert state(world, "us", "v1") == "pending"
    [job] = report_jobs(world, "us")
    decide(world, job["job_id"], "approved")
    assert state(world, "us", "v1") == "approved"
    assert Moderator(world).run_reason("us") is None
    report(world, "r5", "v1")  # a new report: 1 since the approval, not 6
    report(world, "r0", "v1")  # an old reporter again counts as new evidence, once
    summary = run(world)["reports"]
    assert summary["videos_counted"] == 1 and summary["report_jobs"] == 0
    assert state(world, "us", "v1") == "approved"
    assert [j["status"] for j in report_jobs(world, "us")] == ["decided"]
    report(world, "r6", "v1")  # a third distinct reporter since the approval: back to a human
    assert run(world)["reports"]["report_jobs"] == 1
    assert state(world, "us", "v1") == "approved"


def test_reports_never_reverse_a_rejection(world: Deployment) -> None:
    for uid in US_USERS[:3]:
        report(world, uid, "v3")
    run(world)
    [job] = report_jobs(world, "us")
    decide(world, job["job_id"], "rejected")
    for uid in US_USERS[3:]:
        report(world, uid, "v3")
    summary = run(world)["reports"]
    assert summary["already_removed"] == 1 and summary["report_jobs"] == 0
    assert state(world, "us", "v3") == "rejected"


def test_each_region_counts_only_its_own_users_under_its_own_policy(world: Deployment) -> None:
    for uid in US_USERS[:5]:  # past us's hold threshold
        report(world, uid, "v4")
    report(world, "e0", "v4")  # one eu user: under eu's review threshold (2)
    for region in world.regions:
        run(world, region)
    assert state(world, "us", "v4") == "pending"
    assert state(world, "eu", "v4") == "approved"  # judged in eu on eu's reports alone
    assert report_jobs(world, "eu") == []
    [us_job] = report_jobs(world, "us")
    assert us_job["details"]["reporters"] == 5  # eu's reporter is not among them
    report(world, "e1", "v4")
    report(world, "e2", "v4")
    report(world, "e3", "v4")
    run(world, "eu")
    [eu_job] = report_jobs(world, "eu")
    assert eu_job["details"]["reporters"] == 4 and eu_job["details"]["hold_reporters"] == 0
    assert state(world, "eu", "v4") == "approved"  # eu never holds
    run(world, "us")
    assert [j["details"]["reporters"] for j in report_jobs(world, "us")] == [5]


def test_reports_outside_the_window_do_not_count(world: Deployment) -> None:
    for uid in US_USERS[:3]:
        report(world, uid, "v1", days_ago=8)
    report(world, "r3", "v1", days_ago=6)
    report(world, "r4", "v1")
    assert run(world)["reports"]["report_jobs"] == 0
    report(world, "r5", "v1")
    assert run(world)["reports"]["report_jobs"] == 1
    assert report_jobs(world, "us")[0]["details"]["reporters"] == 3


def test_the_checkpoint_means_a_second_run_repeats_nothing(world: Deployment) -> None:
    config: DeploymentConfig = world.config
    moderator = Moderator(world)
    scheduler = ModerationScheduler(config, moderator.run_reason)
    assert scheduler.due() == []
    for uid in US_USERS[:5]:
        report(world, uid, "v1")
    assert moderator.run_reason("us") == "users reported videos since the last run"
    assert scheduler.due() == ["us"]  # eu's store holds none of these reports
    first = moderator.run("us").to_dict()["reports"]
    assert (first["report_jobs"], first["held"]) == (1, 1)
    head = AuditLog(world.store("us")).head()
    assert scheduler.due() == []
    again = moderator.run("us").to_dict()["reports"]
    assert again["videos_counted"] == again["report_jobs"] == again["held"] == 0
    assert AuditLog(world.store("us")).head() == head  # no entry at all
    assert len(report_jobs(world, "us")) == 1
    report(world, "r5", "v1")  # more reports of a held video: the job's count follows
    assert scheduler.due() == ["us"]
    third = moderator.run("us").to_dict()["reports"]
    assert (third["report_jobs"], third["held"], third["jobs_updated"]) == (0, 0, 1)
    assert report_jobs(world, "us")[0]["details"]["reporters"] == 6
    assert AuditLog(world.store("us")).head()[0] == head[0]  # a count is not an action


def test_reports_whose_checkpoint_event_was_erased_still_count(world: Deployment) -> None:
    """SQLite hands an erased last row's number to the next event: the checkpoint must
    not skip reports that got a number at or below it."""
    from fyp.sovereignty.erasure import Eraser

    report(world, "r0", "v1")
    report(world, "r7", "v2")  # the newest reports: r7's, erased below
    report(world, "r7", "v2")
    run(world)
    Eraser(world).erase("r7")
    report(world, "r1", "v1")  # on SQLite these take r7's numbers
    report(world, "r2", "v1")
    assert Moderator(world).run_reason("us") is not None
    summary = run(world)["reports"]
    assert summary["report_jobs"] == 1 and summary["window_reread"] is True
    assert report_jobs(world, "us")[0]["details"]["reporters"] == 3


def test_an_erased_reporter_leaves_only_counts(world: Deployment, tmp_path: Path) -> None:
    from fyp.sovereignty.erasure import Eraser
    from fyp.sovereignty.erasure_verify import verify_erasure
    from fyp.sovereignty.residency import ResidencyScanner

    for uid in US_USERS[:5]:
        report(world, uid, "v1")
    run(world)
    receipt = Eraser(world).erase("r3")
    assert verify_erasure(world, "r3", receipt).ok
    [job] = report_jobs(world, "us")
    assert job["details"]["reporters"] == 5  # what the reviewer was told stands
    assert state(world, "us", "v1") == "pending"  # and so does the hold
    assert ResidencyScanner(world.config.root).run().ok
    assert AuditLog(world.store("us")).verify().ok


def test_an_edit_does_not_shake_reports_off(world: Deployment) -> None:
    from fyp.catalog.models import VideoPatch

    for uid in US_USERS[:5]:
        report(world, uid, "v2")
    run(world)
    Catalog(world).update_video("v2", VideoPatch(caption="换了一个标题，今天天气很好"))
    [job] = report_jobs(world, "us")
    assert job["status"] == "superseded"
    summary = run(world)
    assert summary["by_rule"] == {"human_hold:review": 1}
    assert state(world, "us", "v2") == "pending"  # a human decides, not the checks
    [waiting] = Reviews(Moderator(world)).jobs("us", "open")
    assert waiting.kind == "review" and "reported by 5 distinct users" in waiting.reason
    run(world, "eu")
    assert state(world, "eu", "v2") == "approved"  # eu had no reports: its checks approve


def test_a_policy_recheck_keeps_an_open_report_job(world: Deployment) -> None:
    """Re-judging a reported, approved video to pending must not open a second job."""
    from dataclasses import replace

    from fyp.config import load_config, write_config

    for uid in US_USERS[:3]:
        report(world, uid, "v1")
    run(world)
    config = load_config(world.config.root)
    us = config.regions["us"]
    policy = {**us.policy, "auto_approve": False}
    write_config(replace(config, regions={**config.regions, "us": replace(us, policy=policy)}))
    with Deployment.open(world.config.root) as d:
        summary = Moderator(d).run("us").to_dict()
        assert summary["policy_rechecked"] == 4
        assert state(d, "us", "v1") == "pending"
        assert [j.kind for j in Reviews(Moderator(d)).jobs("us", "open")].count("report") == 1


def _before_23(migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    return tuple(m for m in migrations if m.version < 23)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_made_before_reports_keeps_its_jobs(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 23 rebuilds the jobs table (SQLite) or alters it (PostgreSQL): the
    jobs, their numbers and the one-open-job rule survive, and report jobs fit in."""
    import fyp.storage.postgres as pg
    import fyp.storage.sqlite as lite
    from fyp.errors import JobConflict
    from fyp.moderation.service import cell

    older = pytest.MonkeyPatch()
    before = {"sqlite": lite.sqlite_migrations, "postgresql": pg.postgres_migrations}
    # a store as fyp left it before migration 23 (later ones came after it)
    older.setattr(lite, "sqlite_migrations", lambda: _before_23(before["sqlite"]()))
    older.setattr(pg, "postgres_migrations", lambda: _before_23(before["postgresql"]()))
    on_pg = backend == "postgresql"
    with deployments_on_postgres(monkeypatch) if on_pg else nullcontext():
        try:
            with with_policies(tmp_path / "old", {"us": {}}) as d:
                store = cell(d.store("us")).store
                assert store.schema_version() == 22
                Catalog(d).create_user(UserIn(user_id="a1", home_region="us", birth_year=1990))
                Catalog(d).create_video(video("v1", regions=["us"]))
                store.execute(
                    "INSERT INTO moderation_jobs (region, video_id, kind, status, reason, "
                    "created_at_ms, excluded, appellant) VALUES "
                    "('us', 'v1', 'appeal', 'open', 'why', 5, '[\"bob\"]', 'a1')"
                )
        finally:
            older.undo()
        with Deployment.open(tmp_path / "old") as d:
            assert d.store("us").schema_version() >= 23
            [kept] = Reviews(Moderator(d)).jobs("us")
            assert (kept.job_id, kept.kind, kept.excluded, kept.details) == (
                "us-1",
                "appeal",
                ("bob",),
                {},
            )
            mod = cell(d.store("us")).mod
            with pytest.raises(JobConflict):
                mod.create_job("v1", "report", "x", 1)
            Catalog(d).create_video(video("v2", regions=["us"]))
            job = mod.create_job("v2", "report", "x", 1, details={"reporters": 3})
            assert job.kind == "report" and job.details == {"reporters": 3}
            assert job.job_id != "us-1"  # (PostgreSQL spent a number on the refused one)


def test_a_restore_does_not_lose_a_hold_made_since_its_backup(world: Deployment) -> None:
    from fyp.sovereignty.backup_writer import BackupWriter
    from fyp.sovereignty.restore import Restorer

    config = world.config
    BackupWriter(config, "us").run()
    for uid in US_USERS[:5]:
        report(world, uid, "v1")
    run(world)
    assert state(world, "us", "v1") == "pending"
    world.close()
    Restorer(config, "us").run()  # the backup knew nothing of the reports
    with Deployment.open(config.root) as d:
        assert state(d, "us", "v1") == "pending"  # judged again, with its history in view
        summary = Moderator(d).run("us").to_dict()
        assert summary["by_rule"]["human_hold:review"] == 1
        assert state(d, "us", "v1") == "pending"
        [job] = Reviews(Moderator(d)).jobs("us", "open")
        assert "reported by 5 distinct users" in job.reason


def test_cli_moderate_says_what_reports_did(world: Deployment) -> None:
    from typer.testing import CliRunner

    from fyp.cli.app import app

    for uid in US_USERS[:5]:
        report(world, uid, "v1")
    result = CliRunner().invoke(app, ["moderate", str(world.config.root), "--region", "us"])
    assert result.exit_code == 0, result.output
    assert "1 reported videos counted, 1 report reviews opened, 1 held" in result.output
    again = CliRunner().invoke(app, ["moderate", str(world.config.root), "--json"])
    runs = json.loads(again.output)["runs"]
    assert [r["reports"]["report_jobs"] for r in runs] == [0, 0]
