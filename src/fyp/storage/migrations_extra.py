"""Migrations contributed by capability packages (moderation, audit, access, experiments,
follows, blocks, the order of follows, retention).

Each package keeps its SQL next to its code and is listed here, so the store applies
everything in version order from one place.
"""

from __future__ import annotations

from fyp.access.keys import ACCESS_MIGRATION
from fyp.audit.log import AUDIT_MIGRATION, AUDIT_TRIGGERS_MIGRATION, AUDIT_TRUNCATE_MIGRATION
from fyp.catalog.blocks import BLOCKED_BY_MIGRATION, BLOCKS_MIGRATION, OWED_MIGRATION
from fyp.catalog.follow_order import FOLLOW_ORDER_MIGRATION
from fyp.catalog.follows import (
    FOLLOWING_TAB_MIGRATION,
    FOLLOWING_TAB_NEWEST_MIGRATION,
    FOLLOWS_MIGRATION,
)
from fyp.experiments.exposures import EXPOSURES_MIGRATION
from fyp.moderation.report_store import REPORTS_MIGRATION
from fyp.moderation.snapshot import CATALOG_CHANGES_MIGRATION
from fyp.moderation.store import MODERATION_MIGRATION
from fyp.sovereignty.retention_tables import RETENTION_MIGRATION
from fyp.storage.migrations import Migration

EXTRA_MIGRATIONS: tuple[Migration, ...] = (
    MODERATION_MIGRATION,
    AUDIT_MIGRATION,
    ACCESS_MIGRATION,
    AUDIT_TRIGGERS_MIGRATION,
    CATALOG_CHANGES_MIGRATION,
    AUDIT_TRUNCATE_MIGRATION,
    EXPOSURES_MIGRATION,
    REPORTS_MIGRATION,
    FOLLOWS_MIGRATION,
    FOLLOWING_TAB_MIGRATION,
    BLOCKS_MIGRATION,
    BLOCKED_BY_MIGRATION,
    FOLLOW_ORDER_MIGRATION,
    RETENTION_MIGRATION,
    FOLLOWING_TAB_NEWEST_MIGRATION,
    OWED_MIGRATION,
)
