"""Audit: each region's append-only, hash-chained record of moderation actions."""

from __future__ import annotations

from fyp.audit.log import (
    AUDIT_MIGRATION,
    GENESIS,
    AuditEntry,
    AuditLog,
    Problem,
    SQLStore,
    VerifyReport,
    canonical_json,
    sql_store,
)

__all__ = [
    "AUDIT_MIGRATION",
    "GENESIS",
    "AuditEntry",
    "AuditLog",
    "Problem",
    "SQLStore",
    "VerifyReport",
    "canonical_json",
    "sql_store",
]
