"""The per-process cache of built user states (fyp.feed.state.StateCache)."""

from __future__ import annotations

import numpy as np
import pytest

from fyp.feed import state as state_module
from fyp.feed.state import StateCache, UserState


def built(user_id: str) -> UserState:
    return UserState(user_id, "us", None, np.zeros(0, np.int64), np.zeros(0, np.float32))


def test_expired_states_leave_the_cache_not_only_at_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A state past its time to live is never used again; a server that kept it until
    100,000 others pushed it out would hold every user of the last hours."""
    now = [1000.0]
    monkeypatch.setattr(state_module.time, "monotonic", lambda: now[0])
    cache, model = StateCache(max_users=100, ttl_s=60.0), object()
    for user in ("a", "b", "c"):
        cache.put(user, model, (1, 1, 1), built(user))  # type: ignore[arg-type]
    now[0] += 30
    cache.put("a", model, (1, 1, 2), built("a"))  # a new event rebuilt a's state  # type: ignore[arg-type]
    now[0] += 31  # b and c are past their time now, a is not
    cache.put("d", model, (1, 1, 1), built("d"))  # type: ignore[arg-type]
    assert list(cache._entries) == ["a", "d"]


def test_the_bound_evicts_the_least_recently_used() -> None:
    cache, model = StateCache(max_users=2), object()
    for user in ("a", "b"):
        cache.put(user, model, (1, 1, 1), built(user))  # type: ignore[arg-type]
    assert cache.get("a", model, (1, 1, 1)) is not None  # type: ignore[arg-type]
    cache.put("c", model, (1, 1, 1), built("c"))  # type: ignore[arg-type]
    assert list(cache._entries) == ["a", "c"]
