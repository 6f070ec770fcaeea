"""The tables of a region's store the retention limit covers besides ``events``, each by
its time column, and migration 29 that gives them the index (and the time) expiry needs.

What a user did or was shown, with a time, and how the limit applies (docs/architecture.md,
"Retention"):

- ``events`` (``ts_ms``), users' reports among them (a report is a ``report`` event):
  the store's own methods (``Store.expire_events_before``);
- ``experiment_exposures`` (``exposed_at_ms``): which arm served the user, since when;
- ``labels`` (``stored_at_ms``): a held-out label set records what the user watched in
  an imported dataset's test split. The data gives those rows no time, and the import
  dates its events as recent (the newest one second before the import), so a set is
  dated when it was first stored (it keeps that time when an import adds videos to it,
  and a move copies it): it goes when the import's newest events do, never later;
- ``served_pages`` (``served_at_ms``): the store's served log, through its own chunked
  ``forget_served_before`` (and a served log on Redis, when the limit is shorter than
  the seen window its pages expire by).

The records of unfollows (``follow_actions`` rows with ``following`` 0) go with the
events (:func:`fyp.sovereignty.retention.expire_unfollows`).

Not covered: follows and blocks (relationships the user sets and sees, kept until
undone; their ``follow`` events are), the profile, moderation records (a report job
counts reporters, never who; an appeal is a request to trust and safety) and the audit
log (hash-chained, never shortened; users only by pseudonym).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fyp.audit.log import SQLStore
from fyp.storage.migrations import Migration

_NOW_SQLITE = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_NOW_POSTGRES = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
_MIGRATION_SQL = """
    CREATE INDEX experiment_exposures_time ON experiment_exposures (exposed_at_ms);
    ALTER TABLE labels ADD COLUMN stored_at_ms {int} NOT NULL DEFAULT 0;
    UPDATE labels SET stored_at_ms = {now};
    CREATE INDEX labels_time ON labels (stored_at_ms);
"""
RETENTION_MIGRATION = Migration(
    29,
    "retention: experiment exposures by time; held-out label sets get the time stored",
    # Expiry deletes the oldest rows a chunk at a time and the check counts those past
    # the deadline: both by these indexes, not by scanning the tables. Label sets had no
    # time: those stored before this migration are dated when it runs (their import's
    # time was not recorded; a set's time is never earlier than it truly is).
    _MIGRATION_SQL.format(int="INTEGER", now=_NOW_SQLITE),
    postgres=_MIGRATION_SQL.format(int="BIGINT", now=_NOW_POSTGRES),
)


@dataclass(frozen=True)
class TimedTable:
    """A table of per-user rows the limit deletes by ``column`` (milliseconds)."""

    table: str
    column: str
    key: str  # its primary key's columns: a chunk is chosen, then deleted by them
    noun: str  # what a row is, in messages

    def delete_before(self, store: SQLStore, before_ms: int, limit: int) -> int:
        """Delete at most ``limit`` of the oldest rows before ``before_ms`` in one
        transaction; how many went."""
        with store.transaction():
            return store.execute(
                f"DELETE FROM {self.table} WHERE ({self.key}) IN (SELECT {self.key} FROM "
                f"{self.table} WHERE {self.column} < ? ORDER BY {self.column} LIMIT ?)",
                (before_ms, limit),
            )

    def expire_before(
        self, store: SQLStore, before_ms: int, chunk: int, pause_s: float
    ) -> tuple[int, float]:
        """Delete every row before ``before_ms``, ``chunk`` per transaction, ``pause_s``
        apart: how many went, and the longest transaction (seconds)."""
        total, longest = 0, 0.0
        while True:
            started = time.perf_counter()
            gone = self.delete_before(store, before_ms, chunk)
            longest = max(longest, time.perf_counter() - started)
            total += gone
            if gone < chunk:
                return total, longest
            time.sleep(pause_s)

    def count_before(self, store: SQLStore, before_ms: int) -> int:
        rows = store.query(
            f"SELECT COUNT(*) FROM {self.table} WHERE {self.column} < ?", (before_ms,)
        )
        return int(rows[0][0])


EXPOSURES = TimedTable(
    "experiment_exposures", "exposed_at_ms", "user_id, experiment", "experiment exposure(s)"
)
LABELS = TimedTable("labels", "stored_at_ms", "user_id, dataset, split", "held-out label set(s)")
SERVED = TimedTable("served_pages", "served_at_ms", "user_id, page_seq", "served page(s)")
STORE_TABLES = (EXPOSURES, LABELS)
"""Deleted here; events and served pages by the store's own chunked methods."""
