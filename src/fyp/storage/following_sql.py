"""The Following tab's read (:mod:`fyp.feed.following_tab`) in each store's SQL.

The followed creators' videos newest first, ``created_at_ms`` then ``video_id`` (byte
order: PostgreSQL's TEXT columns are ``COLLATE "C"``), keyset after the last row served.
Both stores return the same rows in the same order; they differ in how they reach them
through the index ``videos_creator_time (creator_id, created_at_ms)`` (migration 25):

- SQLite joins ``follows`` to ``videos`` and reads each followed creator's videos from
  that index alone (it holds the key too), then sorts them: a time growing with the
  followed creators' videos (0.5 ms at 5,000, about 4 ms at 50,000; a per-creator form
  was slower at the smaller size, docs/benchmarks.md, "The Following tab").
- PostgreSQL, given the same join, hash-joins the follows with a scan of every video of
  the region (its estimate of a page's cost is the table's): a time growing with the
  catalogue. So it is asked for each followed creator's newest ``limit`` after the
  cursor (``LATERAL``, a backward range scan of the index bounded by the cursor's time),
  then for the newest ``limit`` of those: the work grows with the follows and the page,
  not with the catalogue. The keyset is spelt with a range on ``created_at_ms`` the
  index can start from, and the same condition.

Each function gives SQL as the capability packages write it (``?`` placeholders; the
PostgreSQL store runs it through :func:`fyp.storage.postgres_dialect.to_postgres`) and its
parameters, so a benchmark or a test can ``EXPLAIN`` exactly what the store runs.
"""

from __future__ import annotations

_SQLITE = """
    SELECT v.video_id, v.creator_id, v.created_at_ms FROM follows AS f
    JOIN videos AS v ON v.creator_id = f.creator_id
    WHERE f.user_id = ?{after}
    ORDER BY v.created_at_ms DESC, v.video_id LIMIT ?
"""
_SQLITE_AFTER = " AND (v.created_at_ms < ? OR (v.created_at_ms = ? AND v.video_id > ?))"

# ?1 user, ?2 the cursor's time, ?3 its video, ?4 the limit
_POSTGRES = """
    SELECT v.video_id, v.creator_id, v.created_at_ms FROM follows AS f
    CROSS JOIN LATERAL (
        SELECT video_id, creator_id, created_at_ms FROM videos
        WHERE creator_id = f.creator_id{after}
        ORDER BY created_at_ms DESC, video_id LIMIT ?4
    ) AS v
    WHERE f.user_id = ?1
    ORDER BY v.created_at_ms DESC, v.video_id LIMIT ?4
"""
_POSTGRES_AFTER = " AND created_at_ms <= ?2 AND (created_at_ms < ?2 OR video_id > ?3)"

Query = tuple[str, tuple[object, ...]]


def sqlite_query(user_id: str, after: tuple[int, str] | None, limit: int) -> Query:
    if after is None:
        return _SQLITE.format(after=""), (user_id, limit)
    ms, video_id = after
    return _SQLITE.format(after=_SQLITE_AFTER), (user_id, ms, ms, video_id, limit)


def postgres_query(user_id: str, after: tuple[int, str] | None, limit: int) -> Query:
    if after is None:  # ?2 and ?3 unused: bound all the same, numbered
        return _POSTGRES.format(after=""), (user_id, None, None, limit)
    ms, video_id = after
    return _POSTGRES.format(after=_POSTGRES_AFTER), (user_id, ms, video_id, limit)
