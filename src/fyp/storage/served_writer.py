"""The served log, written behind the feed's response in batches from a thread of its own.

Recording a page is the one write on the feed's path, and committing it cost a serving
process about as much as the rest of a page served from an order ranked ahead. In a
serving process (``SQLiteStore.start_background_maintenance``) a record goes to a queue
instead, and a writer thread with its own connection commits whatever has queued up in
one transaction; sqlite3 releases the GIL while it works, so the event loop goes on
answering on the other core.

Until a record is committed this process still sees it: ``SQLiteStore.user_version``
counts it and ``served_since`` returns it, so the next page never repeats it. Other
processes see it at the commit, a few milliseconds later. A crash loses what was not
committed yet: the user may be shown those videos again. Nothing else is deferred;
events are acknowledged only once committed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

ROWS_PER_STATEMENT = 300  # a page is at most 100 videos: one statement, well under 32766 ?s
RETRIES = 3
READ_ATTEMPTS = 3
T = TypeVar("T")
BATCH_WINDOW_S = 0.005
log = logging.getLogger("fyp.storage")


@dataclass(frozen=True)
class ServedRecord:
    video_ids: tuple[str, ...]
    ts_ms: int
    forget_before_ms: int | None


def write_records(
    conn: sqlite3.Connection, user_id: str, records: Sequence[ServedRecord]
) -> int | None:
    """Apply a user's records inside the caller's transaction: the served counter goes
    up by one per record. Returns the new counter, or None if the user is gone."""
    row = conn.execute(
        "UPDATE users SET served_seq = served_seq + ? WHERE user_id=? RETURNING served_seq",
        (len(records), user_id),
    ).fetchone()
    if row is None:
        return None
    for record in records:
        unique = list(dict.fromkeys(record.video_ids))  # one statement: a row appears once
        for start in range(0, len(unique), ROWS_PER_STATEMENT):
            part = unique[start : start + ROWS_PER_STATEMENT]
            conn.execute(
                "INSERT INTO served (user_id, video_id, served_at_ms) VALUES "
                + ",".join(["(?,?,?)"] * len(part))
                + " ON CONFLICT (user_id, video_id) "
                "DO UPDATE SET served_at_ms=excluded.served_at_ms",
                [x for v in part for x in (user_id, v, record.ts_ms)],
            )
        if record.forget_before_ms is not None:
            conn.execute(
                "DELETE FROM served WHERE user_id=? AND served_at_ms<?",
                (user_id, record.forget_before_ms),
            )
    return int(row[0])


class ServedWriter:
    """Queued served records of one store, committed by a background thread.

    ``lock`` guards the queue. ``generation`` is odd while a commit is under way and goes
    up again once its records have left the queue, so a reader that saw the same even
    generation before and after reading the store saw every record exactly once:
    committed or queued (``read``)."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._pending: dict[str, list[ServedRecord]] = {}
        self._generation = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fyp-served-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def read(self, user_id: str, query: Callable[[], T]) -> tuple[T, list[ServedRecord]]:
        """``query()`` of the store and the user's queued records, consistent: each
        record is in exactly one of them. Lock-free while no commit lands meanwhile (the
        store read never waits on a commit); else it waits for the commit to finish."""
        for _ in range(READ_ATTEMPTS):
            with self.lock:
                generation = self._generation
                queued = list(self._pending.get(user_id, ()))
            if generation % 2 == 0:
                value = query()
                with self.lock:
                    if self._generation == generation:
                        return value, queued
        with self.lock:
            while self._generation % 2:
                self._wake.wait()
            return query(), list(self._pending.get(user_id, ()))

    def submit(self, user_id: str, record: ServedRecord) -> None:
        with self.lock:
            self._pending.setdefault(user_id, []).append(record)
            self._wake.notify_all()

    @staticmethod
    def served_since(
        stored: Sequence[tuple[str, int]], queued: Sequence[ServedRecord], since_ms: int
    ) -> list[str]:
        """The served videos at or after ``since_ms`` once the user's ``queued`` records
        land on ``stored`` (committed rows from ``since_ms`` on, with their times): later
        times win, and each record's pruning applies in turn."""
        if not queued:
            return [v for v, _ in stored]
        latest = dict(stored)
        for record in queued:
            latest.update(dict.fromkeys(record.video_ids, record.ts_ms))
            if record.forget_before_ms is not None:
                latest = {v: t for v, t in latest.items() if t >= record.forget_before_ms}
        return [v for v, t in latest.items() if t >= since_ms]

    def close(self) -> None:
        """Commit everything queued, then stop the thread."""
        with self.lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            while True:
                with self.lock:
                    while not self._pending and not self._stopping:
                        self._wake.wait()
                    if not self._pending:
                        return  # stopping, and everything is committed
                    stopping = self._stopping
                if not stopping:
                    time.sleep(BATCH_WINDOW_S)  # let a few more pages join this commit
                with self.lock:
                    batch = {u: list(records) for u, records in self._pending.items()}
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: dict[str, list[ServedRecord]]) -> None:
        for attempt in range(1, RETRIES + 1):
            committed = False
            try:
                conn.execute("BEGIN IMMEDIATE")
                for user_id, records in batch.items():
                    write_records(conn, user_id, records)  # a user erased meanwhile: skipped
                with self.lock:
                    self._generation += 1  # odd: readers cannot tell which side they saw
                try:
                    conn.execute("COMMIT")
                    committed = True
                finally:
                    with self.lock:
                        if committed or attempt == RETRIES:
                            self._forget(batch)
                        self._generation += 1
                        self._wake.notify_all()
                return
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if attempt == RETRIES:
                    log.error("served log: %d users' records dropped: %s", len(batch), exc)
                    with self.lock:
                        self._forget(batch)

    def _forget(self, batch: dict[str, list[ServedRecord]]) -> None:
        """Drop the committed (or abandoned) records from the queue (caller holds lock)."""
        for user_id, records in batch.items():
            queued = self._pending.get(user_id)
            if queued is None:
                continue
            del queued[: len(records)]
            if not queued:
                del self._pending[user_id]
