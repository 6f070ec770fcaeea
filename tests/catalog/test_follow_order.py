"""Follows resolve by when the user acted (the event's ``ts``, the API's time), not by
when the event arrived: an older follow queued offline and sent late revives no
unfollow, and the table's record of each pair's latest action goes wherever follows go."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.audit.log import AuditLog, sql_store
from fyp.catalog.blocks import Blocking
from fyp.catalog.follow_order import region_actions, user_actions
from fyp.catalog.follows import Following, user_follows
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.regions.deployment import Deployment
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.export import UserExport
from fyp.sovereignty.retention import RetentionPolicy, expire_events

T0 = 0  # an hour before the test began (clock): in retention, and not the future


@pytest.fixture(autouse=True)
def clock() -> None:
    """Times relative to each test's start: an API action is at the server's time, and
    a test may run many minutes after its module was imported."""
    global T0
    T0 = (int(time.time()) - 3600) * 1000


_ids = itertools.count()


def _world(d: Deployment) -> None:
    """ana follows in us; bob and cy create there (v1 bob's, v4 cy's), ana too (v5)."""
    catalog = Catalog(d)
    for user in ("ana", "bob", "cy"):
        catalog.create_user(UserIn(user_id=user, home_region="us"))
    for video, creator in (("v1", "bob"), ("v4", "cy"), ("v5", "ana")):
        catalog.create_video(
            VideoIn(video_id=video, creator_id=creator, duration_ms=10_000, regions=["us"])
        )


def _send(d: Deployment, user: str, video: str, kind: str, ts: int) -> None:
    """One event whose client time is ``T0 + ts`` seconds, arriving now."""
    event = {
        "event_id": f"o{next(_ids)}",
        "user_id": user,
        "video_id": video,
        "type": kind,
        "ts": datetime.fromtimestamp(T0 / 1000 + ts, UTC).isoformat(),
    }
    results = Ingestor(d).ingest([event]).results
    assert all(r.status == "stored" for r in results), results


def _follows(d: Deployment, user: str) -> list[str]:
    return sorted(d.store("us").followed_creators(user))


def test_an_older_follow_arriving_late_revives_no_unfollow(deployment: Deployment) -> None:
    _world(deployment)
    _send(deployment, "ana", "v1", "unfollow", 3)  # the tablet's, at 3
    _send(deployment, "ana", "v1", "follow", 2)  # the phone's, at 2, sent later
    assert _follows(deployment, "ana") == []
    # the reverse: the unfollow at 2 arrives after the follow at 3
    _send(deployment, "ana", "v4", "follow", 3)
    _send(deployment, "ana", "v4", "unfollow", 2)
    assert _follows(deployment, "ana") == ["cy"]
    assert user_follows(deployment.store("us"), "ana")[0].since_ms == T0 + 3000
    actions = user_actions(deployment.store("us"), "ana")
    assert actions == [
        {"creator_id": "bob", "acted_ms": T0 + 3000, "following": False},
        {"creator_id": "cy", "acted_ms": T0 + 3000, "following": True},
    ]


def test_of_two_actions_at_the_same_time_the_later_arrival_wins(deployment: Deployment) -> None:
    _world(deployment)
    _send(deployment, "ana", "v1", "follow", 5)
    _send(deployment, "ana", "v1", "unfollow", 5)
    assert _follows(deployment, "ana") == []
    _send(deployment, "ana", "v1", "follow", 5)
    assert _follows(deployment, "ana") == ["bob"]


def test_since_is_the_follow_that_made_the_row(deployment: Deployment) -> None:
    _world(deployment)
    _send(deployment, "ana", "v1", "follow", 5)
    _send(deployment, "ana", "v1", "follow", 4)  # older than the latest action: nothing
    _send(deployment, "ana", "v1", "follow", 7)  # a repeat: the follow goes on from 5
    assert [(f.creator_id, f.since_ms) for f in user_follows(deployment.store("us"), "ana")] == [
        ("bob", T0 + 5000)
    ]


def test_an_api_unfollow_is_not_undone_by_an_older_event(deployment: Deployment) -> None:
    _world(deployment)
    following = Following(deployment)
    _send(deployment, "ana", "v1", "follow", 1)
    assert following.unfollow("ana", "bob")  # now, later than any queued event
    _send(deployment, "ana", "v1", "follow", 2)  # tapped before the unfollow, sent after
    assert _follows(deployment, "ana") == []
    # training reads the API unfollow (it made no event)
    [(user, creator, t, on)] = region_actions(deployment.store("us"))
    assert (user, creator, on) == ("ana", "bob", False) and t > T0 + 3_000_000
    # an unfollow through the API of a creator not followed is an action too
    assert not following.unfollow("ana", "cy")
    _send(deployment, "ana", "v4", "follow", 3)
    assert _follows(deployment, "ana") == []
    # and an API follow is not undone by an older unfollow event
    following.follow("ana", "bob")
    _send(deployment, "ana", "v1", "unfollow", 4)
    assert _follows(deployment, "ana") == ["bob"]
    # an event later than the API's action still counts
    _send(deployment, "ana", "v1", "unfollow", 3600 + 200)
    assert _follows(deployment, "ana") == []


def test_a_block_ends_the_follow_at_its_time(deployment: Deployment) -> None:
    _world(deployment)
    blocking = Blocking(deployment)
    _send(deployment, "ana", "v1", "follow", 1)
    blocking.block("ana", "bob")
    blocking.unblock("ana", "bob")
    _send(deployment, "ana", "v1", "follow", 2)  # from before the block
    assert _follows(deployment, "ana") == []
    # bob blocks ana: her follow of him ends too, and an older follow stays ended
    _send(deployment, "ana", "v1", "follow", 3600 + 200)
    assert _follows(deployment, "ana") == ["bob"]
    blocking.block("bob", "ana")
    blocking.unblock("bob", "ana")
    _send(deployment, "ana", "v1", "follow", 3)
    assert _follows(deployment, "ana") == []


def test_the_records_are_erased_and_exported(deployment: Deployment) -> None:
    _world(deployment)
    _send(deployment, "ana", "v1", "follow", 1)
    _send(deployment, "ana", "v4", "unfollow", 2)
    Following(deployment).unfollow("bob", "cy")
    doc = json.loads("".join(UserExport(deployment, "ana").chunks()))
    assert doc["follow_actions"] == [
        {"creator_id": "bob", "acted_ms": T0 + 1000, "following": True},
        {"creator_id": "cy", "acted_ms": T0 + 2000, "following": False},
    ]
    assert doc["manifest"]["sections"]["follow_actions"] == 2
    receipt = Eraser(deployment).erase("cy")  # ana's and bob's records of cy
    assert receipt.removed.get("follow_actions.creator_id", 0) == 2
    assert not verify_erasure(deployment, "cy").remnants
    assert Eraser(deployment).erase("ana").removed["follow_actions"] == 1
    rows = sql_store(deployment.store("us")).query("SELECT COUNT(*) FROM follow_actions")
    assert rows == [(0,)]


def test_retention_deletes_old_unfollows_and_keeps_the_follows(deployment: Deployment) -> None:
    _world(deployment)
    days = 86_400
    _send(deployment, "ana", "v1", "follow", -60 * days)
    _send(deployment, "ana", "v4", "unfollow", -60 * days)
    _send(deployment, "bob", "v4", "unfollow", 1)
    us = deployment.store("us")
    expired = expire_events(us, RetentionPolicy(events_days=30))
    assert expired.events == 2
    assert user_actions(us, "ana") == [
        {"creator_id": "bob", "acted_ms": T0 - 60 * days * 1000, "following": True}
    ]
    assert [a["creator_id"] for a in user_actions(us, "bob")] == ["cy"]  # recent: kept
    assert _follows(deployment, "ana") == ["bob"]
    entry = list(AuditLog(us).entries())[-1]
    assert entry.action == "retention.expire" and entry.details["tables"]["follow_actions"] == 1


# events on two creators, each a follow or not, at a time of 0-5 seconds
_EVENTS = st.lists(
    st.tuples(st.sampled_from(["v1", "v4"]), st.booleans(), st.integers(0, 5)), max_size=10
)


def _latest(events: list[tuple[str, bool, int]], arrival: list[int]) -> set[str]:
    """The model: per creator, the action with the greatest (time, arrival) wins."""
    creator = {"v1": "bob", "v4": "cy"}
    best: dict[str, tuple[int, int, bool]] = {}
    for rank, n in enumerate(arrival):
        video, follow, ts = events[n]
        key = (ts, rank, follow)
        best[creator[video]] = max(best.get(creator[video], key), key)
    return {c for c, (_, _, on) in best.items() if on}


def test_the_table_is_each_pairs_latest_action_in_any_delivery(
    deployment: Deployment,
) -> None:
    """Delivered in any order, the table is each pair's action with the greatest
    (ts, arrival); when the times differ, every delivery order gives the same table."""
    _world(deployment)
    runs = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(_EVENTS, st.randoms(use_true_random=False))
    def check(events: list[tuple[str, bool, int]], rng: Any) -> None:
        user = f"fan{next(runs)}"
        Catalog(deployment).create_user(UserIn(user_id=user, home_region="us"))
        arrival = list(range(len(events)))
        rng.shuffle(arrival)
        for n in arrival:
            video, follow, ts = events[n]
            _send(deployment, user, video, "follow" if follow else "unfollow", ts)
        got = set(_follows(deployment, user))
        assert got == _latest(events, arrival)
        by_pair: dict[str, list[int]] = {}
        for video, _, ts in events:
            by_pair.setdefault(video, []).append(ts)
        if all(len(set(t)) == len(t) for t in by_pair.values()):
            assert got == _latest(events, list(range(len(events))))  # delivery order moot

    check()
