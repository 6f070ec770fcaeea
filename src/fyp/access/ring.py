"""The keys a server accepts, in memory by the hash of their secret.

Looking a key up is a hash and a dict lookup, so the check stays cheap on the feed and
event routes; keys created or revoked by another process (``fyp keys``) are seen
within ``REFRESH_S``.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass

from fyp.access.keys import OPERATOR_ROLES, ApiKey, KeyStore, split_token
from fyp.errors import Unauthenticated
from fyp.regions.deployment import Deployment

REFRESH_S = 1.0
"""Keys created or revoked by another process are seen within this many seconds."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified key: who is calling, with which roles, for which regions."""

    key_id: str
    name: str
    roles: frozenset[str]
    regions: frozenset[str]
    all_regions: bool
    """The key reaches every region of the deployment."""
    service_roles: frozenset[str]
    """Its roles that are services (``ingest``, ``feed``), not people."""


class KeyRing:
    """Every valid key of a deployment, in memory by the hash of its secret.

    A key is valid in the regions whose store holds it unrevoked, and revoked everywhere
    once any of its regions says so (a partial revocation fails closed). The ring
    reloads every ``REFRESH_S``; a key it does not know is looked up by id (a primary
    key read per region, so a flood of made-up keys costs little) and the ring reloads
    only if a store holds it, so a key works the moment ``fyp keys create`` returns.
    :meth:`revoke` takes effect in this process at once."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self._by_digest: dict[bytes, Principal] = {}
        self._next_load = 0.0

    def load(self) -> None:
        d, keys = self.deployment, KeyStore(self.deployment)
        copies: dict[str, list[tuple[str, ApiKey]]] = defaultdict(list)
        for region in d.regions:
            for key in keys.rows(region):
                copies[key.key_id].append((region, key))
        every = frozenset(d.regions)
        ring: dict[bytes, Principal] = {}
        for key_id, held in copies.items():
            if any(k.revoked for _, k in held):
                continue
            digest = held[0][1].secret_sha256
            regions = frozenset(r for r, k in held if k.secret_sha256 == digest and r in k.regions)
            roles = frozenset.intersection(*(frozenset(k.roles) for _, k in held))
            ring[bytes.fromhex(digest)] = Principal(
                key_id, held[0][1].name, roles, regions, every <= regions, roles - OPERATOR_ROLES
            )
        self._by_digest = ring
        self._next_load = time.monotonic() + REFRESH_S

    def authenticate(self, token: str | None) -> Principal:
        """The key's principal, or :class:`Unauthenticated`."""
        now = time.monotonic()
        if now >= self._next_load:
            self.load()
        if not token:
            raise Unauthenticated("this route needs an API key: send 'Authorization: Bearer <key>'")
        parts = split_token(token)
        if parts is None:
            raise Unauthenticated("malformed API key (keys look like fyp_<key_id>_<secret>)")
        key_id, secret = parts
        digest = hashlib.sha256(secret.encode()).digest()
        principal = self._by_digest.get(digest)
        if principal is None and KeyStore(self.deployment).holds(key_id, digest.hex()):
            self.load()  # a key created since the last load
            principal = self._by_digest.get(digest)
        if principal is None or principal.key_id != key_id:
            raise Unauthenticated("unknown or revoked API key")
        return principal

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke in every region's store, and in this process at once."""
        key = KeyStore(self.deployment).revoke(key_id)
        self.load()
        return key
