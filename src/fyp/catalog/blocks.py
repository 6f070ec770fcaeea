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

A request cut short between the two (a crash, the other region's store down) is not
left to the client to repeat: the blocker's transaction also records the blocked side
as owed (table ``block_mirrors_owed``, the blocker's region, one row per pair, cleared
once the mirror is written), and :func:`settle_owed` writes whatever is still owed a
while later from the blocker's row as it then stands (``fyp user blocks-settle``,
which ``fyp serve`` runs when something is owed: ``[serving] settle_blocks_seconds``).

Covered like follows (:mod:`fyp.catalog.follows`): each row names both people, so
erasing either deletes it in every region; a move takes the mover's rows along (their
blocks, and the blocks of them); backups, restores and carve-outs copy the tables.
The blocker's export lists their blocks; the blocked user's export does not list who
blocked them (that is the blocker's decision, not theirs to be told).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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
from fyp.errors import Conflict, FypError
from fyp.storage.migrations import Migration
from fyp.storage.postgres_schema import postgres_ddl

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

log = logging.getLogger("fyp.blocks")

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

OWED = "block_mirrors_owed"
"""Pairs (blocker ``user_id``, blocked ``creator_id``) whose blocked side may not agree
with the blocker's row yet, since ``since_ms``: in the blocker's region."""
_OWED_SQL = creator_table(OWED) + f"CREATE INDEX {OWED}_since ON {OWED} (since_ms);"
OWED_MIGRATION = Migration(
    31,
    "block_mirrors_owed: blocks and unblocks whose blocked side is not known to be written",
    _OWED_SQL,
    postgres=postgres_ddl(_OWED_SQL),
)
SETTLE_AFTER_MS = 30_000  # an owed side younger than this may still be its request's


def user_blocks(store: object, user_id: str) -> list[Follow]:
    """Every block of the user, oldest first (their export)."""
    return creator_rows(store, TABLE, user_id)


class Blocking(CreatorList):
    """Block, unblock and list, each in the user's home region."""

    table = TABLE
    verb = "block"

    def block(self, user_id: str, creator_id: str) -> tuple[Follow, bool]:
        """The block, and whether this call made it; follows either way end."""
        made = self.add(user_id, creator_id)  # records the blocked side as owed (_acted)
        self.mirror(creator_id, user_id, made[0].since_ms)
        self._settled(user_id, creator_id)
        return made

    def unblock(self, user_id: str, creator_id: str) -> bool:
        """Whether the user had blocked ``creator_id`` until now."""
        removed = self.remove(user_id, creator_id)
        self.mirror(creator_id, user_id, None)
        self._settled(user_id, creator_id)
        return removed

    def _acted(self, sql: SQLStore, user_id: str, creator_id: str, t: int, on: bool) -> None:
        # in the blocker's transaction: until mirror() has written it, the blocked side
        # is owed (a request cut short between the two leaves this row for settle_owed)
        sql.execute(
            f"DELETE FROM {OWED} WHERE user_id = ? AND creator_id = ?", (user_id, creator_id)
        )
        sql.execute(
            f"INSERT INTO {OWED} (user_id, creator_id, since_ms) VALUES (?, ?, ?)",
            (user_id, creator_id, t),
        )

    def _settled(
        self, user_id: str, creator_id: str, region: str | None = None, owed_ms: int | None = None
    ) -> None:
        """The blocked side agrees now: the pair is owed no more in the blocker's
        ``region`` (by default, found: one indexed read); with ``owed_ms``, only if it is
        still owed since then, not since a later request's action."""
        region = region or self.deployment.homed_region(user_id)
        where = "user_id = ? AND creator_id = ?" + ("" if owed_ms is None else " AND since_ms = ?")
        params = (user_id, creator_id) + (() if owed_ms is None else (owed_ms,))
        sql_store(self.deployment.store(region)).execute(
            f"DELETE FROM {OWED} WHERE {where}", params
        )

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


def owed_since(store: object, before_ms: int) -> bool:
    """Whether the region owes a blocked side since before ``before_ms`` (one indexed
    read: what a serving process asks each round)."""
    return bool(
        sql_store(store).query(f"SELECT 1 FROM {OWED} WHERE since_ms < ? LIMIT 1", (before_ms,))
    )


def settle_owed(
    deployment: Deployment, settle_after_ms: int = SETTLE_AFTER_MS, now: int | None = None
) -> tuple[int, int]:
    """Write the blocked side of every pair owed for at least ``settle_after_ms`` as the
    blocker's row now stands (a block: the side written; none: the side deleted), and
    clear it; returns (settled, still owed). A pair that fails stays owed for the next
    run (its error is logged). The blocker's row is read again after the write, and the
    write redone if a request changed it meanwhile (that request clears the pair when
    its own write is done, so a stale write here must not be the last)."""
    now = now_ms() if now is None else now
    writer, settled, left = Blocking(deployment), 0, 0
    for region in deployment.regions:
        sql = sql_store(deployment.store(region))
        owed = sql.query(
            f"SELECT user_id, creator_id, since_ms FROM {OWED} WHERE since_ms <= ? "
            "ORDER BY since_ms",
            (now - settle_after_ms,),
        )
        for blocker, blocked, owed_ms in owed:
            try:
                since, written = _block_since(sql, str(blocker), str(blocked)), False
                for _ in range(3):
                    writer.mirror(str(blocked), str(blocker), since)
                    now_since = _block_since(sql, str(blocker), str(blocked))
                    written = now_since == since
                    if written:
                        break
                    since = now_since
                if not written:
                    raise Conflict("the block kept changing while its other side was written")
                writer._settled(str(blocker), str(blocked), region, int(owed_ms))
                settled += 1
            except FypError as exc:  # that region's store, say: the next run tries again
                log.warning("blocked side of %s -> %s still owed: %s", blocker, blocked, exc)
                left += 1
    return settled, left


def _block_since(sql: SQLStore, blocker: str, blocked: str) -> int | None:
    found = sql.query(
        f"SELECT since_ms FROM {TABLE} WHERE user_id = ? AND creator_id = ?", (blocker, blocked)
    )
    return int(found[0][0]) if found else None
