"""Do the two sides of every block agree? ``fyp user blocks-check``; and the schedule
that settles what requests cut short left owed (``fyp user blocks-settle``).

A block between users of two regions is two rows in two stores (:mod:`fyp.catalog.blocks`):
the blocker's ``blocks`` row, their decision, and the blocked user's ``blocked_by`` row,
which keeps the blocker out of the blocked user's feeds. A ``PUT`` or ``DELETE`` cut short
between the two, or a restore of one region from a backup older than a block or an
unblock, leaves them disagreeing. The blocker's side is the record: ``--repair`` writes
the blocked side of each block that lacks it and deletes each blocked side no block
stands behind, so the check is also the fix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fyp.audit.log import sql_store
from fyp.catalog.blocks import MIRROR, SETTLE_AFTER_MS, TABLE, Blocking, owed_since
from fyp.config import DeploymentConfig
from fyp.regions.background import ChildScheduler, schedule_lock
from fyp.regions.deployment import Deployment

log = logging.getLogger("fyp.background")

Pair = tuple[str, str]  # (blocker, blocked)


@dataclass
class BlockCheck:
    """What the check read and found; ``repaired``: how many rows ``repair`` fixed."""

    blocks: int = 0
    blocked_sides: int = 0
    missing: list[Pair] = field(default_factory=list)  # a block without its blocked side
    orphaned: list[Pair] = field(default_factory=list)  # a blocked side without a block
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return self.repaired == len(self.missing) + len(self.orphaned)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blocks": self.blocks,
            "blocked_sides": self.blocked_sides,
            "missing": [{"blocker": a, "blocked": b} for a, b in self.missing],
            "orphaned": [{"blocker": a, "blocked": b} for a, b in self.orphaned],
            "repaired": self.repaired,
        }


def check_blocks(deployment: Deployment, repair: bool = False) -> BlockCheck:
    """Compare every region's blocks with the blocked sides kept in every region (by the
    blocked user's home, as they are written); with ``repair``, make them agree."""
    blocks: dict[Pair, int] = {}  # -> since_ms
    sides: set[Pair] = set()
    for region in deployment.regions:
        sql = sql_store(deployment.store(region))
        for a, b, since in sql.query(f"SELECT user_id, creator_id, since_ms FROM {TABLE}"):
            blocks[str(a), str(b)] = int(since)
        sides |= {
            (str(a), str(b)) for b, a in sql.query(f"SELECT user_id, creator_id FROM {MIRROR}")
        }
    out = BlockCheck(blocks=len(blocks), blocked_sides=len(sides))
    people = {b for _, b in blocks} | {a for a, _ in sides}
    homes = deployment.locate_users(sorted(people), fresh=True)
    # a person no region here holds (erased, or homed in a region carved out of this
    # deployment or into it) is not judged: their side is not here to compare
    out.missing = sorted(p for p in blocks if p not in sides and p[1] in homes)
    out.orphaned = sorted(p for p in sides if p not in blocks and p[0] in homes)
    if repair:
        writer = Blocking(deployment)
        for a, b in out.missing:
            writer.mirror(b, a, blocks[a, b])
            out.repaired += 1
        for a, b in out.orphaned:
            writer.mirror(b, a, None)
            out.repaired += 1
    return out


class BlocksScheduler(ChildScheduler):
    """Writes the other side of blocks and unblocks that requests cut short left owed:
    every ``[serving] settle_blocks_seconds`` it asks each region's store for one pair
    owed for longer than :data:`~fyp.catalog.blocks.SETTLE_AFTER_MS` and, if there is one,
    runs ``fyp user blocks-settle`` in a child, holding ``.schedule-blocks.lock``."""

    name = "fyp-blocks"
    config: DeploymentConfig

    def __init__(self, config: DeploymentConfig, deployment: Deployment) -> None:
        super().__init__(config.serving.settle_blocks_seconds)
        self.config = config
        self.deployment = deployment

    def due(self, now_ms: int | None = None) -> bool:
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        for region in self.config.region_names:
            try:
                if owed_since(self.deployment.store(region), now - SETTLE_AFTER_MS):
                    return True
            except Exception as exc:  # a store that is down: the next round asks again
                log.warning("%s: region %s: cannot read owed blocks: %s", self.name, region, exc)
        return False

    def tick(self) -> bool:
        if not self.due():
            return False
        root = self.config.root
        lock = schedule_lock(root, "blocks")
        return self.run_child("user", "blocks-settle", str(root), lock=lock)
