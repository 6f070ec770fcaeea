"""The per-process cache of built user states (fyp.feed.state.StateCache)."""

from __future__ import annotations

import dataclasses
import gc

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


model_stub = object()


def test_a_cached_state_is_one_tracked_object_with_no_entry_or_dict_of_its_own() -> None:
    """A server keeps up to ``[feed] state_cache_users`` states, and every full
    collection visits each tracked object (docs/benchmarks.md): a state is kept as
    itself (no entry tuple, no instance dict, no weak reference), its marker a tuple of
    ints the collector stops tracking."""
    cache = StateCache(max_users=10)
    state = built("a")
    cache.put("a", model_stub, (1, 2, 3), state)  # type: ignore[arg-type]
    assert cache._entries["a"] is state
    assert not hasattr(state, "__dict__")
    gc.collect()
    assert not gc.is_tracked(state.cached_marker)
    assert cache.get("a", model_stub, (1, 2, 3)) is state  # type: ignore[arg-type]
    cache.served("a", (1, 2, 4), ["v1"])
    assert cache.get("a", model_stub, (1, 2, 4)) is state  # type: ignore[arg-type]
    assert cache.previous("a") == ((1, 2, 4), state)
    assert cache.get("a", model_stub, (1, 2, 3)) is None  # type: ignore[arg-type]


def test_every_state_has_its_own_serial_even_an_equal_or_replaced_one() -> None:
    """The proposal cache tells states apart by serial (it must not keep one alive): two
    states alike, or one made from another with ``dataclasses.replace``, are two."""
    a, b = built("a"), built("a")
    assert a.serial != b.serial
    assert dataclasses.replace(a).serial not in {a.serial, b.serial}
