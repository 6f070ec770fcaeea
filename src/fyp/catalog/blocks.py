"""Blocks between users: table ``blocks`` of the blocker's home region, and its mirror
``blocked_by`` in the blocked user's home region.

A block works both ways, as users of short-video apps expect:
- the blocker no longer sees the creator: none of their videos reaches the blocker's
  feeds until they unblock (the lasting form of "not interested" in a creator), and
  blocking ends the blocker's follow of them (a follow event on their videos adds
  nothing, the API refuses a follow with 409 until the unblock);
- the blocked user no longer sees the blocker: none of the blocker's videos reaches
  their feeds either, their follow of the blocker ends and cannot be made again (409,
  and a follow event adds nothing), for as long as the block stands.

Written through the API only (``PUT``/``DELETE /v1/users/{id}/blocked/{creator_id}``).
Each side moves its user's profile version on, so a feed ranked ahead is ranked again.

The mirror is kept where the blocked user's feed is made, their home region: a row
naming them (``user_id``, homed there) and the blocker (``creator_id``, a creator
column as in the catalogue, which names creators wherever they live). The two rows are
two transactions when the two users live in different regions: a ``PUT`` answers only
once both are written, and repeating it (or the ``DELETE``) completes one cut short.
A block is never acknowledged before the blocked user's side holds it.

Covered like follows (:mod:`fyp.catalog.follows`): each row names both people, so
erasing either deletes it in every region; a move takes the mover's rows along (their
blocks, and the blocks of them); backups, restores and carve-outs copy the tables.
The blocker's export lists their blocks; the blocked user's export does not list who
blocked them (that is the blocker's decision, not theirs to be told).
"""

from __future__ import annotations

from fyp.audit.log import SQLStore, sql_store
from fyp.catalog.follows import (
    TOUCH,
    CreatorList,
    Follow,
    creator_rows,
    creator_table,
    follow_trigger,
    follows_function,
    record_action,
)
from fyp.catalog.models import now_ms
from fyp.storage.migrations import Migration
from fyp.storage.postgres_schema import postgres_ddl

TABLE = "blocks"

_NOT_BLOCKED = (
    " AND NOT EXISTS (SELECT 1 FROM blocks AS b "
    "WHERE b.user_id = NEW.user_id AND b.creator_id = videos.creator_id)"
)
BLOCKS_MIGRATION = Migration(
    26,
    "blocks: the creators each user blocked; a follow event adds no blocked creator",
    creator_table(TABLE) + "DROP TRIGGER follows_follow;" + follow_trigger(_NOT_BLOCKED),
    postgres=postgres_ddl(creator_table(TABLE)) + follows_function(_NOT_BLOCKED),
)


MIRROR = "blocked_by"
_NOT_BLOCKED_BY = (
    " AND NOT EXISTS (SELECT 1 FROM blocked_by AS bb "
    "WHERE bb.user_id = NEW.user_id AND bb.creator_id = videos.creator_id)"
)
BLOCKED_BY_MIGRATION = Migration(
    27,
    "blocked_by: who blocked each user; a follow event adds no creator who blocked them",
    creator_table(MIRROR)
    + "DROP TRIGGER follows_follow;"
    + follow_trigger(_NOT_BLOCKED + _NOT_BLOCKED_BY),
    postgres=postgres_ddl(creator_table(MIRROR)) + follows_function(_NOT_BLOCKED + _NOT_BLOCKED_BY),
)
NOT_BLOCKED_EITHER_WAY = _NOT_BLOCKED + _NOT_BLOCKED_BY  # migration 28's trigger too


def user_blocks(store: object, user_id: str) -> list[Follow]:
    """Every block of the user, oldest first (their export)."""
    return creator_rows(store, TABLE, user_id)


class Blocking(CreatorList):
    """Block, unblock and list, each in the user's home region."""

    table = TABLE
    verb = "block"

    def block(self, user_id: str, creator_id: str) -> tuple[Follow, bool]:
        """The block, and whether this call made it; follows either way end."""
        made = self.add(user_id, creator_id)
        self.mirror(creator_id, user_id, made[0].since_ms)
        return made

    def unblock(self, user_id: str, creator_id: str) -> bool:
        """Whether the user had blocked ``creator_id`` until now."""
        removed = self.remove(user_id, creator_id)
        self.mirror(creator_id, user_id, None)
        return removed

    def mirror(self, blocked: str, blocker: str, since_ms: int | None) -> None:
        """Write (``since_ms``) or delete (None) the blocked user's side, in their home
        region; nothing when they are no user (erased since)."""
        d = self.deployment
        for _ in range(2):  # a second look if they moved between the lookup and the write
            region = d.locate_users([blocked], fresh=True).get(blocked)
            if region is None:
                return
            store = d.store(region)
            sql = sql_store(store)
            with store.transaction():
                if not sql.query("SELECT 1 FROM users WHERE user_id = ?", (blocked,)):
                    d.forget_route(blocked)
                    continue
                if since_ms is None:
                    changed = sql.execute(
                        f"DELETE FROM {MIRROR} WHERE user_id = ? AND creator_id = ?",
                        (blocked, blocker),
                    )
                else:
                    changed = sql.execute(
                        f"INSERT OR IGNORE INTO {MIRROR} (user_id, creator_id, since_ms) "
                        "VALUES (?, ?, ?)",
                        (blocked, blocker, since_ms),
                    )
                    changed += sql.execute(
                        "DELETE FROM follows WHERE user_id = ? AND creator_id = ?",
                        (blocked, blocker),
                    )
                    record_action(sql, blocked, blocker, now_ms(), False)  # the follow ends now
                if changed:
                    sql.execute(TOUCH, (now_ms(), blocked))
            return

    def _before_add(self, sql: SQLStore, user_id: str, creator_id: str) -> None:
        sql.execute(
            "DELETE FROM follows WHERE user_id = ? AND creator_id = ?", (user_id, creator_id)
        )
        # the follow ends now: a follow event from before the block, arriving after an
        # unblock, revives nothing (fyp.catalog.follow_order)
        record_action(sql, user_id, creator_id, now_ms(), False)
