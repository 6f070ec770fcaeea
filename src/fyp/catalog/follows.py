"""Who each user follows: table ``follows`` of their home region's store.

A follow is a relationship the user sets and takes back, not behaviour that fades: the
feed's "new from a creator you follow" source must see every creator the user follows,
however many events ago they did it and whatever the region's retention limit does to
the events themselves. So it is kept as state, written two ways:

- through the API (``PUT``/``DELETE /v1/users/{id}/following/{creator_id}``), which also
  moves the user's profile version on, so a feed ranked ahead before it is ranked again;
- by a ``follow`` or ``unfollow`` event (the button on a video): triggers on ``events``
  add or remove the video's creator in the same transaction as the event, whichever
  path stored it (ingestion, a bulk import, a move copying the user's events), so an
  acknowledged event is in the next feed (read-your-writes).

Either way the latest action by the time the user acted wins, not the last to arrive
(:mod:`fyp.catalog.follow_order`, table ``follow_actions``): ``since_ms`` is the time
of the follow that made the row.

The row names the follower (``user_id``) and the creator (``creator_id``). Like
experiment exposures it references the user (``ON DELETE CASCADE``), its region is baked
into a CHECK, and the erasure, its verifier and the residency scan find it by those
column names: erasing either person deletes the row (``remnants.OWNED_ROWS``). A creator
who moves away keeps their followers there (a move leaves creator columns alone, as
their uploads stay where they were published). Backups,
restores and carve-outs copy the table with the rest of the store; a move copies the
user's follows to their new home (:mod:`fyp.sovereignty.move`); the user's export lists
them.

A creator can be followed where a video of theirs is published: the follower's home
region knows no other users (it holds its own users only), and the feed can only show
videos of its own catalogue.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fyp.audit.log import SQLStore, offers_sql, sql_store
from fyp.catalog.models import now_ms
from fyp.errors import (
    Conflict,
    UnknownCreator,
    UnknownUser,
    ValidationFailed,
    invalid_cursor,
)
from fyp.storage.migrations import Migration
from fyp.storage.postgres_dialect import to_postgres
from fyp.storage.postgres_schema import postgres_ddl

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

TABLE = "follows"
ACTIONS = "follow_actions"  # each pair's latest action, followed or not (migration 28)
MAX_PAGE = 1000

NOT_A_NAME = "substr(creator_id, 1, 1) <> '['"  # '[erased]', '[elsewhere]': nobody to follow


def creator_table(name: str) -> str:
    """A table of creators per user (follows, blocks), in SQLite's DDL."""
    return f"""
    CREATE TABLE {name} (
        user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
        creator_id     TEXT NOT NULL,
        since_ms       INTEGER NOT NULL,
        region         TEXT NOT NULL DEFAULT '{{region}}' CHECK (region = '{{region}}'),
        PRIMARY KEY (user_id, creator_id)
    ) WITHOUT ROWID;
    CREATE INDEX {name}_creator ON {name} (creator_id);
    """


def follow_trigger(also: str = "") -> str:
    """SQLite's trigger adding the creator of a followed video (``also``: a further
    condition on the video row, e.g. the creator not blocked)."""
    return f"""
    CREATE TRIGGER follows_follow AFTER INSERT ON events WHEN NEW.type = 'follow'
    BEGIN
        INSERT OR IGNORE INTO follows (user_id, creator_id, since_ms)
        SELECT NEW.user_id, creator_id, NEW.ts_ms FROM videos
        WHERE video_id = NEW.video_id AND creator_id <> NEW.user_id AND {NOT_A_NAME}{also};
    END;
    """


def follows_function(also: str = "") -> str:
    """PostgreSQL's trigger function for follow and unfollow events (``also``: as for
    :func:`follow_trigger`); created or replaced."""
    return f"""
    CREATE OR REPLACE FUNCTION follows_from_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.type = 'follow' THEN
            INSERT INTO follows (user_id, creator_id, since_ms)
            SELECT NEW.user_id, creator_id, NEW.ts_ms FROM videos
            WHERE video_id = NEW.video_id AND creator_id <> NEW.user_id AND {NOT_A_NAME}{also}
            ON CONFLICT DO NOTHING;
        ELSE
            DELETE FROM follows WHERE user_id = NEW.user_id
            AND creator_id = (SELECT creator_id FROM videos WHERE video_id = NEW.video_id);
        END IF;
        RETURN NULL;
    END $$;
    """


# what the events say already: each creator once, from their first follow
_BACKFILL = """
    INSERT OR IGNORE INTO follows (user_id, creator_id, since_ms)
        SELECT e.user_id, v.creator_id, MIN(e.ts_ms) FROM events AS e
        JOIN videos AS v ON v.video_id = e.video_id
        WHERE e.type = 'follow' AND v.creator_id <> e.user_id
        AND substr(v.creator_id, 1, 1) <> '['
        GROUP BY e.user_id, v.creator_id;
"""
FOLLOWS_MIGRATION = Migration(
    24,
    "follows: the creators each user follows, kept from follow/unfollow events and the API",
    creator_table("follows")
    + follow_trigger()
    + """
    CREATE TRIGGER follows_unfollow AFTER INSERT ON events WHEN NEW.type = 'unfollow'
    BEGIN
        DELETE FROM follows WHERE user_id = NEW.user_id
        AND creator_id = (SELECT creator_id FROM videos WHERE video_id = NEW.video_id);
    END;
    """
    + _BACKFILL,
    postgres=postgres_ddl(creator_table("follows"))
    + follows_function()
    + """
    CREATE TRIGGER follows_from_event AFTER INSERT ON events
        FOR EACH ROW WHEN (NEW.type IN ('follow', 'unfollow'))
        EXECUTE FUNCTION follows_from_event();
    """
    + to_postgres(_BACKFILL)[0],
)
# the Following tab (fyp.feed.following_tab) reads the followed creators' videos newest
# first: with the upload time beside the creator (and the key, which every index of a
# WITHOUT ROWID table holds), SQLite reads each creator's videos from the index alone
# (then sorts them all, so it grows with them); a page of 10 for 200 followed creators holding 5,000
# videos took 1.8 ms without it, 0.5 ms with it (benchmarks/bench_following.py);
# PostgreSQL reads it once per followed creator (fyp.storage.following_sql)
FOLLOWING_TAB_MIGRATION = Migration(
    25,
    "the Following tab: each creator's videos by upload time",
    "CREATE INDEX videos_creator_time ON videos (creator_id, created_at_ms);",
)
# the same videos in the very order the tab reads them (newest first, then by id), so
# neither store sorts a creator's videos: SQLite's join stops reading a followed creator's
# videos once they are older than the page it holds (an inner loop in ORDER BY order);
# PostgreSQL reads each creator's newest from this index alone, unsorted. The
# migration-25 index is dropped: this one serves every search it served. Session 23, a page
# of 10 at 100,000 videos (docs/benchmarks.md, "The Following tab"): SQLite's query 11 ms
# -> 0.2 ms, PostgreSQL's 3,000 buffers -> 600.
FOLLOWING_TAB_NEWEST_MIGRATION = Migration(
    30,
    "the Following tab: each creator's videos newest first, then by id",
    """
    CREATE INDEX videos_creator_newest ON videos (creator_id, created_at_ms DESC, video_id);
    DROP INDEX videos_creator_time;
    """,
)
# the user's profile version moves on (never back, even within a millisecond), so a feed
# ranked ahead under the old one is ranked again with the change
TOUCH = (
    "UPDATE users SET updated_at_ms = CASE WHEN updated_at_ms >= ?1 THEN updated_at_ms + 1 "
    "ELSE ?1 END WHERE user_id = ?2"
)


@dataclass(frozen=True)
class Follow:
    creator_id: str
    since_ms: int


# an action through the API (or a block ending a follow) is the latest by arrival: it
# wins over what is recorded even if a client's clock put that in the future, so it
# takes the later of the two times (an event then has to be at least as late to win)
_RECORD = (
    f"INSERT INTO {ACTIONS} (user_id, creator_id, acted_ms, following) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (user_id, creator_id) DO UPDATE SET following = excluded.following, "
    f"acted_ms = CASE WHEN excluded.acted_ms > {ACTIONS}.acted_ms THEN excluded.acted_ms "
    f"ELSE {ACTIONS}.acted_ms END"
)


def record_action(sql: SQLStore, user_id: str, creator_id: str, t: int, following: bool) -> None:
    """Record that the user followed (or stopped following) ``creator_id`` at ``t`` by a
    way other than an event, in the caller's transaction: a follow or unfollow event
    older than it arriving later changes nothing (:mod:`fyp.catalog.follow_order`)."""
    sql.execute(_RECORD, (user_id, creator_id, t, int(following)))


def creator_rows(store: object, table: str, user_id: str) -> list[Follow]:
    """Every row of the user in ``table`` (follows, blocks), oldest first (their export)."""
    rows = sql_store(store).query(
        f"SELECT creator_id, since_ms FROM {table} WHERE user_id = ? ORDER BY since_ms, creator_id",
        (user_id,),
    )
    return [Follow(str(c), int(t)) for c, t in rows]


def region_follows(store: object) -> list[tuple[str, str, int]]:
    """Every follow of the region (user, creator, since), for training the ranker; none
    for a store without SQL (it has no follows table)."""
    if not offers_sql(store):
        return []
    rows = store.query("SELECT user_id, creator_id, since_ms FROM follows")
    return [(str(u), str(c), int(t)) for u, c, t in rows]


def user_follows(store: object, user_id: str) -> list[Follow]:
    return creator_rows(store, TABLE, user_id)


class CreatorList:
    """A user's list of creators in a table of their home region's store (follows,
    blocks): add, remove and page, each moving the user's profile version on."""

    table = TABLE
    verb = "follow"

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def add(self, user_id: str, creator_id: str) -> tuple[Follow, bool]:
        """The row, and whether this call made it (False: it was there)."""
        if creator_id == user_id:
            raise ValidationFailed(f"a user cannot {self.verb} themselves", field="creator_id")
        region = self.deployment.homed_region(user_id)
        store = self.deployment.store(region)
        sql = sql_store(store)
        t = now_ms()
        with store.transaction():
            self._check_user(sql, user_id)
            held = sql.query(
                f"SELECT since_ms FROM {self.table} WHERE user_id = ? AND creator_id = ?",
                (user_id, creator_id),
            )
            if held:
                self._acted(sql, user_id, creator_id, t, True)
                return Follow(creator_id, int(held[0][0])), False
            if not sql.query("SELECT 1 FROM videos WHERE creator_id = ? LIMIT 1", (creator_id,)):
                raise UnknownCreator(
                    f"no video of creator {creator_id!r} is published in region {region!r}, "
                    f"where user {user_id!r} lives: only creators published there can be "
                    f"{self.verb}ed",
                    creator_id=creator_id,
                    region=region,
                )
            self._before_add(sql, user_id, creator_id)
            sql.execute(
                f"INSERT INTO {self.table} (user_id, creator_id, since_ms) VALUES (?, ?, ?)",
                (user_id, creator_id, t),
            )
            self._acted(sql, user_id, creator_id, t, True)
            sql.execute(TOUCH, (t, user_id))
        return Follow(creator_id, t), True

    def _before_add(self, sql: SQLStore, user_id: str, creator_id: str) -> None:
        """What else changes with the row, in its transaction (or a refusal)."""

    def _acted(self, sql: SQLStore, user_id: str, creator_id: str, t: int, on: bool) -> None:
        """The user added (``on``) or removed the row at ``t``, whether or not it changed
        anything (a repeated follow is an action too), in its transaction."""

    def remove(self, user_id: str, creator_id: str) -> bool:
        """Whether the row was there until now."""
        store = self.deployment.store(self.deployment.homed_region(user_id))
        sql = sql_store(store)
        t = now_ms()
        with store.transaction():
            self._check_user(sql, user_id)
            removed = sql.execute(
                f"DELETE FROM {self.table} WHERE user_id = ? AND creator_id = ?",
                (user_id, creator_id),
            )
            if creator_id != user_id:
                self._acted(sql, user_id, creator_id, t, False)
            if removed:
                sql.execute(TOUCH, (t, user_id))
        return removed > 0

    def page(
        self, user_id: str, limit: int, cursor: str | None = None
    ) -> tuple[str, list[Follow], str | None]:
        """(the user's region, up to ``limit`` rows newest first after ``cursor``, the
        cursor of the next page or None)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        region = self.deployment.homed_region(user_id)
        sql = sql_store(self.deployment.store(region))
        self._check_user(sql, user_id)
        after = _read_cursor(cursor) if cursor else None
        where, params = "user_id = ?", list[object]([user_id])
        if after is not None:
            where += " AND (since_ms < ? OR (since_ms = ? AND creator_id > ?))"
            params += [after.since_ms, after.since_ms, after.creator_id]
        rows = sql.query(
            f"SELECT creator_id, since_ms FROM {self.table} WHERE {where} "
            "ORDER BY since_ms DESC, creator_id LIMIT ?",
            (*params, limit + 1),
        )
        found = [Follow(str(c), int(t)) for c, t in rows[:limit]]
        return region, found, _write_cursor(found[-1]) if len(rows) > limit else None

    def _check_user(self, sql: SQLStore, user_id: str) -> None:
        if not sql.query("SELECT 1 FROM users WHERE user_id = ?", (user_id,)):
            self.deployment.forget_route(user_id)  # moved or erased since the route was kept
            raise UnknownUser(f"no user {user_id!r}", user_id=user_id)


class Following(CreatorList):
    """Follow, unfollow and list, each in the user's home region."""

    def follow(self, user_id: str, creator_id: str) -> tuple[Follow, bool]:
        """The follow, and whether this call made it (False: the user already followed)."""
        return self.add(user_id, creator_id)

    def unfollow(self, user_id: str, creator_id: str) -> bool:
        """Whether the user followed ``creator_id`` until now."""
        return self.remove(user_id, creator_id)

    def _before_add(self, sql: SQLStore, user_id: str, creator_id: str) -> None:
        if sql.query(
            "SELECT 1 FROM blocks WHERE user_id = ? AND creator_id = ?", (user_id, creator_id)
        ):
            raise Conflict(
                f"user {user_id!r} has blocked {creator_id!r}: unblock them first",
                creator_id=creator_id,
            )
        if sql.query(
            "SELECT 1 FROM blocked_by WHERE user_id = ? AND creator_id = ?", (user_id, creator_id)
        ):  # the creator blocked the user (fyp.catalog.blocks): said without naming who did
            raise Conflict(f"user {user_id!r} cannot follow {creator_id!r}", creator_id=creator_id)

    def _acted(self, sql: SQLStore, user_id: str, creator_id: str, t: int, on: bool) -> None:
        # the API acts now: a follow event from before it, arriving later, changes nothing
        record_action(sql, user_id, creator_id, t, on)


def _write_cursor(last: Follow) -> str:
    return keyset_cursor(last.since_ms, last.creator_id)


def _read_cursor(cursor: str) -> Follow:
    since, creator = read_keyset(cursor)
    return Follow(creator, since)


def keyset_cursor(ms: int, key: str) -> str:
    """An opaque cursor for a list ordered by a time (newest first) and an id: the last
    row served, so the next page starts after it whatever was added meanwhile."""
    raw = json.dumps([ms, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_keyset(cursor: str) -> tuple[int, str]:
    """What :func:`keyset_cursor` wrote, or 400 ``invalid_request``: only a time a store
    column holds and an id in UTF-8 without NUL (others were 500s: SQLite overflows on a
    larger int and cannot bind a lone surrogate, PostgreSQL refuses NUL)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ms, key = json.loads(raw)
        if type(ms) is not int or not -(2**63) <= ms < 2**63:
            raise ValueError(cursor)
        if not isinstance(key, str) or "\x00" in key:
            raise ValueError(cursor)
        key.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_cursor() from exc
    return ms, key
