"""Batch ingestion: judged event by event, routed to the home region, stored exactly once."""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.config import Limits, load_config, write_config
from fyp.errors import PayloadTooLarge, StorageError, UnknownRegion
from fyp.events.ingest import Ingestor
from fyp.events.schema import EventIn, play_labels, to_ms
from fyp.regions.deployment import Deployment
from fyp.storage import EventRow
from storage.locking import locked

USERS = {"alice": "us", "bruno": "eu"}
VIDEOS = {"v_us": (["us"], 10_000), "v_eu": (["eu"], 20_000), "v_all": (["us", "eu"], 5_000)}
PAST = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


def populate(deployment: Deployment) -> Deployment:
    catalog = Catalog(deployment)
    for uid, region in USERS.items():
        catalog.create_user(UserIn(user_id=uid, home_region=region))
    for vid, (regions, duration) in VIDEOS.items():
        catalog.create_video(VideoIn(video_id=vid, regions=regions, duration_ms=duration))
    return deployment


@pytest.fixture
def world(deployment: Deployment) -> Deployment:
    return populate(deployment)


@pytest.fixture
def ingestor(world: Deployment) -> Ingestor:
    return Ingestor(world)


def ev(
    event_id: str,
    user_id: str = "alice",
    video_id: str = "v_all",
    type: str = "play",
    watch_ms: int | None = 4_000,
    **extra: Any,
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user_id,
        "video_id": video_id,
        "type": type,
        "ts": PAST.isoformat(),
        **extra,
    }
    if watch_ms is not None:
        raw["watch_ms"] = watch_ms
    return raw


def stored_by_region(d: Deployment) -> dict[str, list[str]]:
    return {r: [e.event_id for e in s.iter_events()] for r, s in d.stores.items()}


def total_events(d: Deployment) -> int:
    return sum(s.count_events() for s in d.stores.values())


# -- batch semantics -------------------------------------------------------------------


def test_mixed_batch_stores_valid_events_and_rejects_the_rest(
    ingestor: Ingestor, world: Deployment
) -> None:
    batch = [
        ev("ok-us"),
        ev("bad-type", type="dance"),
        ev("ghost", user_id="ghost"),
        ev("ok-eu", user_id="bruno", video_id="v_eu", watch_ms=19_000),
        ev("no-video", video_id="nope"),
        ev("neg", watch_ms=-1),
    ]
    result = ingestor.ingest(batch)
    summary = [(r.event_id, r.status, r.error.code if r.error else None) for r in result.results]
    assert summary == [
        ("ok-us", "stored", None),
        ("bad-type", "rejected", "validation_failed"),
        ("ghost", "rejected", "unknown_user"),
        ("ok-eu", "stored", None),
        ("no-video", "rejected", "unknown_video"),
        ("neg", "rejected", "validation_failed"),
    ]
    assert result.counts == {"stored": 2, "duplicate": 0, "rejected": 4}
    assert [r.region for r in result.results if r.status == "stored"] == ["us", "eu"]
    assert stored_by_region(world) == {"us": ["ok-us"], "eu": ["ok-eu"]}
    d = result.to_dict()
    assert (d["stored"], d["duplicate"], d["rejected"]) == (2, 0, 4)
    assert [r["event_id"] for r in d["results"]] == [e["event_id"] for e in batch]
    assert d["results"][2]["error"]["code"] == "unknown_user"
    assert set(d["results"][2]["error"]) == {"code", "message", "status", "details"}


def test_stored_event_carries_labels_from_the_home_region_catalogue(
    ingestor: Ingestor, world: Deployment
) -> None:
    ingestor.ingest([ev("e1", user_id="bruno", video_id="v_eu", watch_ms=19_000)])
    stored = world.store("eu").get_event("e1")
    assert stored is not None
    labels = play_labels(19_000, VIDEOS["v_eu"][1])
    assert stored.watch_ratio == pytest.approx(labels.watch_ratio)
    assert (stored.valid_play, stored.long_play, stored.short_play) == (
        labels.valid_play,
        labels.long_play,
        labels.short_play,
    )
    assert stored.ts_ms == to_ms(PAST)
    assert (stored.user_id, stored.video_id, stored.type) == ("bruno", "v_eu", "play")


def test_event_in_instances_are_accepted(ingestor: Ingestor, world: Deployment) -> None:
    event = EventIn.model_validate(ev("e1"))
    assert ingestor.ingest([event]).results[0].status == "stored"
    assert world.store("us").get_event("e1") is not None


def test_missing_ts_is_the_server_time(ingestor: Ingestor, world: Deployment) -> None:
    before = to_ms(datetime.now(UTC))
    raw = ev("e1")
    del raw["ts"]
    ingestor.ingest([raw])
    after = to_ms(datetime.now(UTC))
    stored = world.store("us").get_event("e1")
    assert stored is not None and before - 1 <= stored.ts_ms <= after + 1


def test_naive_ts_is_utc(ingestor: Ingestor, world: Deployment) -> None:
    naive = PAST.replace(tzinfo=None)
    ingestor.ingest([ev("e1", ts=naive.isoformat())])
    stored = world.store("us").get_event("e1")
    assert stored is not None and stored.ts_ms == to_ms(PAST)


def _future() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("not an object", 42, "validation_failed"),
    ("a string", "event", "validation_failed"),
    ("null", None, "validation_failed"),
    ("a list", [ev("x")], "validation_failed"),
    ("watch_ms not an int", ev("x", watch_ms="abc"), "validation_failed"),  # type: ignore[arg-type]
    ("watch_ms float", ev("x", watch_ms=1.5), "validation_failed"),  # type: ignore[arg-type]
    ("unknown type", ev("x", type="dance"), "validation_failed"),
    ("missing user_id", {k: v for k, v in ev("x").items() if k != "user_id"}, "validation_failed"),
    ("extra field", ev("x", colour="red"), "validation_failed"),
    ("bad event_id", ev("has space"), "validation_failed"),
    ("unknown user", ev("x", user_id="ghost"), "unknown_user"),
    ("unknown video", ev("x", video_id="nope"), "unknown_video"),
    ("video not in the home region", ev("x", user_id="bruno", video_id="v_us"), "unknown_video"),
    ("negative watch_ms", ev("x", watch_ms=-1), "validation_failed"),
    ("absurd watch_ms", ev("x", watch_ms=Limits().max_watch_ms + 1), "validation_failed"),
    ("play without watch_ms", ev("x", watch_ms=None), "validation_failed"),
    ("watch_ms on a like", ev("x", type="like", watch_ms=1_000), "validation_failed"),
    ("ts before 2000", ev("x", ts="1999-12-31T23:59:59Z"), "validation_failed"),
    ("ts far in the future", ev("x", ts="2999-01-01T00:00:00Z"), "validation_failed"),
    ("wrong explicit region", ev("x", region="eu"), "residency_violation"),
    ("undeclared explicit region", ev("x", region="mars"), "validation_failed"),
]


@pytest.mark.parametrize(
    ("raw", "code"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_each_bad_input_is_rejected_with_its_code(
    ingestor: Ingestor, world: Deployment, raw: Any, code: str
) -> None:
    result = ingestor.ingest([raw, ev("good")])
    bad, good = result.results
    assert bad.status == "rejected"
    assert bad.error is not None and bad.error.code == code
    assert 400 <= bad.error.status < 500
    assert good.status == "stored"
    assert total_events(world) == 1  # nothing of the rejected event was written
    assert stored_by_region(world) == {"us": ["good"], "eu": []}


def test_ts_just_in_the_future_is_rejected(ingestor: Ingestor, world: Deployment) -> None:
    result = ingestor.ingest([ev("x", ts=_future())])
    err = result.results[0].error
    assert err is not None and err.code == "validation_failed" and err.details["field"] == "ts"
    assert total_events(world) == 0


@pytest.mark.parametrize(
    "raw",
    [
        ev("zero", watch_ms=0),
        ev("max", watch_ms=Limits().max_watch_ms),
        ev("skip", type="skip", watch_ms=500),
        ev("skip-no-watch", type="skip", watch_ms=None),
        ev("like", type="like", watch_ms=None),
        ev("y2k", ts="2000-01-01T00:00:00Z"),
        ev("right-region", region="us"),
    ],
    ids=lambda raw: raw["event_id"],
)
def test_boundary_events_are_accepted(
    ingestor: Ingestor, world: Deployment, raw: dict[str, Any]
) -> None:
    result = ingestor.ingest([raw])
    assert result.results[0].status == "stored", result.results[0].error
    assert world.store("us").get_event(raw["event_id"]) is not None


def test_small_future_skew_is_tolerated(ingestor: Ingestor, world: Deployment) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    assert ingestor.ingest([ev("e1", ts=soon)]).results[0].status == "stored"


def test_region_argument_must_match_the_home_region(ingestor: Ingestor, world: Deployment) -> None:
    result = ingestor.ingest([ev("a1"), ev("b1", user_id="bruno", video_id="v_eu")], region="us")
    assert [r.status for r in result.results] == ["stored", "rejected"]
    err = result.results[1].error
    assert err is not None and err.code == "residency_violation"
    assert err.details == {"user_id": "bruno", "home_region": "eu", "region": "us"}
    assert stored_by_region(world) == {"us": ["a1"], "eu": []}


def test_undeclared_region_argument_refuses_the_whole_batch(
    ingestor: Ingestor, world: Deployment
) -> None:
    with pytest.raises(UnknownRegion):
        ingestor.ingest([ev("a1")], region="mars")
    assert total_events(world) == 0


def test_a_wrong_region_argument_is_refused_even_if_the_event_names_its_region(
    ingestor: Ingestor, world: Deployment
) -> None:
    result = ingestor.ingest([ev("a1", region="us")], region="eu")
    assert result.results[0].status == "rejected"
    assert total_events(world) == 0


# -- limits ----------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Deployment]:
    """A deployment whose fyp.toml sets max_batch = 3 and max_watch_ms = 60 s."""
    root = tmp_path / "small"
    Deployment.init(root, ["us", "eu"]).close()
    config = load_config(root)
    write_config(dataclasses.replace(config, limits=Limits(max_batch=3, max_watch_ms=60_000)))
    d = populate(Deployment.open(root))
    yield d
    d.close()


def test_batch_over_the_limit_is_refused_whole(small: Deployment) -> None:
    ingestor = Ingestor(small)
    with pytest.raises(PayloadTooLarge) as info:
        ingestor.ingest([ev(f"e{i}") for i in range(4)])
    assert info.value.details == {"limit": 3, "size": 4}
    assert info.value.status == 413
    assert total_events(small) == 0
    assert ingestor.ingest([ev(f"e{i}") for i in range(3)]).counts["stored"] == 3


def test_configured_watch_limit_applies(small: Deployment) -> None:
    result = Ingestor(small).ingest([ev("ok", watch_ms=60_000), ev("long", watch_ms=60_001)])
    assert [r.status for r in result.results] == ["stored", "rejected"]
    err = result.results[1].error
    assert err is not None and err.details == {"field": "watch_ms"}


# -- exactly once ------------------------------------------------------------------------


def test_a_retry_after_the_video_went_is_still_a_duplicate(
    ingestor: Ingestor, world: Deployment
) -> None:
    assert ingestor.ingest([ev("kept")]).results[0].status == "stored"
    for region in world.regions:  # the video is withdrawn everywhere after the event
        world.store(region).delete_video("v_all")
    again = ingestor.ingest([ev("kept"), ev("new-one")])
    assert again.results[0].status == "duplicate" and again.results[0].error is None
    err = again.results[1].error
    assert again.results[1].status == "rejected" and err is not None
    assert err.code == "unknown_video"


def test_repeat_across_batches_is_a_duplicate(ingestor: Ingestor, world: Deployment) -> None:
    first = ingestor.ingest([ev("e1", watch_ms=1_000)])
    again = ingestor.ingest([ev("e1", watch_ms=1_000), ev("e2")])
    assert first.results[0].status == "stored"
    assert [r.status for r in again.results] == ["duplicate", "stored"]
    assert again.results[0].region == "us"
    assert again.counts == {"stored": 1, "duplicate": 1, "rejected": 0}
    stored = world.store("us").get_event("e1")
    assert stored is not None and stored.watch_ms == 1_000
    assert total_events(world) == 2


def test_an_id_reused_for_another_event_is_a_conflict(
    ingestor: Ingestor, world: Deployment
) -> None:
    """A client whose ids clash (per-device counters) was told 'duplicate' and lost the
    second event without knowing (acceptance review): now 409, nothing overwritten."""
    assert ingestor.ingest([ev("c1", watch_ms=1_000)]).results[0].status == "stored"
    others = [
        ev("c1", watch_ms=9_000),  # another watch time
        ev("c1", type="like", watch_ms=None),
        {**ev("c1", watch_ms=1_000), "ts": "2024-01-01T00:00:00Z"},  # a time it did not have
    ]
    for other in others:
        result = ingestor.ingest([other]).results[0]
        assert result.status == "rejected" and result.error is not None, other
        assert result.error.code == "already_exists" and result.error.status == 409
    within = ingestor.ingest([ev("c2", watch_ms=5), ev("c2", watch_ms=6), ev("c2", watch_ms=5)])
    assert [r.status for r in within.results] == ["stored", "rejected", "duplicate"]
    # stored already: a clashing copy first does not make the exact retry after it a clash
    mixed = ingestor.ingest([ev("c1", type="share", watch_ms=None), ev("c1", watch_ms=1_000)])
    assert [r.status for r in mixed.results] == ["rejected", "duplicate"]
    stored = world.store("us").get_event("c1")
    assert stored is not None and stored.watch_ms == 1_000 and stored.type == "play"


def test_repeat_inside_a_batch_is_stored_once(ingestor: Ingestor, world: Deployment) -> None:
    result = ingestor.ingest([ev("e1"), ev("e2"), ev("e1"), ev("e1")])
    assert [r.status for r in result.results] == ["stored", "stored", "duplicate", "duplicate"]
    assert stored_by_region(world)["us"] == ["e1", "e2"]


def test_duplicate_status_means_the_event_is_stored(ingestor: Ingestor, world: Deployment) -> None:
    result = ingestor.ingest([ev("e1", video_id="nope"), ev("e1")])
    for r in result.results:
        if r.status == "duplicate":
            assert world.store("us").get_event("e1") is not None


def test_stale_route_rejects_only_that_users_events(ingestor: Ingestor, world: Deployment) -> None:
    ingestor.ingest([ev("warm")])  # caches alice -> us
    with Deployment.open(world.config.root) as other:
        Catalog(other).delete_user("alice")
    result = ingestor.ingest([ev("a2"), ev("b2", user_id="bruno", video_id="v_eu")])
    assert [r.status for r in result.results] == ["rejected", "stored"]


def test_a_region_whose_store_fails_has_its_events_rejected_as_retryable(
    ingestor: Ingestor, world: Deployment
) -> None:
    """A cross-region batch whose second region's store was locked raised after the
    first region's events were committed: the client got a 500 and no word of which
    events were stored (chaos report #6)."""
    batch = [
        ev("b1", user_id="bruno", video_id="v_eu"),  # eu first: its failure must not stop us
        ev("a1"),
        {"event_id": "bad"},
        ev("b2", user_id="bruno", video_id="v_eu"),
    ]
    with locked(world, "eu"):
        result = ingestor.ingest(batch)
    assert [r.status for r in result.results] == ["rejected", "stored", "rejected", "rejected"]
    for r in (result.results[0], result.results[3]):
        assert r.region == "eu" and r.error is not None
        assert r.error.to_dict()["code"] == "storage_error"
        assert r.error.to_dict()["status"] == 503 and "retry" in r.error.message
    assert result.results[2].error is not None and result.results[2].error.status == 422
    assert stored_by_region(world) == {"us": ["a1"], "eu": []}
    again = ingestor.ingest(batch)  # the retry stores exactly the missing events
    assert [r.status for r in again.results] == ["stored", "duplicate", "rejected", "stored"]
    assert sorted(stored_by_region(world)["eu"]) == ["b1", "b2"] and total_events(world) == 3


def test_a_batch_none_of_which_could_be_stored_is_refused_whole(
    ingestor: Ingestor, world: Deployment
) -> None:
    batch = [ev("b1", user_id="bruno", video_id="v_eu"), ev("a1"), {"event_id": "bad"}]
    with locked(world, "us"), locked(world, "eu"), pytest.raises(StorageError) as caught:
        ingestor.ingest(batch)
    assert caught.value.status == 503 and caught.value.details == {"regions": ["eu", "us"]}
    assert total_events(world) == 0
    with locked(world, "eu"), pytest.raises(StorageError):  # one region, the only one written
        ingestor.ingest([batch[0], batch[2]])
    assert [r.status for r in ingestor.ingest(batch).results] == ["stored", "stored", "rejected"]


# -- listeners ------------------------------------------------------------------------


def test_listeners_get_only_newly_stored_rows(ingestor: Ingestor) -> None:
    calls: list[tuple[str, list[str]]] = []

    def listener(region: str, rows: Sequence[EventRow]) -> None:
        calls.append((region, [r.event_id for r in rows]))

    ingestor.subscribe(listener)
    ingestor.ingest(
        [ev("a1"), ev("b1", user_id="bruno", video_id="v_eu"), ev("bad", user_id="ghost")]
    )
    assert sorted(calls) == [("eu", ["b1"]), ("us", ["a1"])]
    calls.clear()
    ingestor.ingest([ev("a1"), ev("a2"), ev("a2"), ev("b1", user_id="bruno", video_id="v_eu")])
    assert calls == [("us", ["a2"])]
    calls.clear()
    ingestor.ingest([ev("a1"), ev("neg", watch_ms=-5)])
    assert calls == []


def test_listener_rows_are_the_stored_rows(ingestor: Ingestor, world: Deployment) -> None:
    rows: list[EventRow] = []
    ingestor.subscribe(lambda region, batch: rows.extend(batch))
    ingestor.ingest([ev("a1", watch_ms=4_000)])
    (row,) = rows
    stored = world.store("us").get_event("a1")
    assert stored is not None
    assert row.event_id == stored.event_id and row.ts_ms == stored.ts_ms
    assert row.watch_ratio == stored.watch_ratio and row.valid_play == stored.valid_play


# -- property: exactly once, in the home region only --------------------------------------

HOME = {"alice": "us", "bruno": "eu", "ghost": None}
PUBLISHED = {"v_us": {"us"}, "v_eu": {"eu"}, "v_all": {"us", "eu"}, "nope": set()}
POOL = [f"p{i}" for i in range(8)]

specs = st.fixed_dictionaries(
    {
        "user_id": st.sampled_from(sorted(HOME)),
        "video_id": st.sampled_from(sorted(PUBLISHED)),
        "type": st.sampled_from(["play", "like", "skip"]),
        "watch_ms": st.sampled_from([None, 0, 8_000, -5]),
        "region": st.sampled_from([None, "us", "eu"]),
    }
)


def is_valid(spec: dict[str, Any]) -> bool:
    home = HOME[spec["user_id"]]
    watch = spec["watch_ms"]
    return (
        home is not None
        and spec["region"] in (None, home)
        and home in PUBLISHED[spec["video_id"]]
        and not (spec["type"] == "play" and watch is None)
        and (watch is None or (spec["type"] in ("play", "skip") and watch >= 0))
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.fixed_dictionaries({eid: specs for eid in POOL}),
    batches=st.lists(st.lists(st.sampled_from(POOL), max_size=8), max_size=6),
)
def test_stored_events_are_exactly_the_valid_ones_once_in_their_home(
    pool: dict[str, dict[str, Any]], batches: list[list[str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Deployment.init(Path(tmp) / "d", ["us", "eu"]) as d:
        populate(d)
        ingestor = Ingestor(d)
        heard: list[str] = []
        ingestor.subscribe(lambda region, rows: heard.extend(r.event_id for r in rows))
        statuses: dict[str, Counter[str]] = {eid: Counter() for eid in POOL}
        for batch in batches:
            raws = [{"event_id": eid, "ts": PAST.isoformat(), **pool[eid]} for eid in batch]
            raws = [{k: v for k, v in raw.items() if v is not None} for raw in raws]
            for eid, r in zip(batch, ingestor.ingest(raws).results, strict=True):
                assert r.event_id == eid
                statuses[eid][r.status] += 1

        sent = {eid for batch in batches for eid in batch}
        valid = {eid for eid in sent if is_valid(pool[eid])}
        where = stored_by_region(d)
        everywhere = [eid for ids in where.values() for eid in ids]
        assert sorted(everywhere) == sorted(valid)  # each valid id once, nothing else
        for region, ids in where.items():
            for eid in ids:
                assert HOME[pool[eid]["user_id"]] == region
                stored = d.store(region).get_event(eid)
                assert stored is not None
                assert (stored.user_id, stored.video_id, stored.type, stored.watch_ms) == (
                    pool[eid]["user_id"],
                    pool[eid]["video_id"],
                    pool[eid]["type"],
                    pool[eid]["watch_ms"],
                )
        for eid in sent:
            if eid in valid:
                assert statuses[eid]["stored"] == 1
                assert statuses[eid]["rejected"] == 0
            else:
                assert statuses[eid]["stored"] == 0
        assert sorted(heard) == sorted(valid)
