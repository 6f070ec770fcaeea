"""Whom each user has blocked: table ``blocks`` of their home region's store.

A block is the lasting form of "not interested" in a creator (which holds for the seen
window): none of the creator's videos reaches the user's feeds again until they unblock,
and blocking ends a follow (the follow is deleted in the same transaction; a follow
event on a blocked creator's video adds nothing, the API refuses one with 409 until the
user unblocks). Written through the API only (``PUT``/``DELETE
/v1/users/{id}/blocked/{creator_id}``); like a follow it moves the user's profile
version on, so a feed ranked ahead is ranked again at once.

Covered like follows (:mod:`fyp.catalog.follows`): the row names the blocker
(``user_id``) and the creator (``creator_id``), so erasing either deletes it, a move
takes it along, the export lists it, backups, restores and carve-outs copy it.

Not done: the other direction (the blocked creator no longer seeing the blocker's
videos). The block is the blocker's data, kept in the blocker's home region; the
creator's feed is made in the creator's home region, which would have to learn of it.
"""

from __future__ import annotations

from fyp.audit.log import SQLStore
from fyp.catalog.follows import (
    CreatorList,
    Follow,
    creator_rows,
    creator_table,
    follow_trigger,
    follows_function,
)
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


def user_blocks(store: object, user_id: str) -> list[Follow]:
    """Every block of the user, oldest first (their export)."""
    return creator_rows(store, TABLE, user_id)


class Blocking(CreatorList):
    """Block, unblock and list, each in the user's home region."""

    table = TABLE
    verb = "block"

    def block(self, user_id: str, creator_id: str) -> tuple[Follow, bool]:
        """The block, and whether this call made it; a follow of the creator ends."""
        return self.add(user_id, creator_id)

    def unblock(self, user_id: str, creator_id: str) -> bool:
        """Whether the user had blocked ``creator_id`` until now."""
        return self.remove(user_id, creator_id)

    def _before_add(self, sql: SQLStore, user_id: str, creator_id: str) -> None:
        sql.execute(
            "DELETE FROM follows WHERE user_id = ? AND creator_id = ?", (user_id, creator_id)
        )
