"""The per-process cache of what the feed reads of profiles (fyp.feed.profile)."""

from __future__ import annotations

import gc

from fyp.catalog.models import User
from fyp.feed.profile import Profile, ProfileCache
from fyp.regions.deployment import Deployment


def test_a_kept_profile_is_what_the_store_holds_and_costs_the_collector_nothing(
    trained_once: Deployment,
) -> None:
    """A hit is the same profile as the read; the entry is a tuple of atomic values,
    which the collector stops tracking (a server keeps up to ``[feed]
    state_cache_users`` of them)."""
    d = trained_once
    store = d.store("us")
    user: User = next(iter(store.iter_users()))
    cache = ProfileCache(d.config, max_users=10)
    marker = store.user_version(user.user_id)
    assert marker is not None
    read = cache.get(user.user_id, "us", store, marker)
    assert isinstance(read, Profile) and read.version == marker[0]
    assert cache.get(user.user_id, "us", store, marker) == read
    gc.collect()
    assert not gc.is_tracked(cache._entries[user.user_id])
