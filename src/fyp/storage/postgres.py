"""A region's store on a PostgreSQL server, for deployments that outgrow one machine.

``postgresql://user:password@host:5432/database?schema=fyp_eu``: one database (or one
schema of it, with ``schema``) per region, on a server the region's policy allows.
Durability is the server's: a write is acknowledged once its transaction committed.

What differs from the SQLite store, on purpose:

- Event sequence numbers must follow commit order (training reads ``iter_events`` from
  the last ``seq`` it saw, and a lower number committed later would be skipped), so an
  event insert holds a transaction-level advisory lock of the region: writers of events
  take turns, as SQLite's single writer does.
- The served log is committed per page, with the user's row locked while the page is
  numbered, so two serving processes never give two pages one number.
- ``user_version`` is read afresh each time (one indexed query): there is no cheap
  "nothing changed" signal like SQLite's ``data_version``.

Capability packages (moderation, audit, keys) run their SQL through ``query`` /
``execute``, written for SQLite; :func:`to_postgres` translates the few dialect
differences they use.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fyp.catalog.models import User, Video, now_ms
from fyp.config import check_region_name
from fyp.errors import (
    AlreadyExists,
    InvalidRequest,
    ResidencyViolation,
    StorageError,
    UnknownUser,
)
from fyp.events.schema import StoredEvent
from fyp.storage.base import ErasedCounts, EventRow, LabelRow, VideoRow, merge_label_sets
from fyp.storage.following_sql import postgres_query
from fyp.storage.postgres_dialect import bool_as_int as _bool_as_int
from fyp.storage.postgres_dialect import driver as _driver
from fyp.storage.postgres_dialect import redact, split_url, to_postgres
from fyp.storage.postgres_schema import META_SQL, postgres_migrations
from fyp.storage.postgres_served_log import PostgresServedLog
from fyp.storage.postgres_snapshot import OPEN_LOCK, PostgresSnapshots
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

_EVENT_INSERT_COLS = (
    "event_id, user_id, video_id, type, ts_ms, watch_ms, watch_ratio, valid_play, "
    "long_play, short_play"
)
# the served counter: the newest page's number, or the floor kept in the users row once
# the pages are forgotten, whichever is greater (as in fyp.storage.served_log)
_OPEN_LOCK_SHARED = f"SELECT pg_advisory_lock_shared({OPEN_LOCK})"
_WRITER_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.fyp-writer'))"


class PostgresStore(PostgresSnapshots, PostgresServedLog):
    """A region's store in a PostgreSQL database (or one schema of it)."""

    def __init__(self, url: str, region: str, *, create: bool = False) -> None:
        """``create``: make the schema if it is missing. A store that is missing
        otherwise means a wrong URL, and an empty store in its place would serve that
        region as if it had no users."""
        self.url = url
        self.region = check_region_name(region)
        self._conninfo, self.schema = split_url(url)
        self._create = create
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = self._connect()
        self._stop = threading.Event()
        self._upkeep: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------
    def _connect(self) -> Any:
        psycopg = _driver()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())  # psycopg's has a hint on a line of its own
            raise StorageError(
                f"cannot connect to the PostgreSQL store of region {self.region!r} at "
                f"{redact(self.url)}: {reason}",
                region=self.region,
            ) from exc
        conn.adapters.register_dumper(bool, _bool_as_int(psycopg))
        try:
            if self.schema is not None:
                if self._create:
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.execute(f'SET search_path TO "{self.schema}"')
            if not self._create and not self._has_table(conn, "store_meta"):
                raise StorageError(
                    f"the store of region {self.region!r} is missing: no fyp tables at "
                    f"{redact(self.url)} (a wrong database or schema in fyp.toml?); only "
                    "`fyp init`, `fyp region add` and `fyp restore` create a store",
                    region=self.region,
                )
            # held shared while this store is open: a restore takes it exclusively
            # (PostgresSnapshots.claim_exclusive), so it sees who else has the store open
            conn.execute(_OPEN_LOCK_SHARED)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _has_table(conn: Any, name: str) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def trigger_names(self, table: str) -> set[str]:
        """Names of the triggers on ``table`` (the audit log checks its own are there)."""
        rows = self._all(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = to_regclass(%s)",
            (table,),
        )
        return {str(r[0]) for r in rows}

    def table_names(self) -> list[str]:
        rows = self._all(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [str(r[0]) for r in rows]

    def table_columns(self, table: str) -> list[tuple[str, str]]:
        rows = self._all(
            "SELECT column_name, upper(data_type) FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    def prepare_erasure(self) -> None:
        """Nothing to switch on: PostgreSQL has no secure delete (see purge_deleted)."""

    def purge_deleted(self) -> None:
        """VACUUM every table, so deleted rows' space is reclaimed and reused; the server's
        WAL and free space may hold the bytes until PostgreSQL recycles them (encrypt the
        server's disks: docs/architecture.md, Storage)."""
        with self._lock:
            if self._depth:
                raise StorageError("purge_deleted runs outside transactions")
            for table in self.table_names():
                self._exec(f'VACUUM "{table}"')

    def purge_owed(self) -> bool:
        """Never owed: a VACUUM that fails raises, and nothing else is left to do."""
        return False

    def check(self) -> None:
        try:
            super().check()
        except _driver().Error as exc:
            raise StorageError(f"the store of region {self.region!r} failed: {exc}") from exc

    def close(self) -> None:
        self._stop.set()
        if self._upkeep is not None:
            self._upkeep.join()
        with self._lock:
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
            self._depth = 1
            try:
                with self._translated(), self._conn.transaction():
                    # writers of a region take turns, as SQLite's one writer does: event
                    # and change-feed numbers then follow commit order, and a
                    # read-then-write (the audit chain's head) is never interleaved
                    self._conn.execute(_WRITER_LOCK)
                    yield
            finally:
                self._depth = 0

    def migrate(self) -> list[int]:
        applied: list[int] = []
        with self.transaction():
            for statement in META_SQL:
                self._exec(statement)
            row = self._one("SELECT value FROM store_meta WHERE key = 'region'")
            if row is None:
                self._exec("INSERT INTO store_meta VALUES ('region', %s)", (self.region,))
            elif row[0] != self.region:
                raise StorageError(
                    f"store {redact(self.url)} belongs to region {row[0]!r}, "
                    f"not {self.region!r}: refusing to open it",
                    store_region=row[0],
                    region=self.region,
                )
            done = {v for (v,) in self._all("SELECT version FROM schema_migrations")}
            for m in postgres_migrations():
                if m.version in done:
                    continue
                self._exec(m.sql.format(region=self.region))
                self._exec(
                    "INSERT INTO schema_migrations VALUES "
                    "(%s, %s, (extract(epoch FROM now()) * 1000)::bigint)",
                    (m.version, m.name),
                )
                applied.append(m.version)
        return applied

    def schema_version(self) -> int:
        with self._lock:
            if not self._has_table(self._conn, "schema_migrations"):
                return 0
            row = self._one("SELECT MAX(version) FROM schema_migrations")
        return int(row[0] or 0) if row else 0

    # -- raw access (the lock is held by the caller or taken here) -------------------
    def _exec(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        with self._lock, self._translated():
            return self._conn.execute(sql, params)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The driver's errors as fyp's: the server failing is a StorageError; a NUL,
        which psycopg refuses before sending it, the input's fault."""
        try:
            yield
        except _driver().OperationalError as exc:
            raise StorageError(f"the store of region {self.region!r} failed: {exc}") from exc
        except _driver().DataError as exc:
            if "NUL" not in str(exc):
                raise
            raise InvalidRequest(
                "text holding a NUL character (U+0000) cannot be stored or looked up "
                "in a PostgreSQL store"
            ) from exc

    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._exec(sql, params).fetchall())

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        with self._lock:
            return self._exec(sql, params).fetchone()

    # -- for capability packages that keep their own tables in this store -------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read written for SQLite (``to_postgres``) and return all rows."""
        return [tuple(r) for r in self._all(*to_postgres(sql, params))]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write inside the current (or a new) transaction; return rowcount."""
        with self.transaction():
            return int(self._exec(*to_postgres(sql, params)).rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        with self.transaction():
            return sum(self.execute(sql, row) for row in rows)

    def _in(self, sql: str, ids: Iterable[str]) -> list[Any]:
        """Run ``sql`` with ``= ANY(%s)`` bound to the unique ids."""
        unique = list(dict.fromkeys(ids))
        return self._all(sql, (unique,)) if unique else []

    # -- users ----------------------------------------------------------------

    def insert_user(self, user: User) -> None:
        self._check_home(user)
        errors = _driver().errors
        try:
            with self.transaction():
                self._exec(
                    f"INSERT INTO users ({USER_COLS}) VALUES ({','.join(['%s'] * 9)})",
                    user_params(user),
                )
        except errors.UniqueViolation as exc:
            raise AlreadyExists(
                f"user {user.user_id!r} already exists", user_id=user.user_id
            ) from exc
        except errors.IntegrityError as exc:
            raise ResidencyViolation(str(exc), user_id=user.user_id) from exc

    def get_user(self, user_id: str) -> User | None:
        row = self._one(f"SELECT {USER_COLS} FROM users WHERE user_id = %s", (user_id,))
        return user_from_row(row) if row else None

    def update_user(self, user: User) -> None:
        self._check_home(user)
        with self.transaction():
            cur = self._exec(
                "UPDATE users SET birth_year=%s, country=%s, language=%s, consents=%s, "
                "attributes=%s, updated_at_ms=%s WHERE user_id=%s",
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
            events = self._exec("DELETE FROM events WHERE user_id=%s", (user_id,)).rowcount
            labels = self._one(
                "SELECT COALESCE(SUM(json_array_length(video_ids::json)), 0) FROM labels "
                "WHERE user_id=%s",
                (user_id,),
            )[0]
            self._exec("DELETE FROM labels WHERE user_id=%s", (user_id,))
            self._exec("DELETE FROM served_pages WHERE user_id=%s", (user_id,))
            users = self._exec("DELETE FROM users WHERE user_id=%s", (user_id,)).rowcount
        return ErasedCounts(users=users, events=events, labels=int(labels))

    def existing_users(self, user_ids: Iterable[str]) -> set[str]:
        return {
            r[0] for r in self._in("SELECT user_id FROM users WHERE user_id = ANY(%s)", user_ids)
        }

    def count_users(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM users")[0])

    def iter_users(self) -> Iterator[User]:
        sql = f"SELECT {USER_COLS} FROM users WHERE user_id > %s ORDER BY user_id LIMIT %s"
        for row in keyset_pages(lambda after, n: self._all(sql, (after, n)), ""):
            yield user_from_row(tuple(row))

    def bulk_insert_users(self, users: Sequence[User]) -> int:
        for u in users:
            self._check_home(u)
        return self._copy_in(
            "users", USER_COLS, [user_params(u) for u in users], "ON CONFLICT DO NOTHING"
        )

    # -- videos ---------------------------------------------------------------

    def insert_video(self, video: Video) -> None:
        self._refuse_unpublished(video.video_id, video.regions)
        try:
            with self.transaction():
                self._exec(
                    f"INSERT INTO videos (video_id, region, {VIDEO_COLS.split(', ', 1)[1]}) "
                    f"VALUES ({','.join(['%s'] * 12)})",
                    video_params(video, self.region),
                )
        except _driver().errors.IntegrityError as exc:
            raise AlreadyExists(
                f"video {video.video_id!r} already exists", video_id=video.video_id
            ) from exc

    def get_video(self, video_id: str) -> Video | None:
        row = self._one(f"SELECT {VIDEO_COLS} FROM videos WHERE video_id = %s", (video_id,))
        return video_from_row(row) if row else None

    def update_video(self, video: Video) -> None:
        self._refuse_unpublished(video.video_id, video.regions)
        with self.transaction():
            row = VideoRow.of(video)
            cur = self._exec(
                "UPDATE videos SET creator_id=%s, caption=%s, hashtags=%s, categories=%s, "
                "tags=%s, duration_ms=%s, regions=%s, attributes=%s, updated_at_ms=%s "
                "WHERE video_id=%s",
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
            return bool(self._exec("DELETE FROM videos WHERE video_id=%s", (video_id,)).rowcount)

    def video_durations(self, video_ids: Iterable[str]) -> dict[str, int]:
        rows = self._in(
            "SELECT video_id, duration_ms FROM videos WHERE video_id = ANY(%s)", video_ids
        )
        return {r[0]: int(r[1]) for r in rows}

    def get_videos(self, video_ids: Iterable[str]) -> dict[str, Video]:
        rows = self._in(f"SELECT {VIDEO_COLS} FROM videos WHERE video_id = ANY(%s)", video_ids)
        return {r[0]: video_from_row(tuple(r)) for r in rows}

    def count_videos(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM videos")[0])

    def iter_videos(self) -> Iterator[Video]:
        sql = f"SELECT {VIDEO_COLS} FROM videos WHERE video_id > %s ORDER BY video_id LIMIT %s"
        for row in keyset_pages(lambda after, n: self._all(sql, (after, n)), ""):
            yield video_from_row(tuple(row))

    def bulk_insert_videos(self, videos: Sequence[Video | VideoRow]) -> int:
        for v in videos:
            regions = v.regions if isinstance(v, Video) else _regions_of(v)
            self._refuse_unpublished(v.video_id, regions)
        return self._copy_in(
            "videos",
            f"video_id, region, {VIDEO_COLS.split(', ', 1)[1]}",
            [video_params(v, self.region) for v in videos],
            "ON CONFLICT DO NOTHING",
        )

    def _copy_in(self, table: str, cols: str, rows: Sequence[Sequence[Any]], tail: str) -> int:
        """Many rows in one transaction: COPY into a scratch table shaped like ``table``,
        then one INSERT ... SELECT in the rows' order (ids already present skipped by
        ``tail``). Returns how many rows were written."""
        if not rows:
            return 0
        with self.transaction():
            self._exec(
                f"CREATE TEMP TABLE IF NOT EXISTS fyp_copy_{table} ON COMMIT DELETE ROWS AS "
                f"SELECT {cols}, 0::bigint AS fyp_ord FROM {table} WITH NO DATA"
            )
            with self._conn.cursor() as cur:
                with cur.copy(f"COPY fyp_copy_{table} ({cols}, fyp_ord) FROM STDIN") as copy:
                    for n, row in enumerate(rows):
                        copy.write_row((*row, n))
                written = cur.execute(
                    f"INSERT INTO {table} ({cols}) SELECT {cols} FROM fyp_copy_{table} "
                    f"ORDER BY fyp_ord {tail}"
                ).rowcount
            return int(written)

    # -- events ---------------------------------------------------------------
    def existing_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        return {
            r[0]
            for r in self._in("SELECT event_id FROM events WHERE event_id = ANY(%s)", event_ids)
        }

    def stored_events(self, event_ids: Iterable[str]) -> dict[str, EventRow]:
        rows = self._in(
            f"SELECT {_EVENT_INSERT_COLS} FROM events WHERE event_id = ANY(%s)", event_ids
        )
        return {r[0]: EventRow(*r[:7], *map(bool, r[7:10])) for r in rows}

    def insert_events(self, rows: Sequence[EventRow]) -> list[bool]:
        sql = (
            f"INSERT INTO events ({_EVENT_INSERT_COLS}) VALUES ({','.join(['%s'] * 10)}) "
            "ON CONFLICT (event_id) DO NOTHING"
        )
        try:
            with self.transaction():
                return [self._exec(sql, tuple(row)).rowcount == 1 for row in rows]
        except _driver().errors.IntegrityError as exc:
            raise UnknownUser(f"event for a user not in region {self.region!r}: {exc}") from exc

    def bulk_insert_events(self, rows: Sequence[EventRow]) -> int:
        try:
            return self._copy_in(
                "events", _EVENT_INSERT_COLS, rows, "ON CONFLICT (event_id) DO NOTHING"
            )
        except _driver().errors.IntegrityError as exc:
            raise UnknownUser(f"event for a user not in region {self.region!r}: {exc}") from exc

    def get_event(self, event_id: str) -> StoredEvent | None:
        row = self._one(f"SELECT {EVENT_COLS} FROM events WHERE event_id = %s", (event_id,))
        return event_from_row(row) if row else None

    def user_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        rows = self._all(
            f"SELECT {EVENT_COLS} FROM events WHERE user_id = %s ORDER BY seq DESC LIMIT %s",
            (user_id, limit),
        )
        return [event_from_row(r) for r in rows]

    def followed_creators(self, user_id: str) -> list[str]:
        rows = self._all("SELECT creator_id FROM follows WHERE user_id = %s", (user_id,))
        return [str(r[0]) for r in rows]

    def blocked_creators(self, user_id: str) -> list[str]:
        rows = self._all(
            "SELECT creator_id FROM blocks WHERE user_id = %(u)s "
            "UNION SELECT creator_id FROM blocked_by WHERE user_id = %(u)s",
            {"u": user_id},
        )
        return [str(r[0]) for r in rows]

    def following_videos(
        self, user_id: str, after: tuple[int, str] | None, limit: int, since_ms: int
    ) -> list[tuple[str, str, int]]:
        rows = self._all(*to_postgres(*postgres_query(user_id, after, limit, since_ms)))
        return [(str(v), str(c), int(t)) for v, c, t in rows]

    def user_not_interested(
        self, user_id: str, before_seq: int, since_ms: int, limit: int = 1000
    ) -> list[StoredEvent]:
        rows = self._all(
            f"SELECT {EVENT_COLS} FROM events WHERE user_id = %s AND type = 'not_interested' "
            "AND seq < %s AND ts_ms >= %s ORDER BY seq DESC LIMIT %s",
            (user_id, before_seq, since_ms, limit),
        )
        return [event_from_row(r) for r in rows]

    def iter_events(self, after_seq: int = 0, batch: int = 10_000) -> Iterator[StoredEvent]:
        sql = f"SELECT {EVENT_COLS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s"
        for row in keyset_pages(lambda after, n: self._all(sql, (after, n)), after_seq, batch):
            yield event_from_row(tuple(row))

    def count_events(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM events")[0])

    def expire_events_before(self, before_ms: int, limit: int) -> int:
        with self.transaction():
            return int(
                self._exec(
                    "DELETE FROM events WHERE seq IN "
                    "(SELECT seq FROM events WHERE ts_ms < %s ORDER BY ts_ms LIMIT %s)",
                    (before_ms, limit),
                ).rowcount
            )

    def count_events_before(self, before_ms: int) -> int:
        return int(self._one("SELECT COUNT(*) FROM events WHERE ts_ms < %s", (before_ms,))[0])

    def max_event_seq(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(seq), 0) FROM events")[0])

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
                held = {
                    user_id: json.loads(videos)
                    for user_id, videos in self._all(
                        "SELECT user_id, video_ids FROM labels WHERE dataset = %s AND "
                        "split = %s AND user_id = ANY(%s)",
                        (dataset, split, list(sets)),
                    )
                }
                added, changed = merge_label_sets(held, sets)
                for user_id, ids in changed:
                    self._exec(
                        "INSERT INTO labels (dataset, split, user_id, video_ids, stored_at_ms) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, dataset, split) "
                        "DO UPDATE SET video_ids = excluded.video_ids",
                        (dataset, split, user_id, dumps(ids), at),
                    )
                return added
        except _driver().errors.IntegrityError as exc:
            raise UnknownUser(f"label for a user not in region {self.region!r}: {exc}") from exc

    def iter_labels(self, dataset: str, split: str) -> Iterator[LabelRow]:
        sql = (
            "SELECT user_id, video_ids FROM labels WHERE dataset = %s AND split = %s "
            "AND user_id > %s ORDER BY user_id LIMIT %s"
        )

        def page(after: str, n: int) -> list[Any]:
            return self._all(sql, (dataset, split, after, n))

        for user_id, videos in keyset_pages(page, ""):
            for video_id in sorted(json.loads(videos)):
                yield LabelRow(dataset, split, user_id, video_id)

    def count_labels(self, dataset: str | None = None) -> int:
        total = "SELECT COALESCE(SUM(json_array_length(video_ids::json)), 0) FROM labels"
        if dataset is None:
            return int(self._one(total)[0])
        return int(self._one(total + " WHERE dataset = %s", (dataset,))[0])


def _regions_of(row: VideoRow) -> list[str]:
    regions = json.loads(row.regions)
    return [str(r) for r in regions] if isinstance(regions, list) else []
