"""Training and ``unlike``: a like a later unlike takes back is neither an interaction
weight nor a ``like`` label; a like after the unlike counts; every event read, unlikes
too, is still hashed into the snapshot."""

from __future__ import annotations

from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from consent_helpers import BACKENDS, USERS, VIDEOS, build, live, on_backend, train
from test_training_consent import LEARNED

from fyp.events.ingest import Ingestor
from fyp.events.schema import StoredEvent, play_labels
from fyp.models.artifacts import EventHasher
from fyp.models.ranker import OBJECTIVES
from fyp.models.training import read_interactions

LIKE, SHARE, LONG_PLAY = OBJECTIVES.index("like"), OBJECTIVES.index("share"), 0


def event(seq: int, user: str, video: str, kind: str, watch_ms: int | None = None) -> StoredEvent:
    labels = astuple(play_labels(watch_ms, 20_000))
    return StoredEvent(seq, f"e{seq}", user, video, kind, 1000 * seq, watch_ms, *labels)


STREAM = [  # seq order, as training reads a store
    event(1, "u1", "v1", "like"),  # taken back at 2
    event(2, "u1", "v1", "unlike"),
    event(3, "u1", "v2", "like"),  # taken back at 5
    event(4, "u2", "v1", "like"),  # taken back at 10
    event(5, "u1", "v2", "unlike"),
    event(6, "u1", "v2", "like"),  # after the unlike: counts
    event(7, "u3", "v3", "unlike"),  # nothing to take back
    event(8, "u1", "v1", "share"),  # not a like: an unlike before it does not matter
    event(9, "u2", "v3", "play", 30_000),  # a long play
    event(10, "u2", "v1", "unlike"),
]
INDEX = {"v1": 0, "v2": 1, "v3": 2}


def test_taken_back_likes_are_no_weight_and_no_label() -> None:
    """Worked out by hand from STREAM."""
    hasher = EventHasher()
    data = read_interactions(iter(STREAM), INDEX, hasher)
    assert data.users == ["u1", "u2"]  # u3 has nothing to learn from
    # (user, item, weight, ts): u1's like of v2 at 6, share of v1 at 8; u2's long play of v3
    assert list(zip(data.u, data.i, data.w, data.ts, strict=True)) == [
        (0, 1, 1.0, 6000),
        (0, 0, 1.5, 8000),
        (1, 2, 1.0, 9000),
    ]
    assert list(zip(data.obj_u, data.obj_i, data.obj_k, data.obj_ts, strict=True)) == [
        (0, 1, LIKE, 6000),
        (0, 0, SHARE, 8000),
        (1, 2, LONG_PLAY, 9000),
    ]
    assert data.likes.tolist() == [1, 1, 1]  # positive events per video, taken back ones not
    assert data.impressions.tolist() == [0, 0, 1]
    # the snapshot is what was read: every event, unlikes and taken-back likes too
    everything = EventHasher()
    for e in STREAM:
        everything.add(e.seq, e.event_id, e.user_id, e.video_id, e.type, e.ts_ms)
    assert (hasher.count, hasher.hexdigest()) == (10, everything.hexdigest())


def test_a_user_left_out_is_left_out_of_unlikes_too() -> None:
    data = read_interactions(iter(STREAM), INDEX, EventHasher(), lambda user: user != "u2")
    assert data.users == ["u1"] and data.excluded == {"u2"}
    assert list(zip(data.u, data.i, data.w, strict=True)) == [(0, 1, 1.0), (0, 0, 1.5)]


def test_without_unlikes_every_like_counts() -> None:
    kept = [e for e in STREAM if e.type != "unlike"]
    data = read_interactions(iter(kept), INDEX, EventHasher())
    assert data.obj_k.count(LIKE) == 4 and data.likes.tolist() == [3, 2, 1]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    with on_backend(request.param, monkeypatch):
        yield request.param


def taken_back(everything: bool) -> list[dict[str, Any]]:
    """Ten users like a video nobody else engages with and take the like back (one likes
    it again after); with ``everything`` False only what is left: the like again."""
    at = datetime(2026, 1, 10, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    for n, user in enumerate(USERS[:10]):
        video = VIDEOS[280 + n]
        kinds = ["like", "unlike", "like"] if n == 0 else ["like", "unlike"]
        for k, kind in enumerate(kinds):
            out.append(
                {
                    "event_id": f"back-{n}-{k}",
                    "user_id": user,
                    "video_id": video,
                    "type": kind,
                    "ts": (at + timedelta(minutes=3 * n + k)).isoformat(),
                }
            )
    lone = {**out[0], "event_id": "lone", "video_id": VIDEOS[290], "type": "unlike"}
    out.append(lone)  # an unlike of a video the user never liked
    return out if everything else [out[2]]


def test_the_models_are_those_of_a_store_without_the_taken_back_likes(
    tmp_path: Path, backend: str
) -> None:
    d = build(tmp_path / "with", with_objector=False)
    without = build(tmp_path / "without", with_objector=False)
    try:
        Ingestor(d).ingest(taken_back(everything=True))
        Ingestor(without).ingest(taken_back(everything=False))
        manifest, expected_manifest = train(d), train(without)
        _, arrays = live(d)
        _, expected = live(without)
        for name in (*LEARNED, "user_factors", "user_ids"):
            np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)
        index = {str(v): n for n, v in enumerate(arrays["video_ids"])}
        assert arrays["likes"][index[VIDEOS[280]]] == 1  # liked again
        assert all(arrays["likes"][index[VIDEOS[280 + n]]] == 0 for n in range(1, 10))
        heads = sorted(k for k in arrays if k.startswith("ranker_"))
        assert heads and heads == sorted(k for k in expected if k.startswith("ranker_"))
        for name in heads:  # the same labels: the same heads
            assert str(arrays[name]) == str(expected[name]), name
        assert (
            manifest.metrics["ranker"]["positives_per_objective"]
            == (expected_manifest.metrics["ranker"]["positives_per_objective"])
        )
        assert manifest.metrics["positives"] == expected_manifest.metrics["positives"]
        # every event read is in the snapshot: the 20 taken back (10 likes, 10 unlikes)
        # and the lone unlike too
        assert manifest.snapshot.event_count == expected_manifest.snapshot.event_count + 21
    finally:
        d.close()
        without.close()


def test_an_unlike_done_later_takes_the_like_back_whichever_arrived_first() -> None:
    """By the client's time (``ts_ms``), then arrival: a like at 2 s sent after an
    unlike at 3 s is taken back; a like at 5 s sent after an unlike at 4 s stands; of
    two at the same time the later arrival wins."""
    stream = [
        event(1, "u1", "v1", "unlike")._replace(ts_ms=3000),
        event(2, "u1", "v1", "like")._replace(ts_ms=2000),  # taken back by the unlike at 3
        event(3, "u1", "v2", "unlike")._replace(ts_ms=4000),
        event(4, "u1", "v2", "like")._replace(ts_ms=5000),  # stands
        event(5, "u2", "v1", "like")._replace(ts_ms=6000),  # stands: done after the unlike
        event(6, "u2", "v1", "unlike")._replace(ts_ms=5000),
        event(7, "u2", "v3", "like")._replace(ts_ms=7000),  # taken back: same time, later
        event(8, "u2", "v3", "unlike")._replace(ts_ms=7000),
    ]
    data = read_interactions(iter(stream), INDEX, EventHasher())
    assert list(zip(data.u, data.i, data.ts, strict=True)) == [(0, 1, 5000), (1, 0, 6000)]
    assert list(zip(data.obj_u, data.obj_i, data.obj_k, strict=True)) == [
        (0, 1, LIKE),
        (1, 0, LIKE),
    ]
    assert data.likes.tolist() == [1, 1, 0]
