"""Rows of the SQLite store: column lists, and conversions between models and rows.

JSON columns (consents, attributes, hashtags, ...) are written as
:func:`~fyp.storage.base.json_text` and read back with the json module.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fyp.catalog.models import User, Video
from fyp.events.schema import StoredEvent
from fyp.storage.base import VideoRow, json_text

EVENT_COLS = (
    "seq, event_id, user_id, video_id, type, ts_ms, watch_ms, watch_ratio, "
    "valid_play, long_play, short_play"
)
USER_COLS = (
    "user_id, home_region, birth_year, country, language, consents, attributes, "
    "created_at_ms, updated_at_ms"
)
VIDEO_COLS = (
    "video_id, creator_id, caption, hashtags, categories, tags, duration_ms, regions, "
    "attributes, created_at_ms, updated_at_ms"
)


dumps = json_text


PAGE_ROWS = 10_000  # rows per keyset page of the store's iterators


def keyset_pages(
    page: Callable[[Any, int], Sequence[Sequence[Any]]], after: Any, batch: int | None = None
) -> Iterator[Sequence[Any]]:
    """Rows of a table in key order, ``batch`` at a time (``page(after, batch)``: the
    rows whose key, their first column, sorts after ``after``). An iterator over a
    region's users or events must not hold the whole table in memory, nor a cursor
    open across the caller's own writes."""
    batch = batch or PAGE_ROWS
    while True:
        rows = page(after, batch)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1][0]


def event_from_row(row: sqlite3.Row | tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(
        seq=row[0],
        event_id=row[1],
        user_id=row[2],
        video_id=row[3],
        type=row[4],
        ts_ms=row[5],
        watch_ms=row[6],
        watch_ratio=row[7],
        valid_play=bool(row[8]),
        long_play=bool(row[9]),
        short_play=bool(row[10]),
    )


def user_from_row(row: tuple[Any, ...]) -> User:
    return User(
        user_id=row[0],
        home_region=row[1],
        birth_year=row[2],
        country=row[3],
        language=row[4],
        consents=json.loads(row[5]),
        attributes=json.loads(row[6]),
        created_at_ms=row[7],
        updated_at_ms=row[8],
    )


def video_from_row(row: tuple[Any, ...]) -> Video:
    return Video.model_construct(
        video_id=row[0],
        creator_id=row[1],
        caption=row[2],
        hashtags=json.loads(row[3]),
        categories=json.loads(row[4]),
        tags=json.loads(row[5]),
        duration_ms=row[6],
        regions=json.loads(row[7]),
        attributes=json.loads(row[8]),
        created_at_ms=row[9],
        updated_at_ms=row[10],
    )


def user_params(u: User) -> tuple[Any, ...]:
    return (
        u.user_id,
        u.home_region,
        u.birth_year,
        u.country,
        u.language,
        dumps(u.consents or {}),
        dumps(u.attributes or {}),
        u.created_at_ms,
        u.updated_at_ms,
    )


def video_params(v: Video | VideoRow, region: str) -> tuple[Any, ...]:
    if isinstance(v, VideoRow):
        return (v.video_id, region, *v[1:])
    return (v.video_id, region, *VideoRow.of(v)[1:])
