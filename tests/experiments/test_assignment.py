"""Variant assignment: a pure function of the salt and the user id, with the stability
property the module documents."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.experiments.assignment import pick, position, variant_of
from fyp.experiments.config import CONTROL, Experiment, Variant

user_ids = st.text(min_size=1, max_size=40)
salts = st.text(min_size=1, max_size=20)
shares = st.lists(st.floats(0.01, 0.3), min_size=1, max_size=3)


def experiment(parts: list[float], salt: str = "s") -> Experiment:
    variants = tuple(Variant(f"v{k}", share) for k, share in enumerate(parts))
    return Experiment("exp", datetime(2025, 1, 1, tzinfo=UTC), ("us",), salt, variants)


def test_position_is_the_documented_hash() -> None:
    digest = hashlib.sha256(b"s1:u42").digest()
    assert position("s1", "u42") == (int.from_bytes(digest[:8], "big") >> 11) / 2**53


@given(salts, user_ids)
def test_a_position_is_in_the_unit_interval_and_the_same_every_time(salt: str, uid: str) -> None:
    assert 0.0 <= position(salt, uid) < 1.0
    assert position(salt, uid) == position(salt, uid)


@given(shares, user_ids)
def test_the_same_user_is_in_the_same_variant(parts: list[float], uid: str) -> None:
    assert variant_of(experiment(parts), uid) == variant_of(experiment(parts), uid)


@given(shares, st.floats(0.01, 0.3), user_ids)
def test_adding_a_later_variant_moves_only_control_users(
    parts: list[float], extra: float, uid: str
) -> None:
    """The guarantee: a variant added after every existing one in name order takes its
    users from control; no existing variant gains or loses anyone."""
    before = variant_of(experiment(parts), uid)
    after = variant_of(experiment([*parts, extra]), uid)
    assert after == before or (before == CONTROL and after == f"v{len(parts)}")


@given(shares, st.floats(0.0, 0.3), user_ids)
def test_growing_the_last_variant_moves_only_control_users(
    parts: list[float], more: float, uid: str
) -> None:
    before = variant_of(experiment(parts), uid)
    after = variant_of(experiment([*parts[:-1], parts[-1] + more]), uid)
    assert after == before or (before == CONTROL and after == f"v{len(parts) - 1}")


def test_pick_takes_consecutive_ranges_in_order() -> None:
    split = (("a", 0.2), ("b", 0.3))
    assert [pick(p, split) for p in (0.0, 0.19, 0.2, 0.49, 0.5, 0.99)] == [
        "a",
        "a",
        "b",
        "b",
        CONTROL,
        CONTROL,
    ]


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(0.05, 0.3), min_size=1, max_size=3), salts)
def test_observed_shares_are_within_tolerance(parts: list[float], salt: str) -> None:
    """20,000 ids: each share's binomial standard error is at most 0.0036; 5 of them."""
    n = 20_000
    seen = Counter(variant_of(experiment(parts, salt), f"user-{k}") for k in range(n))
    for k, share in enumerate(parts):
        assert abs(seen[f"v{k}"] / n - share) < 0.018, (k, share, seen)
    assert abs(seen[CONTROL] / n - (1 - sum(parts))) < 0.018


def test_salts_split_users_independently() -> None:
    """Half in one experiment's variant, half of those in another's (not all or none)."""
    ids = [f"user-{k}" for k in range(20_000)]
    a = {u for u in ids if variant_of(experiment([0.5], "a"), u) == "v0"}
    b = {u for u in ids if variant_of(experiment([0.5], "b"), u) == "v0"}
    assert abs(len(a & b) / len(a) - 0.5) < 0.03
