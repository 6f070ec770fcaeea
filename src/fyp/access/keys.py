"""API keys: scoped by role and region, stored hashed in the store of every region they reach.

A key is ``fyp_<key_id>_<secret>``. Only ``sha256(secret)`` is kept, in the ``api_keys``
table of each region the key is scoped to, so carving a region out takes its keys with
it, and no region holds a key that does not reach it (a CHECK constraint refuses one).
A key is valid in a region only while that region's store holds it unrevoked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fyp.audit.log import SQLStore, now_ms, sql_store
from fyp.durable import append_durable
from fyp.errors import InvalidRequest, NotFound
from fyp.storage.migrations import Migration

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

ROLES: tuple[str, ...] = ("ingest", "feed", "moderator", "admin", "auditor", "metrics")
"""``ingest`` and ``feed`` are services; ``moderator``, ``admin`` and ``auditor`` are people;
``metrics`` is a Prometheus scraper (``GET /metrics`` only)."""
OPERATOR_ROLES = frozenset({"moderator", "admin", "auditor"})
PREFIX = "fyp"
ADMIN_KEY_FILE = "admin.key"
KEY_ID_CHARS = 16
_NAME = re.compile(r"^[^\x00-\x1f]{1,128}$")

ACCESS_MIGRATION = Migration(
    12,
    "api keys: hashed, scoped by role and region, one copy per region they reach",
    """
    CREATE TABLE api_keys (
        key_id         TEXT PRIMARY KEY,
        secret_sha256  TEXT NOT NULL,
        name           TEXT NOT NULL,
        roles          TEXT NOT NULL,
        regions        TEXT NOT NULL CHECK (instr(regions, '"{region}"') > 0),
        created_at_ms  INTEGER NOT NULL,
        revoked_at_ms  INTEGER
    ) WITHOUT ROWID;
    """,
)
_COLS = "key_id, secret_sha256, name, roles, regions, created_at_ms, revoked_at_ms"


def secret_digest(secret: str) -> str:
    """How a key's secret is stored and looked up: plain SHA-256, hex.

    The secret is 256 random bits (``secrets.token_urlsafe(32)``), not a password a person
    chose, so there is no dictionary to try and a brute force of 2**256 is out of reach:
    a slow salted hash (scrypt, argon2) would add nothing but cost on every cache miss.
    A fast hash keeps lookups cheap; a stolen table still yields no usable key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed ``fyp_<key_id>_<secret>``, else None.

    No regex: this runs on every request, and the key id is checked against the stored
    key anyway."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(key_id) != KEY_ID_CHARS or not secret:
        return None
    return key_id, secret


@dataclass(frozen=True)
class ApiKey:
    """A key as one region's store holds it (never the secret)."""

    key_id: str
    secret_sha256: str
    name: str
    roles: tuple[str, ...]
    regions: tuple[str, ...]
    created_at_ms: int
    revoked_at_ms: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at_ms is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "roles": list(self.roles),
            "regions": list(self.regions),
            "created_at_ms": self.created_at_ms,
            "revoked_at_ms": self.revoked_at_ms,
        }


def _row(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        key_id=str(row[0]),
        secret_sha256=str(row[1]),
        name=str(row[2]),
        roles=tuple(json.loads(row[3])),
        regions=tuple(json.loads(row[4])),
        created_at_ms=int(row[5]),
        revoked_at_ms=None if row[6] is None else int(row[6]),
    )


def _ordered(values: Iterable[str], order: Iterable[str]) -> tuple[str, ...]:
    wanted = set(values)
    return tuple(v for v in order if v in wanted)


class KeyStore:
    """Create, list and revoke the API keys of a deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def rows(self, region: str) -> list[ApiKey]:
        """The keys one region's store holds, oldest first."""
        sql = f"SELECT {_COLS} FROM api_keys ORDER BY created_at_ms, key_id"
        return [_row(r) for r in self._sql(region).query(sql)]

    def _sql(self, region: str) -> SQLStore:
        return sql_store(self.deployment.store(region))

    def holds(self, key_id: str, secret_sha256: str) -> bool:
        """Whether some region holds this key unrevoked (one primary-key read per region)."""
        for region in self.deployment.regions:
            rows = self._sql(region).query(
                "SELECT secret_sha256 FROM api_keys WHERE key_id = ? AND revoked_at_ms IS NULL",
                (key_id,),
            )
            if rows and rows[0][0] == secret_sha256:
                return True
        return False

    def create(
        self, name: str, roles: Iterable[str], regions: Iterable[str] | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its token; the token is shown once and never stored."""
        d = self.deployment
        roles, regions = list(roles), list(d.regions if regions is None else regions)
        if not _NAME.fullmatch(name):
            raise InvalidRequest("a key needs a name of 1-128 printable characters")
        unknown = sorted(set(roles) - set(ROLES))
        if not roles or unknown:
            raise InvalidRequest(f"roles must be some of {', '.join(ROLES)}; got {roles}")
        for r in regions:
            d.store(r)  # UnknownRegion names the declared ones
        if not regions:
            raise InvalidRequest("a key needs at least one region")
        key_id, secret = secrets.token_hex(KEY_ID_CHARS // 2), secrets.token_urlsafe(32)
        key = ApiKey(
            key_id=key_id,
            secret_sha256=secret_digest(secret),
            name=name,
            roles=_ordered(roles, ROLES),
            regions=_ordered(regions, d.regions),
            created_at_ms=now_ms(),
        )
        written: list[str] = []
        try:
            for r in key.regions:
                self._sql(r).execute(
                    f"INSERT INTO api_keys ({_COLS}) VALUES (?,?,?,?,?,?,?)",
                    (
                        key.key_id,
                        key.secret_sha256,
                        key.name,
                        json.dumps(list(key.roles)),
                        json.dumps(list(key.regions)),
                        key.created_at_ms,
                        None,
                    ),
                )
                written.append(r)
        except BaseException:
            for r in written:  # best effort: no key valid in only some of its regions
                self._sql(r).execute("DELETE FROM api_keys WHERE key_id=?", (key_id,))
            raise
        return key, f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        """Every key of the deployment once (a key is revoked if any of its regions says so)."""
        merged: dict[str, ApiKey] = {}
        for region in self.deployment.regions:
            for key in self.rows(region):
                seen = merged.get(key.key_id)
                if seen is None or (key.revoked and not seen.revoked):
                    merged[key.key_id] = key
        return sorted(merged.values(), key=lambda k: (k.created_at_ms, k.key_id))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key in every region holding it; revoking twice keeps the first time.

        Each region also appends the revocation to its revocation ledger (fsync'd first),
        which no backup holds: restoring an older store re-applies it, so a revoked key
        never comes back with a backup."""
        t = now_ms()
        holding = [
            r
            for r in self.deployment.regions
            if self._sql(r).query("SELECT 1 FROM api_keys WHERE key_id = ?", (key_id,))
        ]
        if not holding:
            raise NotFound(f"no API key {key_id!r}", key_id=key_id)
        for region in holding:
            record_revocation(self.deployment.config.region_dir(region), key_id, t)
            self._sql(region).execute(
                "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?) WHERE key_id = ?",
                (t, key_id),
            )
        return next(k for k in self.list() if k.key_id == key_id)


def write_key_file(path: Path, token: str) -> None:
    """Write a token to a new file only its owner can read (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_admin_key(deployment: Deployment) -> tuple[Path, bool]:
    """``DIR/admin.key``, an admin key for every region, created once; (path, created now).

    It lives at the deployment root, outside every ``regions/<r>/``, so no per-region
    copy, backup or carve-out ever includes the secret (only its hash, in each store)."""
    path = deployment.config.root / ADMIN_KEY_FILE
    if path.is_file():
        return path, False
    _, token = KeyStore(deployment).create("admin", ["admin"])
    write_key_file(path, token)
    return path, True


REVOCATIONS_FILE = "revoked_keys.jsonl"
"""Each region's append-only record of revoked keys, outside its store and its backups."""


def record_revocation(region_dir: Path, key_id: str, revoked_at_ms: int) -> None:
    region_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"key_id": key_id, "revoked_at_ms": revoked_at_ms}) + "\n"
    append_durable(region_dir / REVOCATIONS_FILE, line)


def reapply_revocations(store: object, region_dir: Path) -> list[str]:
    """Revoke again, in a (restored) store, every key the region's ledger says was revoked;
    returns the ids that had come back unrevoked."""
    path = region_dir / REVOCATIONS_FILE
    if not path.is_file():
        return []
    sql = sql_store(store)
    again: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        n = sql.execute(
            "UPDATE api_keys SET revoked_at_ms = ? WHERE key_id = ? AND revoked_at_ms IS NULL",
            (int(entry["revoked_at_ms"]), str(entry["key_id"])),
        )
        if n:
            again.append(str(entry["key_id"]))
    return again
