"""What the feed reads of a user's profile on every request: their age (moderation's age
gates), whether their feed may be personalised (``fyp.regions.consent``) and their
language (the reasons' language when the request names none).

Read once per process and profile version: the store's marker for the user
(``Store.user_version``, read on every feed request anyway) starts with the profile's
``updated_at_ms``, which every change of the profile moves (``Catalog.update_user``, a
move), so a cached profile is used only while it is the one the store holds. A
``PATCH`` through any process or host is seen by the very next feed request anywhere;
the cost is a dict lookup, and one row read per user and profile change (and per
user after the region consent defaults change, applied live: ``fyp.serving.reload``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fyp.audit.log import sql_store
from fyp.catalog.models import age_of
from fyp.config import DeploymentConfig
from fyp.feed.reasons import match_lang
from fyp.regions.consent import PERSONALISED_FEED, ConsentPolicy, consent_policy, effective
from fyp.storage.base import Store

_FIELDS = "SELECT birth_year, language, consents, updated_at_ms FROM users WHERE user_id = ?"


def profile_row(store: Store, user_id: str) -> tuple[Any, ...] | None:
    """The user's ``birth_year, language, consents (JSON), updated_at_ms``: one row read,
    no ``User`` built (7 µs against ``Store.get_user``'s 29 on a KuaiRec store)."""
    rows = sql_store(store).query(_FIELDS, (user_id,))
    return rows[0] if rows else None


@dataclass(frozen=True, slots=True)
class Profile:
    version: int  # the profile's updated_at_ms: the first part of the user's marker
    age: int | None
    personalised: bool  # the effective ``personalised_feed`` consent
    lang: str | None  # the supported language the profile's falls back to, if any


_Entry = tuple[str, int, int, int | None, bool, str | None]


def _fields(p: Profile) -> tuple[int, int | None, bool, str | None]:
    return p.version, p.age, p.personalised, p.lang


class ProfileCache:
    """Per user, the profile fields the feed reads (bounded, least recently used
    evicted; an erased user's dropped at once)."""

    def __init__(self, config: DeploymentConfig, max_users: int) -> None:
        self.config = config
        self.max_users = max_users
        self._policies: dict[str, ConsentPolicy] = {}
        # bumped when the consent defaults change (a live edit of fyp.toml): a profile
        # kept from before is read again, as its effective consent may be another
        self._generation = 0
        # (region, generation, *profile): a tuple of atomic values only, which the
        # collector stops tracking, so the thousands kept cost its full collections
        # nothing (docs/benchmarks.md); a hit builds the Profile again (0.3 µs)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def prepare(self, config: DeploymentConfig) -> Callable[[], None]:
        """What swaps in ``config``'s consent defaults (:mod:`fyp.serving.reload`);
        the kept profiles are read again only if some region's defaults changed."""
        policies = {r: consent_policy(config, r) for r in config.region_names}
        changed = any(consent_policy(self.config, r) != p for r, p in policies.items())

        def swap() -> None:
            self.config = config
            self._policies = policies
            if changed:
                self._generation += 1  # after the policies: a reader of the new one is new

        return swap

    def get(
        self, user_id: str, region: str, store: Store, marker: tuple[int, ...] | None
    ) -> Profile:
        """The user's profile as ``store`` (their home region's) holds it now; ``marker``
        is what ``user_version`` just said (None: read afresh). A user the store no
        longer holds is not personalised (fail closed) and nothing is kept."""
        generation = self._generation  # before the policy is read (see prepare)
        if marker is not None:
            with self._lock:
                hit = self._entries.get(user_id)
                if (
                    hit is not None
                    and hit[0] == region
                    and hit[2] == marker[0]
                    and hit[1] == generation
                ):
                    self._entries.move_to_end(user_id)
                    return Profile(hit[2], hit[3], hit[4], hit[5])
        row = profile_row(store, user_id)
        if row is None:
            return Profile(-1, None, False, None)
        birth_year, language, consents, version = row
        profile = self._profile(region, birth_year, language, json.loads(consents), version)
        if marker is not None and self.max_users > 0:
            with self._lock:
                self._entries[user_id] = (region, generation, *_fields(profile))
                self._entries.move_to_end(user_id)
                while len(self._entries) > self.max_users:
                    self._entries.popitem(last=False)
        return profile

    def _profile(
        self,
        region: str,
        birth_year: int | None,
        language: str | None,
        consents: dict[str, bool] | None,
        version: int,
    ) -> Profile:
        policy = self._policies.get(region)
        if policy is None:
            policy = self._policies[region] = consent_policy(self.config, region)
        return Profile(
            version=int(version),
            age=age_of(None if birth_year is None else int(birth_year)),
            personalised=effective(consents, policy, PERSONALISED_FEED),
            lang=None if language is None else match_lang(str(language)),
        )

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)
