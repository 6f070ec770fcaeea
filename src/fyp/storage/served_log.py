"""The served log, committed in groups: one transaction for the pages of a few ms.

Recording a page is the one write on the feed's path, and committing each page on its
own cost a serving process about as much as the rest of a page served from an order
ranked ahead. In a serving process (``SQLiteStore.start_background_maintenance``) a
record joins a buffer instead, and the buffer is committed as one transaction when it is
``MAX_AGE_S`` old or holds ``MAX_RECORDS`` (by the request that finds it due, or by the
store's maintenance thread when traffic stops).

Until a record is committed this process still sees it: ``SQLiteStore.user_version``
counts it and ``served_since`` returns it, so the next page never repeats it. Other
processes see it at the commit, a few milliseconds later, or right after a WAL
checkpoint that was running (groups wait for it: ``SQLiteStore._checkpoint``). A crash
loses what was not committed yet: the user may be shown those videos again. Nothing else
is deferred; events are acknowledged only once committed.

A page is one insert into ``served_pages`` and nothing else: the served counter is the
newest page's number, so no users row is rewritten per page. That, and pruning each
user's old pages on every record, cost ~10 % of a page's time in process, and the WAL
pages they dirtied made the tail: p99 82-97 ms against 11-13 ms without them (HTTP at
concurrency 8 on a deployment with a long served history, docs/benchmarks.md).
Pages older than the feed's seen window are forgotten in bulk by ``forget_before`` (the
serving store's maintenance thread, once a minute), which keeps the counter of a user
whose last page goes in the users row.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json, to_json

MAX_AGE_S = 0.005
MAX_RECORDS = 64
ATTEMPTS = 3  # a group that failed this often is dropped (and logged)
log = logging.getLogger("fyp.storage")


# The user's served counter: the newest page's number, or the floor kept in the users
# row once the pages are forgotten (``forget_before``), whichever is greater.
COUNTER = (
    "max(served_seq, COALESCE((SELECT MAX(page_seq) FROM served_pages "
    "WHERE user_id = ?1), served_seq))"
)
COUNTER_SQL = f"SELECT {COUNTER} FROM users WHERE user_id = ?1"


@dataclass(frozen=True)
class ServedRecord:
    video_ids: tuple[str, ...]
    ts_ms: int


def write_records(
    conn: sqlite3.Connection, pending: Mapping[str, Sequence[ServedRecord]]
) -> dict[str, int]:
    """Apply users' records inside the caller's transaction: one ``served_pages`` row
    each, numbered on from the user's served counter (one statement for the whole group;
    the users rows are only read). Returns how many were written per user: 0 for a user
    who is gone (then every record of theirs wrote nothing)."""
    rows = [
        (user_id, r.ts_ms, to_json(list(dict.fromkeys(r.video_ids))).decode())
        for user_id, records in pending.items()
        for r in records
    ]
    done = conn.executemany(
        "INSERT INTO served_pages (user_id, page_seq, served_at_ms, video_ids) "
        f"SELECT ?1, {COUNTER} + 1, ?2, ?3 FROM users WHERE user_id = ?1",
        rows,
    ).rowcount
    if done == len(rows):
        return {user_id: len(records) for user_id, records in pending.items()}
    users = to_json(list(pending)).decode()
    present = {
        str(r[0])
        for r in conn.execute(
            "SELECT user_id FROM users WHERE user_id IN (SELECT value FROM json_each(?))",
            (users,),
        )
    }
    return {u: len(records) if u in present else 0 for u, records in pending.items()}


def forget_before(conn: sqlite3.Connection, before_ms: int, limit: int) -> int:
    """Delete up to ``limit`` pages served before ``before_ms``, in one transaction of
    its own, and return how many. Each user touched keeps their counter in the users row
    first, so it never goes back when their last page goes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS forgotten_pages "
            "(user_id TEXT NOT NULL, page_seq INTEGER NOT NULL)"
        )
        conn.execute("DELETE FROM temp.forgotten_pages")
        conn.execute(
            "INSERT INTO temp.forgotten_pages SELECT user_id, page_seq FROM served_pages "
            "WHERE served_at_ms < ? ORDER BY served_at_ms LIMIT ?",
            (before_ms, limit),
        )
        conn.execute(
            "UPDATE users SET served_seq = max(served_seq, (SELECT MAX(page_seq) "
            "FROM served_pages AS p WHERE p.user_id = users.user_id)) "
            "WHERE user_id IN (SELECT user_id FROM temp.forgotten_pages)"
        )
        gone = conn.execute(
            "DELETE FROM served_pages WHERE (user_id, page_seq) IN "
            "(SELECT user_id, page_seq FROM temp.forgotten_pages)"
        ).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(gone)


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
        # other rows written with the group (``defer``): statement, parameters
        self.extras: list[tuple[str, tuple[Any, ...]]] = []
        self._count = 0
        self._since: float | None = None  # when the oldest buffered record came
        self._failures = 0

    def add(self, user_id: str, record: ServedRecord) -> None:
        self.pending.setdefault(user_id, []).append(record)
        self._count += 1
        if self._since is None:
            self._since = time.monotonic()

    def defer(self, sql: str, params: tuple[Any, ...]) -> None:
        """Write a row of another table with the next group (an experiment exposure),
        with the same promise as a served page: seen by this process's readers once they
        flush (``flush_served``), lost only with a crash before the commit. The statement
        must be harmless for a user gone meanwhile (write nothing for them)."""
        self.extras.append((sql, params))
        self._count += 1
        if self._since is None:
            self._since = time.monotonic()

    def drop(self, user_id: str) -> None:
        """Forget the user's records (they are being erased)."""
        self._count -= len(self.pending.pop(user_id, ()))
        if not self.pending and not self.extras:
            self._count, self._since = 0, None

    def queued(self, user_id: str) -> Sequence[ServedRecord]:
        return self.pending.get(user_id, ())

    def due(self, age_s: float | None = None) -> bool:
        """Time to commit: full, or its oldest record older than ``age_s`` (default
        ``max_age_s``)."""
        if self._since is None:
            return False
        limit = self.max_age_s if age_s is None else age_s
        return self._count >= self.max_records or time.monotonic() - self._since >= limit

    def commit(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Write everything buffered in one transaction on ``conn`` (the caller holds the
        connection's lock); a user erased meanwhile is skipped. Returns the pages written
        per user. On failure the records stay for the next attempt, and after
        ``ATTEMPTS`` they are dropped and logged: serving goes on either way."""
        written: dict[str, int] = {}
        if not self.pending and not self.extras:
            return written
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                written = write_records(conn, self.pending) if self.pending else {}
                for sql, params in self.extras:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                written = {}
                if conn.in_transaction:  # SQLite rolls back by itself on some errors
                    conn.execute("ROLLBACK")  # (a full disk): ROLLBACK then masked the cause
                raise
        except sqlite3.Error as exc:
            self._failures += 1
            if self._failures < ATTEMPTS:
                return written
            log.error(
                "served log: %d users' records and %d other rows dropped: %s",
                len(self.pending),
                len(self.extras),
                exc,
            )
        self.pending, self._count, self._since, self._failures = {}, 0, None, 0
        self.extras = []
        return written

    @staticmethod
    def served_since(
        stored: Sequence[tuple[Sequence[str], int]],
        queued: Sequence[ServedRecord],
        since_ms: int,
    ) -> list[str]:
        """The videos served at or after ``since_ms``, committed (``stored``, the pages
        from ``since_ms`` on with their times) or still queued, each once."""
        pages = [*stored, *((r.video_ids, r.ts_ms) for r in queued)]
        return list(dict.fromkeys(v for ids, t in pages if t >= since_ms for v in ids))
