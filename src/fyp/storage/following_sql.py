"""The Following tab's read (:mod:`fyp.feed.following_tab`) in each store's SQL.

The followed creators' videos newest first, ``created_at_ms`` then ``video_id`` (byte
order: PostgreSQL's TEXT columns are ``COLLATE "C"``), keyset after the last row served,
less the videos the user marked ``not_interested`` since ``since_ms``: the same events
For You reads for its "not interested" filter (:mod:`fyp.feed.state`), from the same
partial index ``events_not_interested`` (store migration 8), read once per query into a
list the rows are checked against (SQLite's ``LIST SUBQUERY``, PostgreSQL's ``hashed
SubPlan``), so hiding them costs no extra round trip. The check sits beside the keyset,
before any ``LIMIT``: a hidden video is simply not a row, so the cursor, which names the
last row served, never skips or repeats one.

Both stores return the same rows in the same order; they reach them through the index
``videos_creator_newest (creator_id, created_at_ms DESC, video_id)`` (migration 30),
which holds each creator's videos in the very order the tab reads them:

- SQLite joins ``follows`` to ``videos`` and reads each followed creator's videos from
  that index alone, newest first. As that inner loop delivers rows in the ``ORDER BY``
  order, SQLite leaves a creator's videos at the first that cannot enter the ``LIMIT``
  rows it holds (its ``ORDER BY ... LIMIT`` early exit from an ordered inner loop): a
  page reads about ``limit`` videos per followed creator, not all of them (0.24 ms at
  10,000 and at 100,000 videos; with migration 25's ``(creator_id, created_at_ms)`` it
  read and sorted every one, 0.5 and 4-13 ms; docs/benchmarks.md, "The Following tab").
- PostgreSQL, given the same join, hash-joins the follows with a scan of every video of
  the region (its estimate of a page's cost is the table's): a time growing with the
  catalogue. So it is asked for each followed creator's newest ``limit`` after the
  cursor (``LATERAL``, an index-only range scan bounded by the cursor's time, already in
  order), then for the newest ``limit`` of those: the work grows with the follows and
  the page, not with the catalogue. The keyset is spelt with a range on
  ``created_at_ms`` the index can start from, and the same condition; the
  "not interested" check is inside the ``LATERAL``, so a creator whose newest videos are
  hidden still gives the page their older ones.

Each function gives SQL as the capability packages write it (``?N`` placeholders; the
PostgreSQL store runs it through :func:`fyp.storage.postgres_dialect.to_postgres`) and its
parameters, so a benchmark or a test can ``EXPLAIN`` exactly what the store runs.
"""

from __future__ import annotations

_HIDDEN = """
        SELECT video_id FROM events
        WHERE user_id = ?1 AND type = 'not_interested' AND ts_ms >= ?5
"""
_SQLITE = """
    SELECT v.video_id, v.creator_id, v.created_at_ms FROM follows AS f
    JOIN videos AS v ON v.creator_id = f.creator_id
    WHERE f.user_id = ?1{after} AND v.video_id NOT IN ({hidden})
    ORDER BY v.created_at_ms DESC, v.video_id LIMIT ?4
"""
_SQLITE_AFTER = " AND (v.created_at_ms < ?2 OR (v.created_at_ms = ?2 AND v.video_id > ?3))"

# ?1 user, ?2 the cursor's time, ?3 its video, ?4 the limit, ?5 the window's start
_POSTGRES = """
    SELECT v.video_id, v.creator_id, v.created_at_ms FROM follows AS f
    CROSS JOIN LATERAL (
        SELECT video_id, creator_id, created_at_ms FROM videos
        WHERE creator_id = f.creator_id{after} AND video_id NOT IN ({hidden})
        ORDER BY created_at_ms DESC, video_id LIMIT ?4
    ) AS v
    WHERE f.user_id = ?1
    ORDER BY v.created_at_ms DESC, v.video_id LIMIT ?4
"""
_POSTGRES_AFTER = " AND created_at_ms <= ?2 AND (created_at_ms < ?2 OR video_id > ?3)"

Query = tuple[str, tuple[object, ...]]


def _query(
    sql: str, after_sql: str, user_id: str, after: tuple[int, str] | None, limit: int, since_ms: int
) -> Query:
    ms, video_id = after if after is not None else (None, None)  # ?2, ?3 unused: bound all the same
    text = sql.format(after="" if after is None else after_sql, hidden=_HIDDEN)
    return text, (user_id, ms, video_id, limit, since_ms)


def sqlite_query(user_id: str, after: tuple[int, str] | None, limit: int, since_ms: int) -> Query:
    return _query(_SQLITE, _SQLITE_AFTER, user_id, after, limit, since_ms)


def postgres_query(user_id: str, after: tuple[int, str] | None, limit: int, since_ms: int) -> Query:
    return _query(_POSTGRES, _POSTGRES_AFTER, user_id, after, limit, since_ms)
