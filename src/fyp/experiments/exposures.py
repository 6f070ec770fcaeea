"""Exposures: when each user was first served a feed page under an experiment, and in
which arm, kept in the user's home region's store (table ``experiment_exposures``).

The report counts a user in the arm of their first exposure (intent-to-treat) and only
their events from then on, so the arm must be the one that served them, not the one the
config assigns now (a share changed mid-test moves users between arms). Why a table of
the store rather than something derived from the served log:

- the served log forgets pages after ``[feed] seen_window_days`` (its Redis backend by
  TTL), and an experiment may run longer; a page does not say which arm ranked it;
- the store is where every other per-user row lives, so the promises made for those
  hold for exposures without new code paths: the region is baked into a CHECK, the row
  references the user (``ON DELETE CASCADE``: erasure and a move's removal from the
  source take it with the profile), the erasure, its verifier and the residency scan
  find it by its ``user_id`` column, and backups, restores and carve-outs copy every
  table, on SQLite and PostgreSQL alike, wherever the served log is kept.

The feed's hot path pays a dict lookup per page: :class:`ExposureLog` keeps, per region
and experiment, the users this process has recorded as exposed, the most recently served
``KNOWN_USERS`` of them (~140 bytes each: a bound, not the region's whole population),
and writes only for a user not among them: an ``INSERT ... ON CONFLICT DO NOTHING``, so
the first write wins across processes and hosts and a repeat (a user forgotten by the
bound, or first served by this process after a restart) changes nothing. A serving
SQLite store writes it with the served log's group commit (``Store.defer_write``), not
in a transaction of its own: that cost ~9 % of a page's CPU while users met an
experiment for the first time (docs/benchmarks.md, session 18). Like a page in that
group, it is visible to other processes a few ms later and lost with a crash before the
commit (the user's next page records it then).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fyp.audit.log import sql_store
from fyp.storage.migrations import Migration

if TYPE_CHECKING:  # the store's migrations import this module
    from fyp.regions.deployment import Deployment

TABLE = "experiment_exposures"
KNOWN_USERS = 500_000
"""Exposed users a serving process remembers per region and experiment (~70 MB at most):
the least recently served are forgotten first, and their next page writes a no-op."""
RECHECK_MS = 60_000
"""How often a user whose exposure is past the retention limit but not yet deleted has
their row read again (one indexed read a minute each, until the expiry runs)."""
NEVER = 2**62
EXPOSURES_MIGRATION = Migration(
    22,
    "experiments: each user's first exposure to an experiment, and its arm",
    """
    CREATE TABLE experiment_exposures (
        experiment     TEXT NOT NULL,
        variant        TEXT NOT NULL,
        user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
        exposed_at_ms  INTEGER NOT NULL,
        region         TEXT NOT NULL DEFAULT '{region}' CHECK (region = '{region}'),
        PRIMARY KEY (user_id, experiment)
    ) WITHOUT ROWID;
    """,
)
# a user gone meanwhile (erased, moved by another process) writes nothing
_INSERT = (
    f"INSERT OR IGNORE INTO {TABLE} (user_id, experiment, variant, exposed_at_ms) "
    "SELECT user_id, ?, ?, ? FROM users WHERE user_id = ?"
)


@dataclass(frozen=True)
class Exposure:
    variant: str
    exposed_at_ms: int


def record_exposure(store: object, experiment: str, variant: str, user_id: str, ts_ms: int) -> bool:
    """Remember the user's exposure unless one is held already (the first stays); True
    when this call wrote it."""
    return sql_store(store).execute(_INSERT, (experiment, variant, ts_ms, user_id)) > 0


def exposures(store: object, experiment: str) -> dict[str, Exposure]:
    """Every exposure of ``experiment`` the store holds, by user (this process's own
    still waiting for the served log's group commit included: flushed first)."""
    from fyp.storage.base import Store

    if isinstance(store, Store):
        store.flush_served()
    rows = sql_store(store).query(
        f"SELECT user_id, variant, exposed_at_ms FROM {TABLE} WHERE experiment = ?",
        (experiment,),
    )
    return {str(u): Exposure(str(v), int(t)) for u, v, t in rows}


def exposed_at(store: object, experiment: str, user_id: str) -> int | None:
    """When the store says the user was first exposed (None: no exposure held)."""
    rows = sql_store(store).query(
        f"SELECT exposed_at_ms FROM {TABLE} WHERE user_id = ? AND experiment = ?",
        (user_id, experiment),
    )
    return int(rows[0][0]) if rows else None


class ExposureLog:
    """A serving process's record of exposures: the users it has recorded, per region
    and experiment (at most ``capacity`` each, the least recently served forgotten
    first), and the write for a user not among them.

    Under a region's retention limit an exposure older than the limit is deleted
    (``fyp.sovereignty.retention``): each known user carries the time the row may be
    gone by, and a page served after it reads the row (at most once a ``RECHECK_MS``
    while it is still there) and records the exposure afresh once it went, so a user
    still served stays in the experiment's report, counted from then."""

    def __init__(self, deployment: Deployment, capacity: int = KNOWN_USERS) -> None:
        self.deployment = deployment
        self.capacity = capacity
        # user -> when to look at their row again (a page before that writes nothing)
        self._known: dict[tuple[str, str], OrderedDict[str, int]] = {}
        self._lock = threading.Lock()
        self._keep_for: object = None
        self._keep_ms: dict[str, int | None] = {}

    def _keep(self, region: str) -> int | None:
        """How long ``region`` keeps exposures, in ms (None: until erased)."""
        from fyp.sovereignty.retention import retention_policy

        config = self.deployment.config  # a reload swaps it: read the limit in force
        if config is not self._keep_for:
            self._keep_ms = {r: retention_policy(config, r).events_ms for r in config.regions}
            self._keep_for = config
        return self._keep_ms.get(region)

    def expose(self, region: str, experiment: str, variant: str, user_id: str, ts_ms: int) -> None:
        """Record the user's first exposure in their home ``region``, unless known."""
        with self._lock:
            known = self._known.setdefault((region, experiment), OrderedDict())
            due = known.get(user_id)
            if due is not None and ts_ms < due:
                known.move_to_end(user_id)
                return
        store = self.deployment.store(region)
        keep = self._keep(region)
        held = None if due is None else exposed_at(store, experiment, user_id)
        if held is not None and keep is not None and held + keep <= ts_ms:
            again = ts_ms + RECHECK_MS  # past the limit, not deleted yet: look again soon
        elif held is not None:
            again = NEVER if keep is None else held + keep
        else:
            if not store.defer_write(_INSERT, (experiment, variant, ts_ms, user_id)):
                record_exposure(store, experiment, variant, user_id, ts_ms)
            again = NEVER if keep is None else ts_ms + keep
        with self._lock:  # written (or to be, with the group), or by another process
            known[user_id] = again
            known.move_to_end(user_id)
            if len(known) > self.capacity:
                known.popitem(last=False)

    def known(self, region: str, experiment: str) -> int:
        """How many users this process remembers as exposed (for tests and metrics)."""
        return len(self._known.get((region, experiment), ()))

    def forget(self, user_id: str) -> None:
        """The user left a region (erased, moved): a later exposure is recorded afresh."""
        with self._lock:
            for known in self._known.values():
                known.pop(user_id, None)
