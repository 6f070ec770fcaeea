"""Users' consents, and the region defaults they fall back to: ``[regions.R.policy.consent]``.

::

    [regions.eu.policy.consent]
    personalised_feed = false   # users homed in eu who said nothing get the non-profiled feed

A user records a consent in their profile (``consents`` of ``PATCH /v1/users/{id}``);
what they recorded decides. Where they recorded nothing, their home region's policy
does (each key's default below when the region says nothing either). This module is
the one place that knows the keys and parses the table: a capability that honours a
consent adds its key to ``DEFAULTS`` and asks ``effective``. The table sits in the
region's policy beside moderation's keys and the moves table and is checked whole
when ``fyp.toml`` is loaded: an unknown key (naming the closest known one) or a value
that is not a boolean stops every command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fyp.config import DeploymentConfig, check_keys
from fyp.errors import ConfigError

TABLE = "consent"
PERSONALISED_FEED = "personalised_feed"
"""A feed based on the user's profile and history (the For You feed as it always was).
Without it the feed is the non-profiled one (EU Digital Services Act, Art. 38):
``fyp.feed.impersonal``."""

DEFAULTS: Mapping[str, bool] = {PERSONALISED_FEED: True}
KEYS = tuple(DEFAULTS)


@dataclass(frozen=True)
class ConsentPolicy:
    """What a region assumes of a user who recorded nothing, per consent key."""

    defaults: Mapping[str, bool] = field(default_factory=lambda: dict(DEFAULTS))

    def default(self, key: str) -> bool:
        return self.defaults[key]


def parse_consent(region: str, policy: Mapping[str, Any]) -> ConsentPolicy:
    """The region's ``[regions.<region>.policy.consent]`` (every key at its default
    without it)."""
    raw = policy.get(TABLE, {})
    section = f"regions.{region}.policy.{TABLE}"
    where = f"[{section}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table", region=region)
    check_keys(section, raw, KEYS)
    for key, value in raw.items():
        if not isinstance(value, bool):
            raise ConfigError(
                f"{where} {key} must be true or false, got {value!r}", region=region, key=key
            )
    return ConsentPolicy({**DEFAULTS, **raw})


def consent_policy(config: DeploymentConfig, region: str) -> ConsentPolicy:
    return parse_consent(region, config.region(region).policy)


def effective(user_consents: Mapping[str, bool] | None, policy: ConsentPolicy, key: str) -> bool:
    """The user's own answer if they recorded one, else the region's default."""
    recorded = None if user_consents is None else user_consents.get(key)
    return policy.default(key) if recorded is None else bool(recorded)
