"""What each user has agreed to: ``consents`` on the profile, defaults in the region's policy.

::

    [regions.eu.policy.consent]
    personalised_feed = false  # users who said nothing get the feed not based on profiling
    model_training = false     # opt-in: learn only from users who said yes

A user's *recorded* consents are the ``consents`` object of their profile (``PATCH
/v1/users/{id}``); a key they never set takes its region's default from
``[regions.R.policy.consent]``, and a key the table does not set defaults to ``true``.
Setting a default to ``false`` makes the key opt-in, as some regions' law demands. The
*effective* value (:func:`effective`) is what every capability honours:

- ``personalised_feed``: a feed based on the user's profile and history; without it the
  feed not based on profiling (EU Digital Services Act, Art. 38): ``fyp.feed.impersonal``;
- ``model_training``: being learned from by the region's models (``fyp.models.training``,
  checked by ``fyp lineage verify``: ``fyp.sovereignty.consent_log``).

This module is the one place that knows the keys and parses the table (a capability
that honours a consent adds its key to :data:`DEFAULTS`); it is checked whole when
``fyp.toml`` is loaded: an unknown key names the closest known one, and every value
must be a boolean. Every change of a recorded consent is on record in the home region's
audit log (``consent.change``), and a restore puts back those made since its backup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fyp.config import policy_table
from fyp.errors import ConfigError

if TYPE_CHECKING:
    from fyp.config import DeploymentConfig
    from fyp.storage import Store

TABLE = "consent"
PERSONALISED_FEED = "personalised_feed"
"""A feed based on the user's profile and history (the For You feed as it always was)."""
MODEL_TRAINING = "model_training"
"""Being learned from by the region's models."""
DEFAULTS: dict[str, bool] = {PERSONALISED_FEED: True, MODEL_TRAINING: True}
"""Every consent key and its default when the region's table does not set it."""
KEYS = tuple(DEFAULTS)


@dataclass(frozen=True)
class ConsentPolicy:
    """A region's default for each consent key (``[regions.R.policy.consent]``)."""

    defaults: Mapping[str, bool] = field(default_factory=lambda: dict(DEFAULTS))

    def default(self, key: str) -> bool:
        return bool(self.defaults.get(key, DEFAULTS[key]))

    def to_dict(self) -> dict[str, bool]:
        return {key: self.default(key) for key in KEYS}

    def training_record(self) -> dict[str, bool]:
        """What a model's lineage records of the policy: the model-training default only
        (another key's default changing is no reason to retrain)."""
        return {MODEL_TRAINING: self.default(MODEL_TRAINING)}


def parse_consent(region: str, policy: Mapping[str, Any]) -> ConsentPolicy:
    """The region's consent defaults; a ConfigError for anything but known boolean keys."""
    raw = policy_table(region, policy, TABLE, KEYS)
    where = f"[regions.{region}.policy.{TABLE}]"
    for key, value in raw.items():
        if not isinstance(value, bool):
            raise ConfigError(
                f"{where} {key} must be true or false, got {value!r}", region=region, key=key
            )
    return ConsentPolicy({**DEFAULTS, **raw})


def consent_policy(config: DeploymentConfig, region: str) -> ConsentPolicy:
    return parse_consent(region, config.region(region).policy)


def effective(user_consents: Mapping[str, Any] | None, policy: ConsentPolicy, key: str) -> bool:
    """The user's recorded value of ``key`` if they gave one, else the region's default."""
    recorded = (user_consents or {}).get(key)
    return recorded if isinstance(recorded, bool) else policy.default(key)


def recorded_values(store: Store, key: str) -> dict[str, bool]:
    """``{user_id: value}`` of every user of the store who recorded ``key``: one scan of
    the users table's ``consents`` column (the profiles themselves are not built)."""
    from fyp.audit.log import offers_sql

    if not offers_sql(store):
        return {
            u.user_id: v
            for u in store.iter_users()
            if isinstance(v := (u.consents or {}).get(key), bool)
        }
    rows = store.query(
        "SELECT user_id, consents FROM users WHERE instr(consents, ?) > 0", (json.dumps(key),)
    )
    out: dict[str, bool] = {}
    for user_id, text in rows:
        value = json.loads(text).get(key)
        if isinstance(value, bool):
            out[str(user_id)] = value
    return out


@dataclass(frozen=True)
class ConsentSnapshot:
    """Every user's effective value of one key at one moment (a training run's read)."""

    key: str
    policy: ConsentPolicy
    recorded: Mapping[str, bool]

    def allows(self, user_id: str) -> bool:
        value = self.recorded.get(user_id)
        return self.policy.default(self.key) if value is None else value


def training_snapshot(store: Store, policy: ConsentPolicy) -> tuple[ConsentSnapshot, int]:
    """Who may be learned from, and the audit log's head seq, read as one instant: inside
    a write transaction of the store, so a consent change (its profile update and its
    audit entry, one transaction) is wholly before the read or wholly after it."""
    from fyp.audit.log import AuditLog, offers_sql

    if not offers_sql(sql := store):
        return ConsentSnapshot(MODEL_TRAINING, policy, recorded_values(store, MODEL_TRAINING)), 0
    with sql.transaction():
        recorded = recorded_values(store, MODEL_TRAINING)
        head = AuditLog(sql).head()[0]
    return ConsentSnapshot(MODEL_TRAINING, policy, recorded), head
