"""The embedded default store: one SQLite file per region, in WAL mode.

Durability: every acknowledged write is committed to the WAL before the caller is
answered. With ``synchronous=NORMAL`` (the default) a committed transaction survives
a crash or ``kill -9`` of the process; ``?synchronous=full`` in the URL also survives
power loss at some cost in write latency.

The served log, and what a serving process runs beside it (group commits, the WAL
checkpointer), are the class this one builds on: ``fyp.storage.sqlite_served_log``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fyp.catalog.models import User, Video, now_ms
from fyp.config import check_region_name
from fyp.errors import AlreadyExists, ResidencyViolation, StorageError, UnknownUser
from fyp.events.schema import StoredEvent
from fyp.storage.base import ErasedCounts, EventRow, LabelRow, VideoRow, merge_label_sets
from fyp.storage.following_sql import sqlite_query
from fyp.storage.migrations import split_statements, sqlite_migrations
from fyp.storage.served_log import ServedBuffer
from fyp.storage.sqlite_rows import (
    EVENT_COLS,
    USER_COLS,
    VIDEO_COLS,
    dumps,
    event_from_row,
    keyset_pages,
    user_from_row,
    user_params,
    video_from_row,
    video_params,
)
from fyp.storage.sqlite_served_log import SQLiteServedLog

_CHUNK = 900  # stay under SQLite's bound-parameter limit in IN (...) lists
_SYNC_MODES = {"off", "normal", "full", "extra"}
BULK_REINDEX_ROWS = 10_000  # a bulk insert this large into an empty table indexes afterwards
BUSY_TIMEOUT_MS = 10_000  # how long a statement waits for another connection's lock
PURGE_RETRY_S = 0.005  # between two tries of an erasure's WAL truncation


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class SQLiteStore(SQLiteServedLog):
    """A region's store in one SQLite file (``sqlite:///path/to/file.sqlite``)."""

    def __init__(self, url: str, region: str, *, create: bool = False) -> None:
        """``create``: make the file if it is missing. Only what deliberately makes a
        region's store passes it: a missing file otherwise means a store moved away, a
        volume not mounted or a misspelt URL, and an empty store in its place would
        serve that region as if it had no users."""
        self.url = url
        self.region = check_region_name(region)
        if not url.startswith("sqlite:///"):
            raise StorageError(
                f"not a sqlite URL: {url!r} (use sqlite:///relative.db or sqlite:////abs.db)"
            )
        # sqlite:///rel/path, sqlite:////abs/path, sqlite:///:memory: (SQLAlchemy's convention)
        rest, _, query = url[len("sqlite:///") :].partition("?")
        if not rest:
            raise StorageError(f"no database path in {url!r}")
        self.path = rest
        options = {k: v[-1] for k, v in parse_qs(query).items()}
        self.synchronous = options.get("synchronous", "normal").lower()
        if self.synchronous not in _SYNC_MODES:
            raise StorageError(f"unknown synchronous mode {self.synchronous!r} in {url!r}")
        if not create and rest != ":memory:" and not Path(rest).exists():
            raise StorageError(
                f"the store of region {region!r} is missing: no file {rest} (moved, on a "
                "volume not mounted, or a wrong store URL in fyp.toml?); only `fyp init`, "
                "`fyp region add` and `fyp restore` create a store",
                region=region,
                path=rest,
            )
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = self._connect()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._served: ServedBuffer | None = None  # serving: the served log in groups
        self._served_window_ms: int | None = None  # serving: forget pages older than this
        # what user_version last read per user (profile, latest event, committed served
        # counter), kept while nothing but this store's served log wrote: the served log's
        # commits are added in, and any other write, here (``_writes``) or by another
        # connection (``PRAGMA data_version``), drops them all (``change_token``)
        self._versions: dict[str, tuple[int, int, int]] = {}
        self._versions_token: tuple[int, int] | None = None
        self._writes = 0  # transactions begun through this store

    # -- lifecycle ------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA cache_size=-65536")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open SQLite store {self.path}: {exc}") from exc
        return conn

    def check(self) -> None:
        """Also fails once the file was moved or deleted under the open store: its
        writes would go to a file no one will open again."""
        if self.path != ":memory:" and not Path(self.path).exists():
            raise StorageError(
                f"the store file of region {self.region!r} is gone: {self.path}",
                region=self.region,
            )
        try:
            super().check()
        except sqlite3.Error as exc:
            raise StorageError(f"the store of region {self.region!r} failed: {exc}") from exc

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            self._commit_served()  # what is still buffered
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._writes += 1  # before anything is written: change_token moves on
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0
                self._writes += 1  # and after: nothing read inside is kept past it

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self.transaction():
            c = self._conn
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = c.execute("SELECT value FROM store_meta WHERE key='region'").fetchone()
            if row is None:
                c.execute("INSERT INTO store_meta VALUES ('region', ?)", (self.region,))
            elif row[0] != self.region:
                raise StorageError(
                    f"store {self.path} belongs to region {row[0]!r}, "
                    f"not {self.region!r}: refusing to open it",
                    store_region=row[0],
                    region=self.region,
                )
            done = {v for (v,) in c.execute("SELECT version FROM schema_migrations")}
            for m in sqlite_migrations():
                if m.version in done:
                    continue
                for statement in split_statements(m.sql.format(region=self.region)):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, CAST(strftime('%s','now') AS "
                    "INTEGER) * 1000)",
                    (m.version, m.name),
                )
                applied.append(m.version)
        return applied

    def schema_version(self) -> int:
        with self._lock:
            exists = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
            ).fetchone()
            if not exists:
                return 0
            row = self._conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- for capability packages that keep their own tables in this store -------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read and return all rows (thread-safe)."""
        return self._query(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write inside the current (or a new) transaction; return rowcount."""
        with self.transaction():
            return int(self._conn.execute(sql, params).rowcount)

    def trigger_names(self, table: str) -> set[str]:
        """Names of the triggers on ``table`` (the audit log checks its own are there)."""
        rows = self._query(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
        )
        return {str(r[0]) for r in rows}

    def table_names(self) -> list[str]:
        rows = self._query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
        return [str(r[0]) for r in rows]

    def table_columns(self, table: str) -> list[tuple[str, str]]:
        return [(str(r[1]), str(r[2])) for r in self._query(f'PRAGMA table_info("{table}")')]

    def prepare_erasure(self) -> None:
        self._query("PRAGMA secure_delete=ON")  # deleted bytes are zeroed in the pages

    def purge_deleted(self) -> None:
        """Deleted rows were zeroed in the pages (``secure_delete``, set for erasures);
        this copies the WAL, which still holds them, into the file and empties it.

        SQLite waits (busy timeout) for readers and writers, but gives up at once when
        another connection is checkpointing (a serving store's background checkpointer
        every second, another process): it answers busy and leaves the WAL, the erased
        user's bytes in it, as it was. So it is tried again until the WAL is empty; a
        StorageError if it is still held after the busy timeout, and the truncation is
        owed (a marker next to the file, ``purge_is_owed``): a serving process's
        checkpointer does it within a second of the WAL's release, ``fyp erasure
        process`` when it next runs (``purge_owed``)."""
        with self._lock:
            if self._depth:
                raise StorageError("purge_deleted runs outside transactions")
        owed = self.owed_marker
        give_up = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            busy = self._query("PRAGMA wal_checkpoint(TRUNCATE)")[0][0]
            if not busy:
                if owed is not None:
                    owed.unlink(missing_ok=True)
                return
            if time.monotonic() >= give_up:
                if owed is not None:
                    owed.write_text(f"an erasure's WAL truncation is owed since {now_ms()}\n")
                raise StorageError(
                    f"the WAL of region {self.region!r} could not be emptied (another "
                    "connection kept it busy): deleted rows may still be in it",
                    region=self.region,
                    path=self.path,
                )
            time.sleep(PURGE_RETRY_S)

    def purge_owed(self) -> bool:
        """Do the truncation an earlier erasure could not (True), if one is owed."""
        if not self.purge_is_owed():
            return False
        self.purge_deleted()
        return True

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self.transaction():
            cursor = self._conn.executemany(sql, rows)
            return int(cursor.rowcount)  # this statement's rows, not triggers'

    def _in(self, sql: str, ids: Iterable[str]) -> list[tuple[Any, ...]]:
        """Run ``sql`` (with one ``{marks}`` placeholder) over ids in bounded chunks."""
        unique = list(dict.fromkeys(ids))
        out: list[tuple[Any, ...]] = []
        for part in _chunks(unique):
            out.extend(self._query(sql.format(marks=",".join("?" * len(part))), part))
        return out

    # -- users ----------------------------------------------------------------

    def insert_user(self, user: User) -> None:
        self._check_home(user)
        try:
            with self.transaction():
                self._conn.execute(
                    f"INSERT INTO users ({USER_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                    user_params(user),
                )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise AlreadyExists(
                    f"user {user.user_id!r} already exists", user_id=user.user_id
                ) from exc
            raise ResidencyViolation(str(exc), user_id=user.user_id) from exc

    def get_user(self, user_id: str) -> User | None:
        rows = self._query(f"SELECT {USER_COLS} FROM users WHERE user_id=?", (user_id,))
        return user_from_row(rows[0]) if rows else None

    def update_user(self, user: User) -> None:
        self._check_home(user)
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE users SET birth_year=?, country=?, language=?, consents=?, "
                "attributes=?, updated_at_ms=? WHERE user_id=?",
                (
                    user.birth_year,
                    user.country,
                    user.language,
                    dumps(user.consents or {}),
                    dumps(user.attributes or {}),
                    user.updated_at_ms,
                    user.user_id,
                ),
            )
            if cur.rowcount == 0:
                raise UnknownUser(f"no user {user.user_id!r}", user_id=user.user_id)

    def delete_user(self, user_id: str) -> ErasedCounts:
        with self.transaction():
            if self._served is not None:  # records not committed yet go with the rest
                self._served.drop(user_id)
            c = self._conn
            events = c.execute("DELETE FROM events WHERE user_id=?", (user_id,)).rowcount
            labels = int(
                c.execute(
                    "SELECT COALESCE(SUM(json_array_length(video_ids)), 0) FROM labels "
                    "WHERE user_id=?",
                    (user_id,),
                ).fetchone()[0]
            )
            c.execute("DELETE FROM labels WHERE user_id=?", (user_id,))
            c.execute("DELETE FROM served_pages WHERE user_id=?", (user_id,))
            users = c.execute("DELETE FROM users WHERE user_id=?", (user_id,)).rowcount
        return ErasedCounts(users=users, events=events, labels=labels)

    def existing_users(self, user_ids: Iterable[str]) -> set[str]:
        unique = list(dict.fromkeys(user_ids))
        if len(unique) == 1:  # the router placing a user it has not seen yet (a feed)
            rows = self._query("SELECT user_id FROM users WHERE user_id = ?", unique)
        else:
            rows = self._in("SELECT user_id FROM users WHERE user_id IN ({marks})", unique)
        return {r[0] for r in rows}

    def count_users(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM users")[0][0])

    def iter_users(self) -> Iterator[User]:
        sql = f"SELECT {USER_COLS} FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?"
        for row in keyset_pages(lambda after, n: self._query(sql, (after, n)), ""):
            yield user_from_row(tuple(row))

    def bulk_insert_users(self, users: Sequence[User]) -> int:
        for u in users:
            self._check_home(u)
        with self.transaction():
            cursor = self._conn.executemany(
                f"INSERT OR IGNORE INTO users ({USER_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [user_params(u) for u in users],
            )
            return int(cursor.rowcount)  # this statement's rows, not triggers'

    # -- videos ---------------------------------------------------------------
    def _check_published(self, video: Video) -> None:
        self._refuse_unpublished(video.video_id, video.regions)

    def insert_video(self, video: Video) -> None:
        self._check_published(video)
        try:
            with self.transaction():
                self._conn.execute(
                    f"INSERT INTO videos (video_id, region, {VIDEO_COLS.split(', ', 1)[1]}) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    video_params(video, self.region),
                )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(
                f"video {video.video_id!r} already exists", video_id=video.video_id
            ) from exc

    def get_video(self, video_id: str) -> Video | None:
        rows = self._query(f"SELECT {VIDEO_COLS} FROM videos WHERE video_id=?", (video_id,))
        return video_from_row(rows[0]) if rows else None

    def update_video(self, video: Video) -> None:
        self._check_published(video)
        with self.transaction():
            row = VideoRow.of(video)  # the one place a video's columns are encoded
            cur = self._conn.execute(
                "UPDATE videos SET creator_id=?, caption=?, hashtags=?, categories=?, tags=?, "
                "duration_ms=?, regions=?, attributes=?, updated_at_ms=? WHERE video_id=?",
                (
                    row.creator_id,
                    row.caption,
                    row.hashtags,
                    row.categories,
                    row.tags,
                    row.duration_ms,
                    row.regions,
                    row.attributes,
                    row.updated_at_ms,
                    row.video_id,
                ),
            )
            if cur.rowcount == 0:
                self.insert_video(video)

    def delete_video(self, video_id: str) -> bool:
        with self.transaction():
            return (
                self._conn.execute("DELETE FROM videos WHERE video_id=?", (video_id,)).rowcount > 0
            )

    def video_durations(self, video_ids: Iterable[str]) -> dict[str, int]:
        rows = self._in(
            "SELECT video_id, duration_ms FROM videos WHERE video_id IN ({marks})", video_ids
        )
        return {r[0]: int(r[1]) for r in rows}

    def get_videos(self, video_ids: Iterable[str]) -> dict[str, Video]:
        rows = self._in(f"SELECT {VIDEO_COLS} FROM videos WHERE video_id IN ({{marks}})", video_ids)
        return {r[0]: video_from_row(tuple(r)) for r in rows}

    def count_videos(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM videos")[0][0])

    def iter_videos(self) -> Iterator[Video]:
        sql = f"SELECT {VIDEO_COLS} FROM videos WHERE video_id > ? ORDER BY video_id LIMIT ?"
        for row in keyset_pages(lambda after, n: self._query(sql, (after, n)), ""):
            yield video_from_row(tuple(row))

    def bulk_insert_videos(self, videos: Sequence[Video | VideoRow]) -> int:
        published: dict[str, list[str]] = {}  # a catalogue's rows share a few region lists
        for v in videos:
            if isinstance(v, VideoRow):
                regions = published.get(v.regions)
                if regions is None:
                    regions = published[v.regions] = json.loads(v.regions)
                self._refuse_unpublished(v.video_id, regions)
            else:
                self._check_published(v)
        with self.transaction():
            cursor = self._conn.executemany(
                f"INSERT OR IGNORE INTO videos (video_id, region, {VIDEO_COLS.split(', ', 1)[1]}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [video_params(v, self.region) for v in videos],
            )
            return int(cursor.rowcount)  # this statement's rows, not triggers'

    # -- events ---------------------------------------------------------------
    def existing_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        return {
            r[0]
            for r in self._in("SELECT event_id FROM events WHERE event_id IN ({marks})", event_ids)
        }

    def stored_events(self, event_ids: Iterable[str]) -> dict[str, EventRow]:
        rows = self._in(
            "SELECT event_id, user_id, video_id, type, ts_ms, watch_ms, watch_ratio, "
            "valid_play, long_play, short_play FROM events WHERE event_id IN ({marks})",
            event_ids,
        )
        return {
            r[0]: EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], *map(bool, r[7:10]))
            for r in rows
        }

    def insert_events(self, rows: Sequence[EventRow]) -> list[bool]:
        sql = (
            "INSERT OR IGNORE INTO events (event_id, user_id, video_id, type, ts_ms, "
            "watch_ms, watch_ratio, valid_play, long_play, short_play) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)"
        )
        try:
            with self.transaction():
                execute = self._conn.execute
                # The UNIQUE event_id makes a repeat a no-op; rowcount says which rows landed.
                return [execute(sql, row).rowcount == 1 for row in rows]
        except sqlite3.IntegrityError as exc:
            # Ids cannot conflict (OR IGNORE), so only the user foreign key can fail.
            raise UnknownUser(f"event for a user not in region {self.region!r}: {exc}") from exc

    def bulk_insert_events(self, rows: Sequence[EventRow]) -> int:
        try:
            with self.transaction():
                rebuild = self._drop_secondary_indexes("events", len(rows))
                cursor = self._conn.executemany(
                    "INSERT OR IGNORE INTO events (event_id, user_id, video_id, type, ts_ms, "
                    "watch_ms, watch_ratio, valid_play, long_play, short_play) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                for sql in rebuild:
                    self._conn.execute(sql)
                return int(cursor.rowcount)  # this statement's rows, not triggers'
        except sqlite3.IntegrityError as exc:
            raise UnknownUser(f"event for a user not in region {self.region!r}: {exc}") from exc

    def _drop_secondary_indexes(self, table: str, rows: int) -> list[str]:
        """Into an empty table, many rows go in faster without its secondary indexes, built
        once afterwards (~10 % of the KuaiRec-EAR event inserts). Returns the statements
        that rebuild them; the caller's transaction makes the swap invisible to readers.
        The UNIQUE and foreign-key checks stay on every row."""
        if (
            rows < BULK_REINDEX_ROWS
            or self._conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
        ):
            return []
        found = self._conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (table,),
        ).fetchall()
        for name, _ in found:
            self._conn.execute(f'DROP INDEX "{name}"')
        return [sql for _, sql in found]

    def get_event(self, event_id: str) -> StoredEvent | None:
        rows = self._query(f"SELECT {EVENT_COLS} FROM events WHERE event_id=?", (event_id,))
        return event_from_row(rows[0]) if rows else None

    def user_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        rows = self._query(
            f"SELECT {EVENT_COLS} FROM events WHERE user_id=? ORDER BY seq DESC LIMIT ?",
            (user_id, limit),
        )
        return [event_from_row(r) for r in rows]

    def followed_creators(self, user_id: str) -> list[str]:
        rows = self._query("SELECT creator_id FROM follows WHERE user_id = ?", (user_id,))
        return [r[0] for r in rows]

    def blocked_creators(self, user_id: str) -> list[str]:
        rows = self._query(
            "SELECT creator_id FROM blocks WHERE user_id = ?1 "
            "UNION SELECT creator_id FROM blocked_by WHERE user_id = ?1",
            (user_id,),
        )
        return [r[0] for r in rows]

    def following_videos(
        self, user_id: str, after: tuple[int, str] | None, limit: int, since_ms: int
    ) -> list[tuple[str, str, int]]:
        rows = self._query(*sqlite_query(user_id, after, limit, since_ms))
        return [(str(v), str(c), int(t)) for v, c, t in rows]

    def user_not_interested(
        self, user_id: str, before_seq: int, since_ms: int, limit: int = 1000
    ) -> list[StoredEvent]:
        rows = self._query(
            f"SELECT {EVENT_COLS} FROM events "
            "WHERE user_id = ? AND type = 'not_interested' AND seq < ? AND ts_ms >= ? "
            "ORDER BY seq DESC LIMIT ?",
            (user_id, before_seq, since_ms, limit),
        )
        return [event_from_row(r) for r in rows]

    def iter_events(self, after_seq: int = 0, batch: int = 10_000) -> Iterator[StoredEvent]:
        sql = f"SELECT {EVENT_COLS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        for row in keyset_pages(lambda after, n: self._query(sql, (after, n)), after_seq, batch):
            yield event_from_row(tuple(row))

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def expire_events_before(self, before_ms: int, limit: int) -> int:
        with self.transaction():
            return int(
                self._conn.execute(
                    "DELETE FROM events WHERE seq IN "
                    "(SELECT seq FROM events WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
                    (before_ms, limit),
                ).rowcount
            )

    def count_events_before(self, before_ms: int) -> int:
        return int(self._query("SELECT COUNT(*) FROM events WHERE ts_ms < ?", (before_ms,))[0][0])

    def max_event_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    # -- held-out labels ------------------------------------------------------
    def insert_label_sets(
        self,
        dataset: str,
        split: str,
        sets: Mapping[str, Sequence[str]],
        stored_at_ms: int | None = None,
    ) -> int:
        if not sets:
            return 0
        at = now_ms() if stored_at_ms is None else stored_at_ms
        try:
            with self.transaction():
                held = self._label_sets(list(sets), dataset, split)
                added, changed = merge_label_sets(held, sets)
                self._conn.executemany(
                    "INSERT INTO labels (dataset, split, user_id, video_ids, stored_at_ms) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (user_id, dataset, split) DO UPDATE "
                    "SET video_ids = excluded.video_ids",
                    [(dataset, split, user_id, dumps(ids), at) for user_id, ids in changed],
                )
                return added
        except sqlite3.IntegrityError as exc:
            raise UnknownUser(f"label for a user not in region {self.region!r}: {exc}") from exc

    def _label_sets(self, user_ids: list[str], dataset: str, split: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(user_ids), 500):
            part = user_ids[i : i + 500]
            for user_id, videos in self._conn.execute(
                "SELECT user_id, video_ids FROM labels WHERE dataset=? AND split=? "
                f"AND user_id IN ({','.join('?' * len(part))})",
                (dataset, split, *part),
            ):
                out[user_id] = json.loads(videos)
        return out

    def iter_labels(self, dataset: str, split: str) -> Iterator[LabelRow]:
        sql = (
            "SELECT user_id, video_ids FROM labels WHERE dataset=? AND split=? AND user_id > ? "
            "ORDER BY user_id LIMIT ?"
        )

        def page(after: str, n: int) -> list[Any]:
            return self._query(sql, (dataset, split, after, n))

        for user_id, videos in keyset_pages(page, ""):
            for video_id in sorted(json.loads(videos)):
                yield LabelRow(dataset, split, user_id, video_id)

    def count_labels(self, dataset: str | None = None) -> int:
        total = "SELECT COALESCE(SUM(json_array_length(video_ids)), 0) FROM labels"
        if dataset is None:
            return int(self._query(total)[0][0])
        return int(self._query(total + " WHERE dataset=?", (dataset,))[0][0])
