"""Play labels (KuaiRec definitions), the event model and timestamp conversion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fyp.catalog.models import MAX_DURATION_MS
from fyp.events.schema import NO_PLAY, EventIn, EventType, PlayLabels, play_labels, to_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("duration_ms", "watch_ms", "valid", "long", "short"),
    [
        # 10 s video watched 7 s: valid (>= 7 s), not long, not short.
        (10_000, 7_000, True, False, False),
        (10_000, 6_999, False, False, False),
        # 5 s video watched to the end: the whole video is both valid and long.
        (5_000, 5_000, True, True, False),
        # Watching past the end (loops) is still the whole video.
        (10_000, 25_000, True, True, False),
        # 2 s video watched 1.9 s: short, because 1.9 s < min(3 s, 2 s).
        (2_000, 1_900, False, False, True),
        (2_000, 2_000, True, True, False),
        # 60 s video watched 2.9 s: short; exactly 3 s is no longer short.
        (60_000, 2_900, False, False, True),
        (60_000, 3_000, False, False, False),
        (60_000, 0, False, False, True),
        # The 18 s long-play threshold.
        (60_000, 17_999, True, False, False),
        (60_000, 18_000, True, True, False),
        # A 1 ms video watched 0 ms is short (0 < min(3 s, 1 ms)).
        (1, 0, False, False, True),
    ],
)
def test_play_labels_hand_computed(
    duration_ms: int, watch_ms: int, valid: bool, long: bool, short: bool
) -> None:
    labels = play_labels(watch_ms, duration_ms)
    assert (labels.valid_play, labels.long_play, labels.short_play) == (valid, long, short)


@pytest.mark.parametrize(
    ("duration_ms", "watch_ms", "ratio"),
    [(10_000, 7_000, 0.7), (5_000, 5_000, 1.0), (10_000, 25_000, 2.5), (60_000, 0, 0.0)],
)
def test_watch_ratio(duration_ms: int, watch_ms: int, ratio: float) -> None:
    assert play_labels(watch_ms, duration_ms).watch_ratio == pytest.approx(ratio)


def test_no_watch_time_means_no_play_labels() -> None:
    labels = play_labels(None, 10_000)
    assert labels == NO_PLAY == PlayLabels(None, False, False, False)


durations = st.integers(min_value=1, max_value=MAX_DURATION_MS)
watches = st.integers(min_value=0, max_value=4 * 3600 * 1000)


@given(durations, watches, watches)
def test_play_labels_are_consistent_and_monotone(duration: int, w1: int, w2: int) -> None:
    lo, hi = sorted((w1, w2))
    a, b = play_labels(lo, duration), play_labels(hi, duration)
    for labels, watch in ((a, lo), (b, hi)):
        assert labels.watch_ratio == pytest.approx(watch / duration)
        # long => valid; short => neither valid nor long (short < 3 s < 7 s and < whole).
        assert not labels.long_play or labels.valid_play
        assert not labels.short_play or not (labels.valid_play or labels.long_play)
        # Watching the whole video is always a valid and long play, never a short one.
        if watch >= duration:
            assert labels.valid_play and labels.long_play and not labels.short_play
    # Watching longer never loses valid/long and never gains short.
    assert b.valid_play >= a.valid_play
    assert b.long_play >= a.long_play
    assert b.short_play <= a.short_play


# -- to_ms ------------------------------------------------------------------------


def test_to_ms_naive_is_utc() -> None:
    naive = datetime(2024, 5, 17, 12, 30, 15)
    aware = naive.replace(tzinfo=UTC)
    assert to_ms(naive) == to_ms(aware) == (aware - EPOCH) // timedelta(milliseconds=1)


def test_to_ms_respects_offsets() -> None:
    plus2 = datetime(2024, 5, 17, 14, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    utc = datetime(2024, 5, 17, 12, 30, 15, tzinfo=UTC)
    assert to_ms(plus2) == to_ms(utc)
    naive_local_wallclock = datetime(2024, 5, 17, 14, 30, 15)  # read as UTC
    assert to_ms(naive_local_wallclock) - to_ms(plus2) == 2 * 3600 * 1000


def test_to_ms_epoch() -> None:
    assert to_ms(EPOCH) == 0
    assert to_ms(datetime(1970, 1, 1)) == 0


@given(st.integers(min_value=946_684_800, max_value=4_102_444_800))
def test_to_ms_whole_seconds_are_exact(seconds: int) -> None:
    assert to_ms(EPOCH + timedelta(seconds=seconds)) == seconds * 1000


def test_to_ms_is_exact_to_the_millisecond() -> None:
    ts = datetime(2004, 3, 22, 1, 32, 9, 416_000, tzinfo=UTC)
    assert to_ms(ts) == (ts - EPOCH) // timedelta(milliseconds=1) == 1_079_919_129_416


# -- EventIn ------------------------------------------------------------------------


def test_event_in_accepts_a_minimal_event() -> None:
    e = EventIn.model_validate(
        {"event_id": "e1", "user_id": "u1", "video_id": "v1", "type": "like"}
    )
    assert e.type is EventType.like
    assert e.watch_ms is None and e.ts is None and e.region is None


@pytest.mark.parametrize(
    "patch",
    [
        {"type": "dance"},
        {"watch_ms": "abc"},
        {"watch_ms": "1000"},  # strict: a numeric string is not an int
        {"watch_ms": 1000.0},  # strict: nor is a float
        {"watch_ms": True},
        {"event_id": ""},
        {"event_id": "has space"},
        {"event_id": "x" * 129},
        {"user_id": "u/1"},
        {"video_id": "v" * 65},
        {"region": "US"},
        {"ts": "yesterday"},
        {"extra": 1},
    ],
)
def test_event_in_rejects_bad_fields(patch: dict[str, object]) -> None:
    raw = {"event_id": "e1", "user_id": "u1", "video_id": "v1", "type": "play", "watch_ms": 1}
    with pytest.raises(ValidationError):
        EventIn.model_validate({**raw, **patch})


def test_event_types_are_stable() -> None:
    assert {t.value for t in EventType} == {
        "impression",
        "play",
        "like",
        "unlike",
        "share",
        "comment",
        "follow",
        "unfollow",
        "skip",
        "not_interested",
        "report",
    }
