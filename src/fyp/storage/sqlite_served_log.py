"""The served log of a SQLite store, and the upkeep a serving process runs beside it.

``SQLiteStore`` builds on this class; it is apart because it is the one part of the
store with state of its own besides the connection: in a serving process
(``start_background_maintenance``) the served log is committed in groups
(``fyp.storage.served_log``), and a background thread with its own connection sweeps
up a group traffic left behind, checkpoints the WAL (every second, or sooner after a
burst of writes) and forgets pages older than the feed's window. The reads that must
see records not committed yet live here too (``user_version``, ``served_since``), with
the cache of user versions the group commits keep current (``change_token``).

The checkpointer and the groups share a lock (``_Checkpoints``): a group waits while a
checkpoint of any serving store of the process runs (``SQLiteServedLog._checkpoint``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fyp.errors import StorageError, UnknownUser
from fyp.storage.base import Store
from fyp.storage.served_log import (
    COUNTER,
    COUNTER_SQL,
    ServedBuffer,
    ServedRecord,
    forget_before,
    read_pages,
    write_records,
)

CHECKPOINT_INTERVAL_S = 1.0
# ... or sooner, once this many transactions were written since the last one (about two
# per transaction: ``_writes``): ~1,000 single-event writes add a few thousand WAL pages,
# where a second of them at ~10,000 events/s went past the safety cap below, and the
# request whose commit crossed it ran the checkpoint itself (p99 35-59 ms)
CHECKPOINT_AFTER_WRITES = 2_000
SERVED_SWEEP_S = 0.05  # a served group left behind by traffic waits at most this
SERVING_AUTOCHECKPOINT_PAGES = 20_000  # safety cap when the background checkpointer lags
SERVED_FORGET_S = 60.0  # how often a serving store forgets pages older than the window
SERVED_FORGET_CHUNK = 250  # pages per forgetting transaction: ~6 ms of write lock each
SERVED_FORGET_PAUSE_S = 0.02  # between two such transactions
# next to the store file while an erasure's WAL truncation is owed (it met a busy WAL):
# the serving checkpointer or ``fyp erasure process`` does it, then removes the marker
PURGE_OWED_SUFFIX = "-purge-owed"
COUNTER_CACHE_USERS = 100_000  # user versions kept (user_version); emptied when full
log = logging.getLogger("fyp.storage")


class _Checkpoints:
    """The serving stores of a process checkpoint one at a time, and the served log's
    groups of every store wait while one does: they share the disk."""

    lock = threading.Lock()
    running = False


class SQLiteServedLog(Store):
    """The served log and background maintenance of ``SQLiteStore``, which opens the
    connection and sets the state below (``SQLiteStore.__init__``)."""

    path: str
    region: str
    _lock: threading.RLock
    _depth: int  # transactions open on the connection (``SQLiteStore.transaction``)
    _conn: sqlite3.Connection
    _stop: threading.Event
    _checkpointer: threading.Thread | None
    _served: ServedBuffer | None
    _served_window_ms: int | None
    _versions: dict[str, tuple[int, int, int]]
    _versions_token: tuple[int, int] | None
    _writes: int

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    # -- background maintenance -----------------------------------------------
    def start_background_maintenance(self, served_window_ms: int | None = None) -> None:
        """For a serving process: commit the served log in groups of a few milliseconds
        (``fyp.storage.served_log``), and checkpoint the WAL from a background thread
        with its own connection (every second, or sooner after a burst of writes), which
        also commits a group that traffic left behind and, given ``served_window_ms``,
        forgets pages older than that once a minute.

        SQLite's automatic checkpoint runs inside whichever commit crosses the threshold,
        so every few hundred single-event writes one request paid for copying and syncing
        the WAL. A PASSIVE checkpoint never blocks writers, and sqlite3 releases the GIL
        while it runs, so the event loop keeps answering."""
        if self._checkpointer is not None or self.path == ":memory:":
            return
        with self._lock:
            self._served = ServedBuffer()
            self._served_window_ms = served_window_ms
            self._conn.execute(f"PRAGMA wal_autocheckpoint={SERVING_AUTOCHECKPOINT_PAGES}")
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop,
            args=(self._writes,),  # counted from now, however late the thread starts
            name=f"fyp-checkpoint-{self.region}",
            daemon=True,
        )
        self._checkpointer.start()

    def _checkpoint_loop(self, written: int) -> None:
        """``written``: ``_writes`` at the last checkpoint (at the start, when none ran)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        last_checkpoint = last_forget = time.monotonic()
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            conn.execute("PRAGMA foreign_keys=ON")
            while not self._stop.wait(SERVED_SWEEP_S):
                with self._lock:  # a group no request came to commit
                    self._commit_if_due(SERVED_SWEEP_S)
                now = time.monotonic()
                if self._served_window_ms is not None and now - last_forget >= SERVED_FORGET_S:
                    last_forget = now
                    self._forget_served(conn, self._served_window_ms)
                writes = self._writes
                due = writes - written >= CHECKPOINT_AFTER_WRITES
                if not due and now - last_checkpoint < CHECKPOINT_INTERVAL_S:
                    continue
                last_checkpoint, written = now, writes
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database while the served log's groups wait (they stay
        buffered, and visible to this process), then commit this store's group.

        A group committed during a checkpoint (of this store or another on the same
        disk) waited 8-26 ms on the disk, and, worse, kept the WAL from ever being
        restarted: SQLite starts the WAL over only when a write begins with every frame
        copied, so under steady traffic the WAL grew by every second's pages (70 MB in
        20 s of wrk) and each checkpoint took longer. Other writes (events, profiles)
        do not wait: they are acknowledged only once committed."""
        with _Checkpoints.lock:
            with self._lock:  # no group of this store is being committed
                _Checkpoints.running = True
            try:
                if self.purge_is_owed():
                    self._truncate_owed(conn)
                else:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # busy or locked: try again next interval
            finally:
                _Checkpoints.running = False
        with self._lock:
            self._commit_if_due()

    @property
    def owed_marker(self) -> Path | None:
        """The file that says a WAL truncation is owed (None: an in-memory store)."""
        return None if self.path == ":memory:" else Path(self.path + PURGE_OWED_SUFFIX)

    def purge_is_owed(self) -> bool:
        """An erasure could not empty the WAL (``SQLiteStore.purge_deleted``), and
        nothing has since: the erased rows' bytes may still be in it."""
        marker = self.owed_marker
        return marker is not None and marker.exists()

    def _truncate_owed(self, conn: sqlite3.Connection) -> None:
        """The owed truncation, on the checkpointer's connection (which waits up to its
        busy timeout for readers and writers); the marker goes once the WAL is empty."""
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        marker = self.owed_marker
        if not busy and marker is not None:
            marker.unlink(missing_ok=True)
            log.info("region %s: the WAL an erasure left busy is emptied", self.region)

    def _forget_served(self, conn: sqlite3.Connection, window_ms: int) -> None:
        """Forget pages older than the window, a chunk per transaction; a failure is
        logged and retried at the next pass (the feed never reads past the window)."""
        before = time.time_ns() // 1_000_000 - window_ms
        try:
            # a pause between chunks leaves the write lock to the served log's group
            # commits while a backlog (say, the first pass after an upgrade) goes
            self._forget_in_chunks(conn, before, SERVED_FORGET_PAUSE_S)
        except sqlite3.Error as exc:
            log.warning("served log: forgetting old pages failed, retrying later: %s", exc)

    def _commit_if_due(self, age_s: float | None = None) -> None:
        """Commit the served log's group if it is due (``ServedBuffer.due``) and no
        checkpoint of this process is running: else a later call does (caller holds
        ``_lock``)."""
        if self._served is not None and self._served.due(age_s) and not _Checkpoints.running:
            self._commit_served()

    def flush_served(self) -> None:
        with self._lock:
            self._commit_served()

    def defer_write(self, sql: str, params: tuple[Any, ...]) -> bool:
        """In a serving process, write the row with the served log's next group (one
        transaction for the pages and these of a few ms: no commit of its own, and the
        cache of user versions stays); elsewhere False, and the caller writes it."""
        with self._lock:
            if self._served is None:
                return False
            self._served.defer(sql, params)
            self._commit_if_due()
            return True

    def _commit_served(self) -> None:
        """Commit the buffered served records (caller holds ``_lock``), unless a
        transaction is open on the connection: then the next call does."""
        if self._served is not None and not self._depth:
            versions = self._versions
            for user_id, pages in self._served.commit(self._conn).items():
                known = versions.get(user_id)
                if known is not None:
                    versions[user_id] = (known[0], known[1], known[2] + pages)

    # -- served log -----------------------------------------------------------
    def record_served(self, user_id: str, video_ids: Sequence[str], ts_ms: int) -> int:
        self._refuse_served_elsewhere("recording a served page")
        record = ServedRecord(tuple(video_ids), ts_ms)
        with self._lock:
            served = self._served
            if served is None:
                with self.transaction():
                    # the counter is what user_version reads: every record changes it
                    if not write_records(self._conn, {user_id: [record]})[user_id]:
                        raise UnknownUser(f"no user {user_id!r} in region {self.region!r}")
                    return int(self._conn.execute(COUNTER_SQL, (user_id,)).fetchone()[0])
            # serving: committed with the group it joins (served_log.py); a user erased
            # by another process meanwhile is skipped there
            known = self._current_versions().get(user_id)
            if known is None:
                rows = self._query(COUNTER_SQL, (user_id,))
                if not rows:
                    raise UnknownUser(f"no user {user_id!r} in region {self.region!r}")
                committed = int(rows[0][0])
            else:
                committed = known[2]
            served.add(user_id, record)
            counter = committed + len(served.queued(user_id))
            self._commit_if_due()
            return counter

    def forget_served_before(self, before_ms: int) -> int:
        with self._lock:
            if self._depth:
                raise StorageError("forget_served_before runs in transactions of its own")
            self._commit_served()
            self._writes += 1
            return self._forget_in_chunks(self._conn, before_ms, 0.0)

    def _forget_in_chunks(self, conn: sqlite3.Connection, before_ms: int, pause_s: float) -> int:
        """Forget pages served before ``before_ms``, ``SERVED_FORGET_CHUNK`` per
        transaction, ``pause_s`` apart (until the store closes); returns how many."""
        gone = 0
        while True:
            chunk = forget_before(conn, before_ms, SERVED_FORGET_CHUNK)
            gone += chunk
            if chunk < SERVED_FORGET_CHUNK or (pause_s and self._stop.wait(pause_s)):
                return gone

    def user_version(self, user_id: str) -> tuple[int, ...] | None:
        with self._lock:  # committed and buffered records, each counted once
            known = self._versions.get(user_id)
            if known is None or self.change_token() != self._versions_token:
                found = self._read_version(user_id)
                if found is None:
                    return None
                known = found
            buffered = 0 if self._served is None else len(self._served.queued(user_id))
        return (known[0], known[1], known[2] + buffered)

    def _read_version(self, user_id: str) -> tuple[int, int, int] | None:
        """Read the user's version and the change token in one statement (one read
        transaction: a user not seen since the last write costs one, not two), keep it,
        and drop every kept version if the token moved (caller holds ``_lock``)."""
        rows = self._query(
            "SELECT d.data_version, u.user_id, u.updated_at_ms, "
            f"(SELECT MAX(seq) FROM events WHERE user_id = ?1), {COUNTER} "
            "FROM pragma_data_version() AS d LEFT JOIN users AS u ON u.user_id = ?1",
            (user_id,),
        )
        data_version, found, *version = rows[0]
        versions = self._versions
        token = (int(data_version), self._writes)
        if token != self._versions_token:
            versions.clear()
            self._versions_token = token
        if found is None:
            return None
        profile, event, served = (int(v) if v is not None else -1 for v in version)
        known = (profile, event, served)
        if len(versions) >= COUNTER_CACHE_USERS:
            versions.clear()
        versions[user_id] = known
        return known

    def change_token(self) -> tuple[int, int]:
        """Equal between two calls only if nothing was written to the database meanwhile
        except this store's served log: SQLite's ``data_version`` (commits by other
        connections) and the transactions begun here."""
        with self._lock:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            return (int(version), self._writes)

    def _current_versions(self) -> dict[str, tuple[int, int, int]]:
        """``_versions``, emptied first if anything else was written since they were read
        (caller holds ``_lock``)."""
        token = self.change_token()
        if token != self._versions_token:
            self._versions.clear()
            self._versions_token = token
        return self._versions

    def served_since(self, user_id: str, since_ms: int, *, left_here: bool = False) -> list[str]:
        if not left_here:
            self._refuse_served_elsewhere("reading served pages")
        with self._lock:  # committed and buffered records, each counted once
            pages = read_pages(self._conn, user_id, since_ms)
            queued = () if self._served is None else list(self._served.queued(user_id))
        return ServedBuffer.served_since(pages, queued, since_ms)
