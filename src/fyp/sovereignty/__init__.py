"""Data sovereignty: the checkable promises each region makes about its users' data."""

from __future__ import annotations

from fyp.sovereignty.ledger import ErasureLedger, LedgerEntry, user_pseudonym
from fyp.sovereignty.region_keys import region_secret, secrets_dir

__all__ = ["ErasureLedger", "LedgerEntry", "region_secret", "secrets_dir", "user_pseudonym"]
