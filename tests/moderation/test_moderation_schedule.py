"""A serving process moderates new uploads and re-judges after a policy change by
itself (``ModerationScheduler``): an upload reaches feeds without an operator's cron."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from moderation_helpers import POLICIES, video, with_policies

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.config import ModerationConfig, load_config, write_config
from fyp.moderation import Moderator, Reviews
from fyp.moderation.schedule import ModerationScheduler
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment


def state(d: Deployment, region: str, video_id: str) -> str | None:
    record = cell(d.store(region)).mod.get(video_id)
    return record.state if record else None


def test_an_upload_is_judged_by_the_scheduled_child_and_nothing_runs_after(
    policed: Deployment, moderator: Moderator
) -> None:
    assert moderator.run_reason("us") is None and moderator.run_reason("eu") is None
    Catalog(policed).create_video(video("clean", regions=["us"]))
    Catalog(policed).create_video(video("bad", caption="来玩赌博吧", regions=["us"]))
    assert moderator.run_reason("us") == "videos are waiting for the automated checks"
    assert moderator.run_reason("eu") is None  # published to us only
    assert state(policed, "us", "clean") == "pending"  # in no feed

    scheduler = ModerationScheduler(policed.config, moderator.run_reason)
    assert scheduler.due() == ["us"]
    assert scheduler.tick() and (scheduler.runs, scheduler.failures) == (1, 0)
    assert (state(policed, "us", "clean"), state(policed, "us", "bad")) == (
        "approved",
        "rejected",
    )
    assert moderator.run_reason("us") is None
    assert not scheduler.tick() and scheduler.runs == 1  # nothing due: no child


def test_a_video_waiting_for_a_human_does_not_start_runs(
    policed: Deployment, moderator: Moderator
) -> None:
    Catalog(policed).create_video(video("doubt", caption="整容医院推荐一下", regions=["us"]))
    moderator.run("us")
    assert state(policed, "us", "doubt") == "pending"  # queued for a person
    assert Reviews(moderator).jobs("us", "open")
    assert moderator.run_reason("us") is None


def test_a_policy_change_is_re_judged_without_an_operator(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    with with_policies(root, POLICIES) as d:
        Catalog(d).create_user(UserIn(user_id="a1", home_region="us", birth_year=1990))
        Catalog(d).create_video(video("tea", caption="今天喝奶茶", regions=["us"]))
        Moderator(d).run("us")
        assert state(d, "us", "tea") == "approved"
    config = load_config(root)  # the operator bans a new term, then restarts the server
    policy = {**config.regions["us"].policy, "banned_terms": ["赌博", "casino", "奶茶"]}
    write_config(
        replace(
            config, regions={**config.regions, "us": replace(config.regions["us"], policy=policy)}
        )
    )
    with Deployment.open(root) as d:
        moderator = Moderator(d)
        assert moderator.run_reason("us") == "the policy changed since its verdicts were made"
        scheduler = ModerationScheduler(d.config, moderator.run_reason)
        assert scheduler.tick()
        assert state(d, "us", "tea") == "rejected" and moderator.run_reason("us") is None


def test_a_region_that_cannot_be_read_is_logged_and_the_others_still_run(
    policed: Deployment, moderator: Moderator, caplog: pytest.LogCaptureFixture
) -> None:
    Catalog(policed).create_video(video("both"))

    def reason(region: str) -> str | None:
        if region == "us":
            raise OSError("disk I/O error")
        return moderator.run_reason(region)

    scheduler = ModerationScheduler(policed.config, reason)
    with caplog.at_level(logging.ERROR, logger="fyp.moderation"):
        assert scheduler.tick()
    assert "cannot tell whether region us needs a run: disk I/O error" in caplog.text
    assert (state(policed, "us", "both"), state(policed, "eu", "both")) == ("pending", "approved")


def test_a_failing_child_is_counted_and_every_zero_leaves_it_to_cron(
    policed: Deployment, moderator: Moderator, tmp_path: Path
) -> None:
    Catalog(policed).create_video(video("x"))
    gone = replace(policed.config, root=tmp_path / "not-a-deployment")
    scheduler = ModerationScheduler(gone, moderator.run_reason)
    assert not scheduler.tick() and (scheduler.runs, scheduler.failures) == (2, 2)
    off = replace(policed.config, moderation=ModerationConfig(every_seconds=0))
    idle = ModerationScheduler(off, moderator.run_reason)
    idle.start()
    assert idle._thread is None
