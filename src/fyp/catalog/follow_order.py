"""Follows resolve by when the user acted, not when the event arrived (store migration 28).

Apps queue events offline and send them later, and a user may have two devices: the
unfollow tapped on a tablet can arrive before the follow tapped a minute earlier on a
phone that was offline. Applied in arrival order, the follow would win and the user
would follow someone they unfollowed. So the ``follows`` table follows the rule the
user expects: **of a user's actions on a creator, the one with the latest time wins**
(an event's ``ts``, which ingestion sets to the time it received the event when the
client gave none; an action through the API, the server's time), and of two at the
same millisecond the one that arrived later.

That needs the time of each pair's latest action even when it ended the follow: table
``follow_actions`` (``user_id``, ``creator_id``, ``acted_ms``, ``following`` 1/0), one
row per pair, kept by the triggers on ``events`` and by the API (``record_action`` in
:mod:`fyp.catalog.follows`). A follow or unfollow event older than the pair's row
changes nothing; one as late or later replaces the row and adds or removes the follow.
A block ends a follow as an action of its time (an older follow event arriving after
an unblock revives nothing).

The rows are personal data like the follows themselves: they go with either person's
erasure (``remnants.OWNED_ROWS``), a move takes them along, the export lists them
(``follow_actions``), backups copy them with the store.
"""

from __future__ import annotations

from typing import Any

from fyp.audit.log import SQLStore, offers_sql, sql_store
from fyp.catalog.blocks import NOT_BLOCKED_EITHER_WAY
from fyp.catalog.follows import ACTIONS, NOT_A_NAME
from fyp.storage.migrations import Migration
from fyp.storage.postgres_schema import postgres_ddl

_TABLE = f"""
    CREATE TABLE {ACTIONS} (
        user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
        creator_id     TEXT NOT NULL,
        acted_ms       INTEGER NOT NULL,
        following      INTEGER NOT NULL CHECK (following IN (0, 1)),
        region         TEXT NOT NULL DEFAULT '{{region}}' CHECK (region = '{{region}}'),
        PRIMARY KEY (user_id, creator_id)
    ) WITHOUT ROWID;
    CREATE INDEX {ACTIONS}_creator ON {ACTIONS} (creator_id);
    """

# the pair's row takes the event if the event is as late as it or later (ties: the
# event arrived later); the follow changes only if the row now is this event
_UPSERT = f"""
    ON CONFLICT (user_id, creator_id) DO UPDATE
        SET acted_ms = excluded.acted_ms, following = excluded.following
        WHERE excluded.acted_ms >= {ACTIONS}.acted_ms"""
_ELIGIBLE = f"creator_id <> NEW.user_id AND {NOT_A_NAME}"
_THIS_EVENT = (
    f"SELECT creator_id FROM {ACTIONS} WHERE user_id = NEW.user_id AND acted_ms = NEW.ts_ms "
    "AND following = {on} "
    "AND creator_id = (SELECT creator_id FROM videos WHERE video_id = NEW.video_id)"
)

_SQLITE_TRIGGERS = f"""
    DROP TRIGGER follows_follow;
    DROP TRIGGER follows_unfollow;
    CREATE TRIGGER follows_follow AFTER INSERT ON events WHEN NEW.type = 'follow'
    BEGIN
        INSERT INTO {ACTIONS} (user_id, creator_id, acted_ms, following)
            SELECT NEW.user_id, creator_id, NEW.ts_ms, 1 FROM videos
            WHERE video_id = NEW.video_id AND {_ELIGIBLE}{NOT_BLOCKED_EITHER_WAY}{_UPSERT};
        INSERT OR IGNORE INTO follows (user_id, creator_id, since_ms)
            SELECT NEW.user_id, creator_id, NEW.ts_ms FROM ({_THIS_EVENT.format(on=1)});
    END;
    CREATE TRIGGER follows_unfollow AFTER INSERT ON events WHEN NEW.type = 'unfollow'
    BEGIN
        INSERT INTO {ACTIONS} (user_id, creator_id, acted_ms, following)
            SELECT NEW.user_id, creator_id, NEW.ts_ms, 0 FROM videos
            WHERE video_id = NEW.video_id AND {_ELIGIBLE}{_UPSERT};
        DELETE FROM follows WHERE user_id = NEW.user_id
            AND creator_id IN ({_THIS_EVENT.format(on=0)});
    END;
    """

_POSTGRES_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION follows_from_event() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        creator TEXT;
        changed BIGINT;
    BEGIN
        SELECT creator_id INTO creator FROM videos
        WHERE video_id = NEW.video_id AND {_ELIGIBLE}
        AND (NEW.type = 'unfollow' OR (TRUE{NOT_BLOCKED_EITHER_WAY}));
        IF creator IS NULL THEN
            RETURN NULL;
        END IF;
        INSERT INTO {ACTIONS} (user_id, creator_id, acted_ms, following)
        VALUES (NEW.user_id, creator, NEW.ts_ms, CASE WHEN NEW.type = 'follow' THEN 1 ELSE 0 END)
        {_UPSERT};
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed = 0 THEN
            RETURN NULL;  -- older than the pair's latest action: nothing changes
        ELSIF NEW.type = 'follow' THEN
            INSERT INTO follows (user_id, creator_id, since_ms)
            VALUES (NEW.user_id, creator, NEW.ts_ms) ON CONFLICT DO NOTHING;
        ELSE
            DELETE FROM follows WHERE user_id = NEW.user_id AND creator_id = creator;
        END IF;
        RETURN NULL;
    END $$;
    """

# Each pair's latest known time from what is stored: its follow/unfollow events, its
# follow's start, its block either way (the block ended any follow then). The follows
# stay as they are (API calls and blocks made them what they are, the events alone do
# not tell): the row says whether the pair is followed.
_BACKFILL = f"""
    INSERT INTO {ACTIONS} (user_id, creator_id, acted_ms, following)
    SELECT a.user_id, a.creator_id, MAX(a.t),
        CASE WHEN EXISTS (SELECT 1 FROM follows AS f
            WHERE f.user_id = a.user_id AND f.creator_id = a.creator_id) THEN 1 ELSE 0 END
    FROM (
        SELECT e.user_id AS user_id, v.creator_id AS creator_id, e.ts_ms AS t
        FROM events AS e JOIN videos AS v ON v.video_id = e.video_id
        WHERE e.type IN ('follow', 'unfollow') AND v.creator_id <> e.user_id
        AND substr(v.creator_id, 1, 1) <> '['
        UNION ALL SELECT user_id, creator_id, since_ms FROM follows
        UNION ALL SELECT user_id, creator_id, since_ms FROM blocks
        UNION ALL SELECT user_id, creator_id, since_ms FROM blocked_by
    ) AS a
    GROUP BY a.user_id, a.creator_id;
    """

FOLLOW_ORDER_MIGRATION = Migration(
    28,
    "follow_actions: each pair's latest follow or unfollow; the latest by time wins",
    _TABLE + _SQLITE_TRIGGERS + _BACKFILL,
    postgres=postgres_ddl(_TABLE) + _POSTGRES_FUNCTION + _BACKFILL,
)


def user_actions(store: object, user_id: str) -> list[dict[str, Any]]:
    """The user's latest action on each creator, oldest first (their export)."""
    rows = sql_store(store).query(
        f"SELECT creator_id, acted_ms, following FROM {ACTIONS} WHERE user_id = ? "
        "ORDER BY acted_ms, creator_id",
        (user_id,),
    )
    return [{"creator_id": str(c), "acted_ms": int(t), "following": bool(on)} for c, t, on in rows]


def region_actions(store: object) -> list[tuple[str, str, int, bool]]:
    """Every pair's latest action in the region (user, creator, time, following), for
    training: an unfollow through the API leaves no event, only this; none for a store
    without SQL."""
    if not offers_sql(store):
        return []
    rows = store.query(f"SELECT user_id, creator_id, acted_ms, following FROM {ACTIONS}")
    return [(str(u), str(c), int(t), bool(on)) for u, c, t, on in rows]


def copy_actions(src: SQLStore, dst: object, user_id: str) -> None:
    """The user's records from ``src`` into ``dst`` (a move, after the events: the
    source's record is each pair's latest action, whatever the copied events' triggers
    wrote), and the follows they ended taken out of ``dst``."""
    rows = src.query(
        f"SELECT creator_id, acted_ms, following FROM {ACTIONS} WHERE user_id = ?", (user_id,)
    )
    out = sql_store(dst)
    out.executemany(
        f"INSERT INTO {ACTIONS} (user_id, creator_id, acted_ms, following) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (user_id, creator_id) DO UPDATE "
        "SET acted_ms = excluded.acted_ms, following = excluded.following",
        [(user_id, str(c), int(t), int(on)) for c, t, on in rows],
    )
    out.execute(
        f"DELETE FROM follows WHERE user_id = ?1 AND creator_id IN "
        f"(SELECT creator_id FROM {ACTIONS} WHERE user_id = ?1 AND following = 0)",
        (user_id,),
    )
