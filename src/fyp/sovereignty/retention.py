"""How long a region keeps its users' behaviour: ``[regions.R.policy.retention]``.

::

    [regions.eu.policy.retention]
    events_days = 365   # behaviour older than a year is deleted (absent: kept until erased)

Behaviour (watch time, likes, skips, follows, reports; which experiment arm served a
user; what the feed showed; held-out labels) is personal data, and many regions' law
allows it to be kept only as long as it is needed. The limit covers every table of the
store that records such a thing with a time (:mod:`fyp.sovereignty.retention_tables`
says which, and why the rest are not). With a limit set:

- ingestion refuses an event whose time is already past the limit (it would be deleted
  at once); the client gets 422 ``validation_failed`` naming ``ts``. The other tables'
  times are the server's;
- :func:`expire_events` deletes the older rows of each table (oldest first, in chunks,
  pausing between them so writers get the store's lock), and records how many went
  from each in the region's audit log (``retention.expire``), and the records of
  unfollows as old (:func:`expire_unfollows`). ``fyp train`` runs it
  before it reads the store, so a model never learns from an expired event, and ``fyp
  serve``'s training schedule trains (and so expires) every hour; ``fyp retention
  apply`` does it by hand or from cron;
- :func:`check_retention` (``fyp retention check``) proves it: no row of the region is
  older than the limit by more than ``[erasure] retrain_within_hours``, the live model
  learned from none, and no backup at the region's targets is older than the limit by
  more than that (a backup holds the rows of its day).

A restore expires what the backup held past the limit before the region serves again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fyp.audit.log import now_ms
from fyp.config import DAY_MS, policy_table
from fyp.errors import ConfigError
from fyp.sovereignty.retention_tables import SERVED, STORE_TABLES

if TYPE_CHECKING:
    from fyp.config import DeploymentConfig
    from fyp.regions.deployment import Deployment
    from fyp.storage import Store
    from fyp.storage.served_logs import ServedLog

TABLE = "retention"
KEYS = ("events_days",)
MAX_DAYS = 100 * 366
CHUNK = 1_000  # events deleted per transaction: ~2.4 ms of write lock on SQLite
# exposures and label sets per transaction: their rows sit in user order, so a chunk by
# time touches pages all over the table (1,000 exposures held the lock ~11 ms)
ROWS_CHUNK = 250
PAUSE_S = 0.02  # between chunks: the serving process's writers take their turn
ACTOR = "system:retention"


@dataclass(frozen=True)
class RetentionPolicy:
    """A region's limits (None: kept until the user is erased)."""

    events_days: int | None = None

    @property
    def events_ms(self) -> int | None:
        return None if self.events_days is None else self.events_days * DAY_MS

    def shorter_than(self, window_ms: int) -> bool:
        """Whether the limit ends before ``window_ms`` (the served log's seen window)."""
        return self.events_ms is not None and self.events_ms < window_ms

    def events_cutoff_ms(self, now_ms: int) -> int | None:
        """Events before this time are past the limit (None: no limit)."""
        return None if self.events_days is None else now_ms - self.events_days * DAY_MS


def parse_retention(region: str, policy: Mapping[str, Any]) -> RetentionPolicy:
    raw = policy_table(region, policy, TABLE, KEYS)
    where = f"[regions.{region}.policy.{TABLE}]"
    days = raw.get("events_days")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS
    ):
        raise ConfigError(
            f"{where} events_days must be a whole number of days from 1 to {MAX_DAYS}, "
            f"got {days!r}",
            region=region,
            key="events_days",
        )
    return RetentionPolicy(events_days=days)


def retention_policy(config: DeploymentConfig, region: str) -> RetentionPolicy:
    return parse_retention(region, config.region(region).policy)


@dataclass(frozen=True)
class Expired:
    region: str
    events: int
    before_ms: int | None  # None: the region has no limit
    tables: dict[str, int] = field(default_factory=dict)  # rows deleted, per table
    longest_s: float = 0.0  # the longest transaction (write lock held), any table

    def summary(self) -> str:
        """What went, for a person: "deleted 120 events, 3 experiment exposure(s)"."""
        others = [
            f"{n:,} {noun}"
            for t, noun in ((t.table, t.noun) for t in (*STORE_TABLES, SERVED))
            if (n := self.tables.get(t, 0))
        ]
        return ", ".join([f"deleted {self.events:,} events", *others])

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "events": self.events,
            "before_ms": self.before_ms,
            "tables": self.tables,
        }


def expire_events(
    store: Store,
    policy: RetentionPolicy,
    at_ms: int | None = None,
    pause_s: float = PAUSE_S,
    external: ServedLog | None = None,
) -> Expired:
    """Delete the region's behaviour past its limit: events, experiment exposures,
    held-out label sets and served pages (``external``: also those of a served log
    outside the store), oldest first, a chunk per transaction; an audit entry says how
    many went from each table (none when nothing did)."""
    from fyp.audit.log import AuditLog, sql_store

    cutoff = policy.events_cutoff_ms(now_ms() if at_ms is None else at_ms)
    if cutoff is None:
        return Expired(store.region, 0, None)
    tables = {"events": 0}
    longest = 0.0
    while True:
        started = time.perf_counter()
        gone = store.expire_events_before(cutoff, CHUNK)
        longest = max(longest, time.perf_counter() - started)
        tables["events"] += gone
        if gone < CHUNK:
            break
        time.sleep(pause_s)
    for table in STORE_TABLES:
        tables[table.table], took = table.expire_before(
            sql_store(store), cutoff, ROWS_CHUNK, pause_s
        )
        longest = max(longest, took)
    # the store's own pages (in chunks of its own), with a served log on Redis those left
    # from before it moved there; Redis's pages only when they outlive the limit
    tables[SERVED.table] = store.forget_served_before(cutoff)
    if external is not None:
        tables[SERVED.table] += external.forget_served_before(cutoff)
    tables["follow_actions"] = expire_unfollows(store, cutoff)
    if any(tables.values()):
        AuditLog(store).append(
            ACTOR,
            "retention.expire",
            f"region:{store.region}",
            {
                "events": tables["events"],
                "before_ms": cutoff,
                "events_days": policy.events_days,
                "tables": tables,
            },
        )
    return Expired(store.region, tables["events"], cutoff, tables, longest)


def expire_unfollows(store: Store, cutoff: int) -> int:
    """Delete the records of unfollows older than ``cutoff`` (``follow_actions``,
    :mod:`fyp.catalog.follow_order`): behaviour, like the events, and needed no longer,
    as every event ingestion still takes is later than them. A followed pair's record
    stays with its follow."""
    from fyp.audit.log import offers_sql

    if not offers_sql(store):
        return 0
    with store.transaction():
        return store.execute(
            "DELETE FROM follow_actions WHERE following = 0 AND acted_ms < ?", (cutoff,)
        )


def expire_region(d: Deployment, region: str, at_ms: int | None = None) -> Expired:
    policy = retention_policy(d.config, region)
    served = d.served_log(region)
    outside = served.forgets_by_itself and policy.shorter_than(d.config.feed.seen_window_ms)
    return expire_events(d.store(region), policy, at_ms, external=served if outside else None)


@dataclass
class RetentionReport:
    region: str
    events_days: int | None
    deadline_ms: int | None = None  # data older than this must be gone by now
    overdue_events: int = 0
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # overdue, pending
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "events_days": self.events_days,
            "deadline_ms": self.deadline_ms,
            "overdue_events": self.overdue_events,
            "tables": self.tables,
            "problems": self.problems,
            "notes": self.notes,
        }

    def count(self, table: str, noun: str, overdue: int, past: int, grace_h: float) -> None:
        """Rows of ``table`` past the limit: beyond the deadline a problem, within it a note."""
        self.tables[table] = {"overdue": overdue, "pending": past - overdue}
        if overdue:
            self.problems.append(
                f"{overdue:,} {noun} older than the {self.events_days}-day limit by more "
                f"than {grace_h:g} h are still stored (fyp retention apply deletes them)"
            )
        if past - overdue:
            self.notes.append(
                f"{past - overdue:,} {noun} past the limit, due for deletion within {grace_h:g} h"
            )


def check_retention(d: Deployment, region: str, at_ms: int | None = None) -> RetentionReport:
    """Whether the region keeps to its limit: its store (every table it covers), its live
    model and its backups hold nothing past the limit by more than ``[erasure]
    retrain_within_hours``."""
    from fyp.audit.log import sql_store
    from fyp.models.artifacts import current_version, read_manifest
    from fyp.sovereignty.backup import allowed_target_dirs, list_backups

    policy = retention_policy(d.config, region)
    report = RetentionReport(region, policy.events_days)
    cutoff = policy.events_cutoff_ms(now_ms() if at_ms is None else at_ms)
    if cutoff is None:
        report.notes.append(
            "no limit: events, experiment exposures and held-out labels are kept until "
            "their user is erased"
        )
        return report
    grace_h = d.config.erasure.retrain_within_hours
    deadline = report.deadline_ms = cutoff - int(grace_h * 3_600_000)
    store = d.store(region)
    report.overdue_events = store.count_events_before(deadline)
    past = store.count_events_before(cutoff)
    report.count("events", "event(s)", report.overdue_events, past, grace_h)
    sql = sql_store(store)
    store.flush_served()  # pages (and exposures) still in this process's group commit
    for table in (*STORE_TABLES, SERVED):
        overdue = table.count_before(sql, deadline)
        report.count(table.table, table.noun, overdue, table.count_before(sql, cutoff), grace_h)
    if d.served_log(region).forgets_by_itself and policy.shorter_than(d.config.feed.seen_window_ms):
        report.notes.append(
            f"the served log on Redis expires pages at the seen window, after the "
            f"{policy.events_days}-day limit: fyp retention apply (and fyp train) deletes "
            "older ones; they are not counted here"
        )
    region_dir = d.config.region_dir(region)
    version = current_version(region_dir)
    if version is not None:
        manifest = read_manifest(region_dir, version)
        oldest = manifest.lineage.get("oldest_event_ms")
        if manifest.snapshot.event_count and oldest is None:
            report.problems.append(
                f"live model {version} does not record its oldest event (trained before fyp "
                "recorded it): retrain (fyp train) so its data can be checked"
            )
        elif oldest is not None and int(oldest) < deadline:
            report.problems.append(
                f"live model {version} learned from events past the limit by more than "
                f"{grace_h:g} h: retrain (fyp train)"
            )
    found = list_backups(*[p for _, p in allowed_target_dirs(d.config, region)])
    if not (found.backups or found.damaged):
        return report  # none taken yet (and no backup key to read one with)
    listing = found.of_region(d.config, region)
    for damaged in listing.damaged:
        report.notes.append(f"backup at {damaged.path} is damaged, its age unknown (fyp backups)")
    for backup in listing.backups:
        if backup.created_at_ms < deadline:
            report.problems.append(
                f"backup {backup.backup_id} at {backup.path} was taken before the limit's "
                f"deadline, so it holds expired events (keep fewer: fyp backup --keep N)"
            )
    return report
