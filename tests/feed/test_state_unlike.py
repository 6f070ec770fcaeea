"""An ``unlike`` in the feed's user state (fyp.feed.state.build_state): it takes back the
user's older likes of the video (no positive, no affinity, fresh or not), is neither a
positive nor a skip itself, and leaves the video acted on; a newer like counts again."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fyp.events.schema import EVENT_TYPES, StoredEvent, play_labels
from fyp.feed.service import FeedService
from fyp.feed.state import UserState, build_state
from fyp.models.region_model import RegionModel
from fyp.regions.deployment import Deployment

LONG = 30_000  # watch_ms of a long play of the fixture's 15 s videos


@pytest.fixture(scope="module")
def model(trained_once: Deployment) -> RegionModel:
    return FeedService(trained_once).model("us")


def event(seq: int, video: str, kind: str, watch_ms: int | None = None) -> StoredEvent:
    labels = play_labels(watch_ms if kind == "play" else None, 15_000)
    return StoredEvent(
        seq,
        f"e{seq}",
        "someone",
        video,
        kind,
        seq,
        watch_ms,
        labels.watch_ratio,
        labels.valid_play,
        labels.long_play,
        labels.short_play,
    )


def fold(
    model: RegionModel, oldest_first: list[tuple[str, str] | tuple[str, str, int]]
) -> UserState:
    """The state of ``(video, kind[, watch_ms])`` events given oldest first, all newer
    than the model (fresh intent), folded newest first as the feed does."""
    base = model.manifest.snapshot.max_seq
    events = [event(base + 1 + n, *e) for n, e in enumerate(oldest_first)]
    return build_state("someone", "us", None, events[::-1], [], model)


def category(model: RegionModel, video: str) -> int:
    return int(model.category[model.video_index[video]])


def test_a_like_taken_back_is_no_positive_and_no_affinity(model: RegionModel) -> None:
    state = fold(model, [("v3", "like"), ("v3", "unlike")])
    assert state.is_new and len(state.positive_weights) == 0
    assert state.category_affinity == {} and state.fresh_affinity == {}
    assert state.skipped == {}, "an unlike is no skip"
    assert "v3" in state.seen and "v3" in (state.acted or {}), "still acted on: not shown again"


def test_a_like_after_the_unlike_counts_again(model: RegionModel) -> None:
    state = fold(model, [("v3", "like"), ("v3", "unlike"), ("v3", "like")])
    item, cat = model.video_index["v3"], category(model, "v3")
    assert state.positives.tolist() == [item]
    assert state.positive_weights.tolist() == [1.0]
    # once: the like before the unlike stays taken back
    assert state.category_affinity == {cat: 1.0} and state.fresh_affinity == {cat: 1.0}


def test_every_like_before_the_unlike_is_taken_back(model: RegionModel) -> None:
    state = fold(model, [("v3", "like"), ("v3", "like"), ("v3", "unlike"), ("v9", "like")])
    assert state.positives.tolist() == [model.video_index["v9"]]
    assert state.category_affinity == {category(model, "v9"): 1.0}


def test_an_unlike_without_a_like_is_neutral(model: RegionModel) -> None:
    state = fold(model, [("v3", "unlike")])
    neutral = fold(model, [("v3", "impression")])
    assert_same(state, neutral)
    assert state.is_new and state.skipped == {} and "v3" in state.seen


def test_an_unlike_takes_back_the_like_not_a_long_play(model: RegionModel) -> None:
    state = fold(model, [("v3", "play", LONG), ("v3", "like"), ("v3", "unlike")])
    cat = category(model, "v3")
    assert state.positives.tolist() == [model.video_index["v3"]]
    assert state.positive_weights.tolist() == [1.0]  # the long play's weight alone
    assert state.category_affinity == {cat: 1.0} and state.fresh_affinity == {cat: 1.0}
    liked = fold(model, [("v3", "play", LONG), ("v3", "like")])
    assert liked.category_affinity == {cat: 2.0}, "without the unlike both count"


def test_an_unlike_of_another_video_takes_nothing_back(model: RegionModel) -> None:
    state = fold(model, [("v3", "like"), ("v9", "unlike")])
    assert state.positives.tolist() == [model.video_index["v3"]]


def assert_same(a: UserState, b: UserState) -> None:
    """Every field of the two states alike (but the memos, worked out on demand, and
    what identifies a state to the caches)."""
    for f in fields(UserState):
        if f.name.startswith("_") or f.name == "served_mask" or not f.init:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def settled(oldest_first: list[StoredEvent]) -> list[StoredEvent]:
    """The same events with the likes an unlike takes back removed and each unlike an
    impression: what an unlike amounts to."""
    out: list[StoredEvent] = []
    for e in oldest_first:
        if e.type == "unlike":
            out = [x for x in out if (x.video_id, x.type) != (e.video_id, "like")]
            e = e._replace(type="impression")
        out.append(e)
    return out


VIDEOS = [*(f"v{k}" for k in range(12)), "not-in-the-model"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(VIDEOS),
            st.sampled_from(["like", "unlike", "unlike", *EVENT_TYPES]),
            st.sampled_from([1_000, 9_000, LONG]),
        ),
        max_size=60,
    ),
    st.integers(0, 60),
)
def test_folding_is_folding_the_settled_events(
    model: RegionModel, drawn: list[tuple[str, str, int]], fresh: int
) -> None:
    """A state is that of the events with taken-back likes removed and unlikes as
    impressions, whatever the mix (long plays, skips, not interested, shares of the
    same videos, likes again, a video the model has not learned)."""
    learned = model.manifest.snapshot.max_seq
    events = []
    for n, (video, kind, watch) in enumerate(drawn):
        # the newest ``fresh`` events are newer than the model, the rest learned
        seq = learned + 1 + n if n >= len(drawn) - fresh else learned - len(drawn) + n
        events.append(event(seq, video, kind, watch if kind in ("play", "skip") else None))

    def state(oldest_first: list[StoredEvent]) -> UserState:
        return build_state("someone", "us", None, oldest_first[::-1], ["v0", "v5"], model)

    assert_same(state(events), state(settled(events)))


def test_an_unlike_done_later_but_sent_first_takes_the_like_back(model: RegionModel) -> None:
    """Apps send events queued offline late: the unlike tapped at 3 on one device
    arrives (lower seq) before the like tapped at 2 on another. By the user's clock the
    unlike is the later action, so the like is taken back; the reverse stands."""
    base = model.manifest.snapshot.max_seq
    unlike_first = [
        event(base + 1, "v3", "unlike")._replace(ts_ms=3),
        event(base + 2, "v3", "like")._replace(ts_ms=2),
    ]
    state = build_state("someone", "us", None, unlike_first[::-1], [], model)
    assert state.is_new and state.category_affinity == {} and "v3" in state.seen
    like_later = [
        event(base + 1, "v3", "unlike")._replace(ts_ms=2),
        event(base + 2, "v3", "like")._replace(ts_ms=3),
    ]
    state = build_state("someone", "us", None, like_later[::-1], [], model)
    assert state.positives.tolist() == [model.video_index["v3"]]
    # a like sent before an unlike done earlier than it stands too
    sent_first = [
        event(base + 1, "v3", "like")._replace(ts_ms=3),
        event(base + 2, "v3", "unlike")._replace(ts_ms=2),
    ]
    state = build_state("someone", "us", None, sent_first[::-1], [], model)
    assert state.positives.tolist() == [model.video_index["v3"]]
