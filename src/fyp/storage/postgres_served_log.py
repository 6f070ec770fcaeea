"""The served log of a PostgreSQL store, and the upkeep a serving process runs beside it.

``PostgresStore`` builds on this class (as the SQLite store on
``fyp.storage.sqlite_served_log``). A page is committed when it is recorded, in one
statement that numbers it from the user's counter (the server takes concurrent writers,
so there is no group commit to wait for): two serving processes that give a user's
pages the same number at once are told so by the key, and the later one numbers again.
Pages older than the feed's window are forgotten by a maintenance thread, at the SQLite
store's interval (``SERVED_FORGET_S``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from fyp.errors import StorageError, UnknownUser
from fyp.storage import sqlite_served_log as upkeep
from fyp.storage.base import Store, json_text
from fyp.storage.postgres_dialect import driver as _driver

# the served counter: the newest page's number, or the floor kept in the users row once
# the pages are forgotten, whichever is greater (as in fyp.storage.served_log)
_COUNTER = (
    "GREATEST(served_seq, COALESCE((SELECT MAX(page_seq) FROM served_pages "
    "WHERE user_id = %(u)s), served_seq))"
)
_FORGET_CHUNK = 1_000
_NUMBERING_ATTEMPTS = 20  # pages of one user numbered by other processes at once
log = logging.getLogger("fyp.storage")


class PostgresServedLog(Store):
    """The served log and maintenance of ``PostgresStore``, which opens the connection
    and sets the state below (``PostgresStore.__init__``)."""

    region: str
    _stop: threading.Event
    _upkeep: threading.Thread | None

    @abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any: ...

    @abstractmethod
    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]: ...

    @abstractmethod
    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any: ...

    def start_background_maintenance(self, served_window_ms: int | None = None) -> None:
        """For a serving process, given ``served_window_ms``: forget pages older than the
        window now and then (as the SQLite store's maintenance thread does, at the same
        interval, ``SERVED_FORGET_S``). The server needs no checkpoints."""
        if served_window_ms is None or self._upkeep is not None:
            return
        self._upkeep = threading.Thread(
            target=self._forget_loop,
            args=(served_window_ms,),
            name=f"fyp-served-upkeep-{self.region}",
            daemon=True,
        )
        self._upkeep.start()

    def _forget_loop(self, window_ms: int) -> None:
        while not self._stop.wait(upkeep.SERVED_FORGET_S):
            try:
                self.forget_served_before(time.time_ns() // 1_000_000 - window_ms)
            except (StorageError, _driver().Error) as exc:
                log.warning("served log: forgetting old pages failed, retrying later: %s", exc)

    def user_version(self, user_id: str) -> tuple[int, ...] | None:
        row = self._one(
            "SELECT updated_at_ms, (SELECT MAX(seq) FROM events WHERE user_id = %(u)s), "
            f"{_COUNTER} FROM users WHERE user_id = %(u)s",
            {"u": user_id},
        )
        if row is None:
            return None
        return tuple(int(v) if v is not None else -1 for v in row)

    # -- served log -----------------------------------------------------------
    def record_served(self, user_id: str, video_ids: Sequence[str], ts_ms: int) -> int:
        """One statement, its own transaction, no region lock: a page is numbered from
        the user's counter, and if another process numbered one the same meanwhile the
        key refuses it and the page is numbered again (rare: one user's pages asked of two
        hosts at the same moment)."""
        self._refuse_served_elsewhere("recording a served page")
        ids = json_text(list(dict.fromkeys(video_ids)))
        for attempt in range(_NUMBERING_ATTEMPTS):
            row = self._one(
                "INSERT INTO served_pages (user_id, page_seq, served_at_ms, video_ids) "
                f"SELECT %(u)s, {_COUNTER} + 1, %(t)s, %(v)s FROM users WHERE user_id = %(u)s "
                "ON CONFLICT (user_id, page_seq) DO NOTHING RETURNING page_seq",
                {"u": user_id, "t": ts_ms, "v": ids},
            )
            if row is not None:
                return int(row[0])
            if self._one("SELECT 1 FROM users WHERE user_id = %s", (user_id,)) is None:
                raise UnknownUser(f"no user {user_id!r} in region {self.region!r}")
            # lost the race: a pause of random length, growing, so that a writer in a
            # tight loop (another host paging the same user) cannot win every time
            time.sleep(random.uniform(0, 0.001 * (attempt + 1)))
        raise StorageError(f"could not number a served page of {user_id!r}: too many writers")

    def forget_served_before(self, before_ms: int) -> int:
        gone = 0
        while True:
            with self.transaction():
                doomed = self._all(
                    "SELECT user_id, page_seq FROM served_pages WHERE served_at_ms < %s "
                    "ORDER BY served_at_ms LIMIT %s FOR UPDATE SKIP LOCKED",
                    (before_ms, _FORGET_CHUNK),
                )
                if doomed:
                    users = sorted({u for u, _ in doomed})
                    # each user touched keeps their counter in the users row first
                    self._exec(
                        "UPDATE users SET served_seq = GREATEST(served_seq, (SELECT "
                        "MAX(page_seq) FROM served_pages AS p WHERE p.user_id = users.user_id)) "
                        "WHERE user_id = ANY(%s)",
                        (users,),
                    )
                    self._exec(
                        "DELETE FROM served_pages WHERE (user_id, page_seq) IN "
                        "(SELECT * FROM unnest(%s::text[], %s::bigint[]))",
                        ([u for u, _ in doomed], [s for _, s in doomed]),
                    )
            gone += len(doomed)
            if len(doomed) < _FORGET_CHUNK:
                return gone

    def served_since(self, user_id: str, since_ms: int, *, left_here: bool = False) -> list[str]:
        if not left_here:
            self._refuse_served_elsewhere("reading served pages")
        rows = self._all(
            "SELECT video_ids FROM served_pages WHERE user_id = %s AND served_at_ms >= %s "
            "ORDER BY page_seq",
            (user_id, since_ms),
        )
        return list(dict.fromkeys(v for (ids,) in rows for v in json.loads(ids)))
