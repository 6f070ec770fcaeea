"""Pipeline stages: filters log each removal and why; proposals are cached per state."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.feed.candidates import Candidates, CandidateSource
from fyp.feed.filters import AlreadySeen, Eligibility, Filter
from fyp.feed.pool import Pool, RemovedLog, merge
from fyp.feed.state import UserState

N_ITEMS = 8


def model() -> Any:
    ids = np.asarray([f"v{i}" for i in range(N_ITEMS)], dtype=np.str_)
    return SimpleNamespace(
        n_items=N_ITEMS, video_ids=ids, video_index={str(v): i for i, v in enumerate(ids)}
    )


def state(seen: Iterable[str] = ()) -> UserState:
    return UserState(
        user_id="u",
        region="us",
        age=None,
        positives=np.zeros(0, np.int64),
        positive_weights=np.zeros(0, np.float32),
        seen=dict.fromkeys(seen),
    )


def pool_of(items: Sequence[int]) -> Pool:
    found = Candidates(
        "test", np.asarray(items, np.int64), np.ones(len(items), np.float32), lambda _r: ""
    )
    return merge([found], N_ITEMS)


class OddOut(Filter):
    """Removes odd items, each with its own reason (the dict form of a filter)."""

    name = "odd_out"

    def reasons(self, model: Any, state: UserState, items: np.ndarray) -> dict[int, str]:
        return {row: f"item {int(i)} is odd" for row, i in enumerate(items) if i % 2}


def test_already_seen_keeps_the_rest_and_logs_each_removal_with_one_reason() -> None:
    m = model()
    out = AlreadySeen().apply(m, state({"v1", "v4", "v9"}), pool_of(range(6)))
    assert out.items.tolist() == [0, 2, 3, 5]
    assert [r.__dict__ for r in out.removed] == [
        {"video_id": "v1", "stage": "already_seen", "reason": "already seen"},
        {"video_id": "v4", "stage": "already_seen", "reason": "already seen"},
    ]


def test_per_row_reasons_survive_and_later_stages_share_the_log() -> None:
    m = model()
    first = OddOut().apply(m, state(), pool_of(range(N_ITEMS)))
    second = AlreadySeen().apply(m, state({"v2"}), first)
    assert second.items.tolist() == [0, 4, 6]
    assert second.removed is first.removed  # one log per feed request
    assert [(r.video_id, r.stage, r.reason) for r in second.removed] == [
        ("v1", "odd_out", "item 1 is odd"),
        ("v3", "odd_out", "item 3 is odd"),
        ("v5", "odd_out", "item 5 is odd"),
        ("v7", "odd_out", "item 7 is odd"),
        ("v2", "already_seen", "already seen"),
    ]
    assert len(second.removed) == 5


def test_a_filter_that_removes_nothing_returns_the_pool_unchanged() -> None:
    pool = pool_of([0, 2])
    assert OddOut().apply(model(), state(), pool) is pool
    assert len(pool.removed) == 0


def test_an_eligibility_hook_that_raises_removes_everything_it_was_asked_about() -> None:
    def broken(video_ids: Sequence[str], state: UserState) -> dict[str, str]:
        raise RuntimeError("policy store unreachable")

    out = Eligibility(broken).apply(model(), state(), pool_of([1, 2, 3]))
    assert len(out) == 0
    assert {r.reason for r in out.removed} == {"eligibility check failed: RuntimeError"}


class ByItem:
    """A check that also answers per catalogue item (as moderation's does)."""

    def __init__(self, blocked: set[int], verdicts: dict[str, str], fail: bool = False) -> None:
        self.blocked, self.verdicts, self.fail, self.asked = blocked, verdicts, fail, []

    def __call__(self, video_ids: Sequence[str], state: UserState) -> dict[str, str]:
        self.asked.append(list(video_ids))
        return {v: self.verdicts[v] for v in video_ids if v in self.verdicts}

    def ineligible_items(self, model: Any, state: UserState) -> np.ndarray:
        if self.fail:
            raise RuntimeError("policy store unreachable")
        return np.isin(np.arange(model.n_items), list(self.blocked))


def test_a_check_by_item_is_asked_only_about_what_it_removes_and_fails_closed() -> None:
    check = ByItem({2, 5}, {"v2": "rejected by moderation"})
    out = Eligibility(check).apply(model(), state(), pool_of([1, 2, 3, 5]))
    assert out.items.tolist() == [1, 3] and check.asked == [["v2", "v5"]]
    # v5: blocked by the lookup, cleared by a verdict read later: it stays removed
    assert [(r.video_id, r.reason) for r in out.removed] == [
        ("v2", "rejected by moderation"),
        ("v5", "eligibility changed while checking"),
    ]
    broken = Eligibility(ByItem(set(), {}, fail=True)).apply(model(), state(), pool_of([1, 2]))
    assert len(broken) == 0
    assert {r.reason for r in broken.removed} == {"eligibility check failed: RuntimeError"}


def test_the_log_refuses_a_reason_list_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="2 videos but 1 reasons"):
        RemovedLog().add("stage", np.asarray(["a", "b"]), ["only one"])


class Counted(CandidateSource):
    """Proposes item 1 and counts its fetches; reads ``positives`` only (``inputs``), or
    nothing it declares (``reads=False``: fetched for every new state)."""

    def __init__(self, reads: bool = True) -> None:
        super().__init__(1)
        self.reads, self.fetches = reads, 0

    def inputs(self, state: UserState) -> Hashable | None:
        return state.positives.tobytes() if self.reads else None

    def fetch(self, model: Any, state: UserState) -> Candidates:
        self.fetches += 1
        return pool_of([1]).candidates[0]


def with_positives(*items: int) -> UserState:
    s = state()
    s.positives = np.asarray(items, np.int64)
    return s


def test_proposals_are_fetched_once_per_state_and_reused_while_what_they_read_holds() -> None:
    from fyp.feed.pipeline import ProposalCache

    cache, m, other_model = ProposalCache(max_users=2), model(), model()
    costly, cheap = Counted(), Counted(reads=False)
    sources = [costly, cheap]
    first = with_positives(3)
    assert cache.get(first, m, sources) is cache.get(first, m, sources)  # shared, a tuple
    assert (costly.fetches, cheap.fetches) == (1, 1)  # the next page of the same state
    cache.get(with_positives(3), m, sources)  # a skip: a new state, the same positives
    assert (costly.fetches, cheap.fetches) == (1, 2)
    cache.get(with_positives(4, 3), m, sources)  # a like: new positives
    assert (costly.fetches, cheap.fetches) == (2, 3)
    cache.get(with_positives(4, 3), other_model, sources)  # a new model: all fetched again
    assert (costly.fetches, cheap.fetches) == (3, 4)
    other = with_positives(3)
    other.user_id = "someone else"
    cache.get(other, m, sources)  # per user; bounded at 2 users
    third = with_positives(3)
    third.user_id = "a third"
    cache.get(third, m, sources)  # "u" was the least recently used: gone
    cache.get(with_positives(4, 3), other_model, sources)
    assert (costly.fetches, cheap.fetches) == (6, 7)
    cache.drop("a third")  # an erasure
    cache.get(third, m, sources)
    assert (costly.fetches, cheap.fetches) == (7, 8)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["serve", "event"]),  # record a page, or an event (a new state)
        st.lists(st.sampled_from([f"v{i}" for i in range(N_ITEMS + 2)]), max_size=4),
    ),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([f"v{i}" for i in range(N_ITEMS + 2)]), max_size=5), STEPS)
def test_the_seen_mask_kept_across_states_is_the_mask_of_seen(
    served: list[str], steps: list[tuple[str, list[str]]]
) -> None:
    """States built on the served part of the one before share its mask; pages served
    meanwhile and events in between never leave it stale (v8, v9: not in the model)."""
    m = model()
    current = state(set(served))
    current.served = dict.fromkeys(served)
    acted: dict[str, None] = {}
    for kind, videos in steps:
        current.seen_mask(m)  # memoise at every step, as the feed would
        if kind == "serve":
            current.add_served(videos)
        else:
            acted |= dict.fromkeys(videos)
            nxt = state(current.served | acted)
            nxt.served, nxt.served_mask = dict(current.served), current.served_mask
            nxt.acted = dict(acted) if len(acted) % 2 else None  # known, or worked out
            current = nxt
        want = np.zeros(N_ITEMS, bool)
        want[[i for i in range(N_ITEMS) if f"v{i}" in current.seen]] = True
        assert current.seen_mask(m).tolist() == want.tolist()
