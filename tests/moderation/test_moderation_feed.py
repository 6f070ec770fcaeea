"""Enforcement in the real feed: eligibility per viewer, takedowns in the next response."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moderation_helpers import plays, train, video, with_policies

from fyp.catalog.models import CURRENT_YEAR, UserIn
from fyp.catalog.service import Catalog
from fyp.feed.service import FeedService
from fyp.feed.state import UserState
from fyp.moderation import ModerationEligibility, Moderator, Reviews
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment

ADULT = CURRENT_YEAR - 30
JUST_18 = CURRENT_YEAR - 18  # maybe still 17: not certainly 18
SURELY_18 = CURRENT_YEAR - 19


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Deployment]:
    """One region; 24 adult viewers, plus creators of every age; 60 clean videos."""
    with with_policies(tmp_path / "w", {"us": {"banned_terms": ["赌博"]}}) as d:
        catalog = Catalog(d)
        for k in range(24):
            catalog.create_user(UserIn(user_id=f"u{k}", home_region="us", birth_year=ADULT))
        for uid, year in [
            ("teen", CURRENT_YEAR - 14),
            ("sixteen", CURRENT_YEAR - 16),
            ("seventeen", CURRENT_YEAR - 17),
            ("unknown", None),
        ]:
            catalog.create_user(UserIn(user_id=uid, home_region="us", birth_year=year))
        for k in range(60):
            catalog.create_video(
                video(
                    f"v{k}",
                    f"第{k}个视频，今天天气很好我们去公园散步",
                    creator_id=f"u{k % 24}",
                    regions=["us"],
                )
            )
        plays(d, 1, 1500)
        train(d)
        yield d


def feed_ids(d: Deployment, user: str, n: int = 30, **kw: Any) -> list[str]:
    service = FeedService(d, eligibility=ModerationEligibility(d))
    return [i.video_id for i in service.feed(user, n=n, record=False, **kw).items]


def viewer(age: int | None) -> UserState:
    import numpy as np

    return UserState("x", "us", age, np.zeros(0, np.int64), np.zeros(0, np.float32))


def test_nothing_is_eligible_before_moderation(world: Deployment) -> None:
    page = FeedService(world, eligibility=ModerationEligibility(world)).feed(
        "u1", n=10, record=False
    )
    assert page.items == []
    assert {
        r["reason"] for r in page.to_dict(debug=True)["removed"] if r["stage"] == "eligibility"
    } == {"pending moderation"}
    Moderator(world).run("us")
    assert len(feed_ids(world, "u1", 10)) == 10


def test_a_takedown_shows_in_the_very_next_feed(world: Deployment) -> None:
    Moderator(world).run("us")
    service = FeedService(world, eligibility=ModerationEligibility(world))
    first = service.feed("u3", n=10, record=False)
    target = first.items[0].video_id
    Reviews(Moderator(world)).takedown(target, "legal", "court order", ["us"])
    again = service.feed("u3", n=10, record=False)  # same service: nothing cached
    assert target not in [i.video_id for i in again.items]
    removed = [r for r in again.to_dict(debug=True)["removed"] if r["video_id"] == target]
    assert removed and removed[-1]["reason"] == "blocked in your region"


def test_a_report_hold_leaves_the_next_feed_and_an_approval_brings_it_back(
    world: Deployment,
) -> None:
    """Ten distinct reporters (the default hold threshold): out of the very next page
    after the moderation run; a reviewer's approval makes it eligible again."""
    from fyp.events.ingest import Ingestor

    Moderator(world).run("us")
    service = FeedService(world, eligibility=ModerationEligibility(world))
    target = service.feed("u3", n=10, record=False).items[0].video_id
    reporters = [f"u{k}" for k in range(10, 20)]
    Ingestor(world).ingest(
        [
            {"event_id": f"rep-{u}", "user_id": u, "video_id": target, "type": "report"}
            for u in reporters
        ]
    )
    assert target in [i.video_id for i in service.feed("u3", n=10, record=False).items]
    assert Moderator(world).run("us").reports.held == 1
    again = service.feed("u3", n=10, record=False)  # same service: nothing cached
    assert target not in [i.video_id for i in again.items]
    removed = [r for r in again.to_dict(debug=True)["removed"] if r["video_id"] == target]
    assert removed and removed[-1]["reason"] == "pending moderation"
    reviews = Reviews(Moderator(world))
    job = reviews.claim("rita", "us")
    assert job is not None and job.video_id == target and job.kind == "report"
    reviews.decide(job.job_id, "rita", "approved", "satire, not harmful")
    assert ModerationEligibility(world)([target], viewer(40)) == {}
    assert Moderator(world).run("us").reports.to_dict()["report_jobs"] == 0


def test_creators_under_16_are_never_in_for_you(world: Deployment) -> None:
    catalog = Catalog(world)
    for creator in ("teen", "sixteen", "seventeen", "unknown"):
        catalog.create_video(
            video(
                f"by_{creator}",
                f"{creator}的视频，今天天气很好我们去公园散步",
                creator_id=creator,
                regions=["us"],
            )
        )
    plays(world, 2, 600)
    train(world)
    Moderator(world).run("us")
    check = ModerationEligibility(world)
    verdicts = check(["by_teen", "by_sixteen", "by_seventeen", "by_unknown"], viewer(40))
    # "sixteen" may still be 15 (birthday later in the year), so only "seventeen" passes
    assert set(verdicts) == {"by_teen", "by_sixteen", "by_unknown"}
    assert "creator not eligible" in verdicts["by_teen"]
    for k in range(24):
        assert not {"by_teen", "by_sixteen", "by_unknown"} & set(feed_ids(world, f"u{k}", 40))


def test_age_restricted_videos_reach_certain_adults_only(world: Deployment) -> None:
    Moderator(world).run("us")
    store = world.store("us")
    mod = cell(store).mod
    mod.write("v5", "age_restricted", True, "test", "review", "alice", 1, {})
    check = ModerationEligibility(world)
    assert check(["v5"], viewer(40)) == {}
    assert check(["v5"], viewer(CURRENT_YEAR - SURELY_18)) == {}
    for age in (None, 12, 17, CURRENT_YEAR - JUST_18):
        assert "age-restricted" in check(["v5"], viewer(age))["v5"], age


def test_every_state_has_a_reason(world: Deployment) -> None:
    mod = cell(world.store("us")).mod
    for k, s in enumerate(["approved", "rejected", "restricted", "blocked", "pending"]):
        mod.write(f"v{k}", s, True, "test", "review", "alice", 1, {})
    mod.write("v9", "approved", False, "test", "review", "alice", 1, {})
    reasons = ModerationEligibility(world)([f"v{k}" for k in range(10)], viewer(40))
    assert "v0" not in reasons
    assert reasons["v1"] == "rejected by moderation"
    assert reasons["v2"] == "restricted: not eligible for For You"
    assert reasons["v3"] == "blocked in your region"
    assert reasons["v4"] == reasons["v5"] == "pending moderation"  # v5: no row at all
    assert "creator" in reasons["v9"]
    assert ModerationEligibility(world)([], viewer(40)) == {}


def test_the_check_is_one_small_query_per_call_once_loaded(
    world: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    Moderator(world).run("us")
    store = world.store("us")
    check = ModerationEligibility(world)
    ids = [f"v{k}" for k in range(60)] + [f"missing{k}" for k in range(5000)]
    first = check(ids, viewer(40))  # loads the region's snapshot
    calls: list[str] = []
    real = store.query  # type: ignore[attr-defined]

    def counting(sql: str, params: Any = ()) -> Any:
        calls.append(sql)
        return real(sql, params)

    monkeypatch.setattr(store, "query", counting)
    reasons = check(ids, viewer(40))
    assert len(calls) == 1 and "catalog_changes" in calls[0]  # the head of the change feed
    assert reasons == first and len(reasons) == 5000
    assert reasons["missing0"] == "not available in your region"


def test_a_failing_check_fails_closed_in_the_feed(
    world: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    Moderator(world).run("us")
    store = world.store("us")
    real = store.query  # type: ignore[attr-defined]

    def broken(sql: str, params: Any = ()) -> Any:
        # the feed's own reads of the user (profile, follows), not a check
        if sql.startswith(("SELECT birth_year", "SELECT creator_id FROM follows")):
            return real(sql, params)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "query", broken)
    assert (
        FeedService(world, eligibility=ModerationEligibility(world)).feed("u1", record=False).items
        == []
    )
