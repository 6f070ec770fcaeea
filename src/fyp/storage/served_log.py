"""The served log, committed in groups: one transaction for the pages of a few ms.

Recording a page is the one write on the feed's path, and committing each page on its
own cost a serving process about as much as the rest of a page served from an order
ranked ahead. In a serving process (``SQLiteStore.start_background_maintenance``) a
record joins a buffer instead, and the buffer is committed as one transaction when it is
``MAX_AGE_S`` old or holds ``MAX_RECORDS`` (by the request that finds it due, or by the
store's maintenance thread when traffic stops).

Until a record is committed this process still sees it: ``SQLiteStore.user_version``
counts it and ``served_since`` returns it, so the next page never repeats it. Other
processes see it at the commit, a few milliseconds later. A crash loses what was not
committed yet: the user may be shown those videos again. Nothing else is deferred;
events are acknowledged only once committed.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_core import from_json, to_json

MAX_AGE_S = 0.005
MAX_RECORDS = 64
ATTEMPTS = 3  # a group that failed this often is dropped (and logged)
log = logging.getLogger("fyp.storage")


@dataclass(frozen=True)
class ServedRecord:
    video_ids: tuple[str, ...]
    ts_ms: int
    forget_before_ms: int | None


def write_records(
    conn: sqlite3.Connection, user_id: str, records: Sequence[ServedRecord]
) -> int | None:
    """Apply a user's records inside the caller's transaction: one ``served_pages`` row
    each, numbered by the served counter, which goes up by one per record. Returns the
    new counter, or None if the user is gone."""
    row = conn.execute(
        "UPDATE users SET served_seq = served_seq + ? WHERE user_id=? RETURNING served_seq",
        (len(records), user_id),
    ).fetchone()
    if row is None:
        return None
    counter = int(row[0])
    for k, record in enumerate(records):
        conn.execute(
            "INSERT INTO served_pages (user_id, page_seq, served_at_ms, video_ids) "
            "VALUES (?,?,?,?)",
            (
                user_id,
                counter - len(records) + 1 + k,
                record.ts_ms,
                to_json(list(dict.fromkeys(record.video_ids))).decode(),
            ),
        )
        if record.forget_before_ms is not None:
            conn.execute(
                "DELETE FROM served_pages WHERE user_id=? AND served_at_ms<?",
                (user_id, record.forget_before_ms),
            )
    return counter


def read_pages(
    conn: sqlite3.Connection, user_id: str, since_ms: int
) -> list[tuple[list[str], int]]:
    """The user's pages served at or after ``since_ms``: (video ids, time), oldest first."""
    rows = conn.execute(
        "SELECT video_ids, served_at_ms FROM served_pages "
        "WHERE user_id=? AND served_at_ms>=? ORDER BY page_seq",
        (user_id, since_ms),
    ).fetchall()
    return [(from_json(ids), int(ts)) for ids, ts in rows]


class ServedBuffer:
    """Served records not committed yet, per user, oldest first. Not thread-safe: the
    store guards it with the lock of its connection, so a reader sees every record
    either committed or buffered, never both or neither."""

    def __init__(self, max_age_s: float = MAX_AGE_S, max_records: int = MAX_RECORDS) -> None:
        self.max_age_s = max_age_s
        self.max_records = max_records
        self.pending: dict[str, list[ServedRecord]] = {}
        self._count = 0
        self._since: float | None = None  # when the oldest buffered record came
        self._failures = 0

    def add(self, user_id: str, record: ServedRecord) -> None:
        self.pending.setdefault(user_id, []).append(record)
        self._count += 1
        if self._since is None:
            self._since = time.monotonic()

    def queued(self, user_id: str) -> Sequence[ServedRecord]:
        return self.pending.get(user_id, ())

    def due(self, age_s: float | None = None) -> bool:
        """Time to commit: full, or its oldest record older than ``age_s`` (default
        ``max_age_s``)."""
        if self._since is None:
            return False
        limit = self.max_age_s if age_s is None else age_s
        return self._count >= self.max_records or time.monotonic() - self._since >= limit

    def commit(self, conn: sqlite3.Connection) -> None:
        """Write everything buffered in one transaction on ``conn`` (the caller holds the
        connection's lock); a user erased meanwhile is skipped. On failure the records
        stay for the next attempt, and after ``ATTEMPTS`` they are dropped and logged:
        serving goes on either way."""
        if not self.pending:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for user_id, records in self.pending.items():
                    write_records(conn, user_id, records)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._failures += 1
            if self._failures < ATTEMPTS:
                return
            log.error("served log: %d users' records dropped: %s", len(self.pending), exc)
        self.pending, self._count, self._since, self._failures = {}, 0, None, 0

    @staticmethod
    def served_since(
        stored: Sequence[tuple[Sequence[str], int]],
        queued: Sequence[ServedRecord],
        since_ms: int,
    ) -> list[str]:
        """The videos served at or after ``since_ms`` once ``queued`` records land on
        ``stored`` (the committed pages from ``since_ms`` on, with their times): each
        record's pruning applies in turn, as its commit would."""
        pages = list(stored)
        for record in queued:
            pages.append((record.video_ids, record.ts_ms))
            if record.forget_before_ms is not None:
                pages = [(ids, t) for ids, t in pages if t >= record.forget_before_ms]
        return list(dict.fromkeys(v for ids, t in pages if t >= since_ms for v in ids))
