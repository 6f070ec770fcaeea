"""Orders ranked ahead, as artifact arrays: round trip, erasure, and old layouts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fyp.feed.reasons import Reason, category_interest, fixed, liked_similar, other
from fyp.models.ahead import AheadTable, RankedAhead, to_arrays, without_user


class Texts:
    def __init__(self, items: list[int], tag: str) -> None:
        self.items, self.tag = items, tag

    def sources(self, rows: np.ndarray) -> list[str]:
        return [["trending", "fresh", "embedding"][k % 3] for k in rows.tolist()]

    def reasons(self, rows: np.ndarray) -> list[Reason]:
        out = []
        for k in rows.tolist():
            mark = f"{self.tag}{self.items[k]}"
            kinds = [liked_similar(mark), fixed("trending_region"), category_interest(f"类{mark}")]
            out.append([*kinds, other(f"reason {mark}")][k % 4])
        return out


def order(items: list[int], *, age: int | None = 30, tag: str = "") -> RankedAhead:
    return RankedAhead(
        profile_ms=1000,
        event_seq=7,
        served_seq=2,
        ranked_at_ms=5000,
        age=age,
        items=np.asarray(items, np.int64),
        scores=np.linspace(1.0, 0.0, len(items)).astype(np.float32),
        explains=Texts(items, tag),
    )


def as_lists(o: RankedAhead) -> tuple[list[int], list[str], list[Reason]]:
    n = len(o.items)
    return (
        o.items.tolist(),
        o.explains.sources(np.arange(n)),
        o.explains.reasons(np.arange(n)),
    )


def test_orders_round_trip_through_the_arrays() -> None:
    orders = {"a": order([5, 3, 9]), "b": order([1], age=None, tag="b"), "c": order([])}
    table = AheadTable.from_arrays(to_arrays(orders))
    assert table is not None and len(table) == 3
    for user, original in orders.items():
        got = table.get(user)
        assert got is not None
        assert as_lists(got) == as_lists(original)
        assert np.allclose(got.scores, original.scores)
        assert (got.profile_ms, got.event_seq, got.served_seq, got.ranked_at_ms, got.age) == (
            1000,
            7,
            2,
            5000,
            original.age,
        )
    assert table.get("nobody") is None


def test_an_order_from_the_artifact_holds_a_few_objects_whatever_its_length(
    collector_work: Callable[[object, object], tuple[int, int]],
) -> None:
    """A server keeps thousands of orders, and every full collection walks all they
    hold: per-video lists or closures would make that pause grow with the order."""
    table = AheadTable.from_arrays(
        to_arrays({"short": order([1, 2]), "long": order(list(range(500)))})
    )
    assert table is not None
    short, long = table.get("short"), table.get("long")
    assert short is not None and long is not None
    work = collector_work(short, table)
    assert work == collector_work(long, table) and work[0] <= 3 and work[1] <= 20


def test_an_order_is_fresh_only_for_the_profile_and_events_it_was_ranked_from() -> None:
    o = order([1, 2])
    assert o.fresh_for((1000, 7, 2))
    assert o.fresh_for((1000, 7, 9))  # served since: still fresh (served videos are skipped)
    assert not o.fresh_for((1000, 8, 2))  # a new event
    assert not o.fresh_for((1001, 7, 2))  # a profile change


def test_artifacts_without_orders_or_with_another_layout_have_no_table() -> None:
    assert AheadTable.from_arrays({}) is None
    arrays = to_arrays({"a": order([1])})
    arrays["ahead_meta"] = arrays["ahead_meta"][:, :4]  # an older, shorter layout
    assert AheadTable.from_arrays(arrays) is None


@given(
    st.dictionaries(
        st.sampled_from(["u1", "u2", "u3", "u4"]),
        st.lists(st.integers(0, 50), max_size=6),
        min_size=1,
    ),
    st.sampled_from(["u1", "u2", "u3", "u4"]),
)
def test_erasing_a_user_removes_exactly_their_order(
    plan: dict[str, list[int]], erased: str
) -> None:
    orders = {u: order(items, tag=u) for u, items in plan.items()}
    arrays, removed = without_user(to_arrays(orders), erased)
    table = AheadTable.from_arrays(arrays)
    assert table is not None
    assert table.get(erased) is None
    assert erased not in arrays["ahead_user_ids"].tolist()
    expected = len(plan[erased]) + 1 if erased in plan else 0
    assert removed == expected
    for user, original in orders.items():
        if user != erased:
            got = table.get(user)
            assert got is not None and as_lists(got) == as_lists(original)
