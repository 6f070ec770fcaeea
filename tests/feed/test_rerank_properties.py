"""The greedy re-ranker picks exactly what the straightforward greedy scan picks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.errors import ConfigError
from fyp.feed.rerank import RerankParams, diversify


def full_scan(
    model: Any, pool: Any, scores: np.ndarray, n: int, p: RerankParams, recent: Any
) -> list[int]:
    """The straightforward greedy: rescore the whole shortlist at every step."""
    short = np.argsort(-scores, kind="stable")[: min(max(n * 8, 50), 200)]
    top = scores[short].astype(np.float64)  # as the re-ranker: ties must tie the same
    utility = top - top.min() + 1e-6
    creators = model.creator[pool.items[short]]
    categories = model.category[pool.items[short]]
    creator_pen = np.ones(len(short))
    category_pen = np.ones(len(short))
    open_ = np.ones(len(short), bool)
    tags = model.tag_bits[pool.items[short]]
    window = [] if recent is None else model.tag_bits[recent[: p.tag_window]][::-1].tolist()
    chosen: list[int] = []
    last_creator = -1
    for _ in range(min(n, len(short))):
        recent_tags = 0
        for bits in window[-p.tag_window :] if p.tag_window else []:
            recent_tags |= bits
        tag_pen = np.where((tags & np.uint64(recent_tags)) != 0, p.tag_decay, 1.0)
        u = np.where(open_, utility * creator_pen * category_pen * tag_pen, -1.0)
        if last_creator >= 0:
            u[creators == last_creator] = -1.0
        best = int(np.argmax(u))
        if u[best] < 0:
            break
        chosen.append(int(short[best]))
        window.append(int(tags[best]))
        open_[best] = False
        last_creator = int(creators[best])
        if last_creator >= 0:
            same = creators == last_creator
            creator_pen[same] = np.maximum(p.floor, creator_pen[same] * p.creator_decay)
        if categories[best] >= 0:
            same = categories == categories[best]
            category_pen[same] = np.maximum(p.floor, category_pen[same] * p.category_decay)
    return chosen


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    size=st.integers(1, 120),
    n=st.integers(1, 25),
    creators=st.integers(1, 6),
    categories=st.integers(1, 5),
    scan_depth=st.sampled_from([0, 1, 3, 64, 10_000]),
)
def test_greedy_equals_the_full_scan(
    data: st.DataObject, size: int, n: int, creators: int, categories: int, scan_depth: int
) -> None:
    """Whether picks are scanned, done over arrays, or switch from one to the other."""
    catalogue = size + 5
    levels = st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 7.0])  # few levels: many ties
    model = SimpleNamespace(
        creator=np.asarray(
            data.draw(st.lists(st.integers(-1, creators), min_size=catalogue, max_size=catalogue))
        ),
        category=np.asarray(
            data.draw(st.lists(st.integers(-1, categories), min_size=catalogue, max_size=catalogue))
        ),
        tag_bits=np.asarray(
            data.draw(st.lists(st.integers(0, 15), min_size=catalogue, max_size=catalogue)),
            np.uint64,
        ),
    )
    scores = np.asarray(data.draw(st.lists(levels, min_size=size, max_size=size)), np.float32)
    recent = np.asarray(data.draw(st.lists(st.integers(0, catalogue - 1), max_size=6)), np.int64)
    factor = st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0])
    p = RerankParams(
        creator_decay=data.draw(factor),
        category_decay=data.draw(factor),
        floor=data.draw(factor),
        tag_decay=data.draw(factor),
        tag_window=data.draw(st.integers(0, 5)),
    )

    class Sized(SimpleNamespace):
        def __len__(self) -> int:
            return size

    sized = Sized(items=np.arange(size, dtype=np.int64))
    assert diversify(model, sized, scores, n, p, recent, scan_depth) == full_scan(
        model, sized, scores, n, p, recent
    )  # type: ignore[arg-type]


def test_a_tag_window_of_zero_keeps_no_look_alikes_apart() -> None:
    model = SimpleNamespace(
        creator=np.full(4, -1),
        category=np.full(4, -1),
        tag_bits=np.asarray([1, 1, 2, 4], np.uint64),
    )

    class Sized(SimpleNamespace):
        def __len__(self) -> int:
            return 4

    pool = Sized(items=np.arange(4, dtype=np.int64))
    scores = np.asarray([3.0, 2.5, 2.4, 0.0])
    for depth in (0, 64):  # over arrays, and scanned
        window_4 = diversify(model, pool, scores, 2, RerankParams(), None, depth)  # type: ignore[arg-type]
        window_0 = diversify(model, pool, scores, 2, RerankParams(tag_window=0), None, depth)  # type: ignore[arg-type]
        assert window_4 == [0, 2]  # the second of tag 1 waits
        assert window_0 == [0, 1]  # by score alone


def test_penalties_must_be_factors_of_at_most_one() -> None:
    with pytest.raises(ConfigError, match="tag_decay"):
        RerankParams(tag_decay=1.5)
    with pytest.raises(ConfigError, match="floor"):
        RerankParams(floor=-0.1)


def test_exploration_slots_sit_in_the_second_half_at_the_configured_share() -> None:
    from fyp.feed.candidates import Candidates
    from fyp.feed.pool import merge
    from fyp.feed.rerank import explore

    n_items = 60
    model = SimpleNamespace(
        likes=np.zeros(n_items, np.int64),
        impressions=np.full(n_items, 3, np.int64),
        tag_bits=np.zeros(n_items, np.uint64),  # untagged: nothing is a look-alike
    )
    ranked = Candidates("trending", np.arange(40), np.ones(40, np.float32), lambda _r: "")
    fresh = Candidates("fresh", np.arange(40, 60), np.ones(20, np.float32), lambda _r: "")
    pool = merge([ranked, fresh], n_items)
    chosen = list(range(20))  # rows 0..19 of the pool: the trending videos
    p = RerankParams(exploration_share=0.05)
    inserted = 0
    for seed in range(400):
        out = explore(model, pool, chosen, 10, p, np.random.default_rng(seed))  # type: ignore[arg-type]
        assert out == explore(model, pool, chosen, 10, p, np.random.default_rng(seed))  # type: ignore[arg-type]
        assert [r for r in out if r < 40] == chosen  # the ranked order is kept
        for pos, row in enumerate(out[:10]):
            if row >= 40:
                assert pos >= 5  # first half: the surest bets
        inserted += sum(1 for r in out[:10] if r >= 40)
    assert abs(inserted / (400 * 10) - 0.05) < 0.015  # the share holds on a short page


def test_an_exploration_pick_is_never_a_look_alike_of_its_neighbours() -> None:
    from fyp.feed.candidates import Candidates
    from fyp.feed.pool import merge
    from fyp.feed.rerank import explore

    n_items = 60
    # ranked videos carry tags 1, 2 or 4; half the fresh ones share tag 1, half have 8
    bits = [1 << (i % 3) for i in range(40)] + [1 if i % 2 else 8 for i in range(20)]
    model = SimpleNamespace(
        likes=np.zeros(n_items, np.int64),
        impressions=np.full(n_items, 3, np.int64),
        tag_bits=np.asarray(bits, np.uint64),
    )
    ranked = Candidates("trending", np.arange(40), np.ones(40, np.float32), lambda _r: "")
    fresh = Candidates("fresh", np.arange(40, 60), np.ones(20, np.float32), lambda _r: "")
    pool = merge([ranked, fresh], n_items)
    recent = np.asarray([41, 0], np.int64)  # the user just watched tags 1 (fresh) and 1
    p = RerankParams(exploration_share=0.3)
    inserted = 0
    for seed in range(200):
        for page, chosen in ((10, list(range(20))), (1, [2])):  # a page, and one video
            out = explore(model, pool, chosen, page, p, np.random.default_rng(seed), recent)  # type: ignore[arg-type]
            assert [r for r in out if r < 40] == chosen
            shown = [*[int(i) for i in recent[::-1]], *(int(pool.items[r]) for r in out)]
            for pos, row in enumerate(out):
                if row < 40:
                    continue
                inserted += 1
                at = pos + len(recent)
                near = shown[max(0, at - 4) : at] + shown[at + 1 : at + 5]
                assert not any(bits[int(pool.items[row])] & bits[v] for v in near)
    assert inserted > 100  # the fresh videos of tag 8 still get their slots
