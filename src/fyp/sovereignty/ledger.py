"""Each region's erasure ledger: which users were erased, and when, without naming them.

Erasing a user must survive a restore from an older backup, so the record of the
erasure cannot live in the store that the backup rolls back. The ledger is a separate
append-only file, ``regions/<region>/erasures.jsonl``, never included in a backup and
never rolled back. It holds no user id: each entry names its user by a keyed pseudonym,
HMAC-SHA256 with the region's ``ledger`` secret, so the ledger is not itself personal
data of the erased user, yet a restore can still recognise and re-erase them.

A user who moved their home region away (:mod:`fyp.sovereignty.move`) is recorded here
too, as ``kind: "move"`` with the destination in ``to``: the region must never hold them
again (a restore of an older backup removes them again, as it erases an erased user),
but they live on in the destination, so only this region's copy goes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fyp.config import DeploymentConfig
from fyp.durable import append_durable
from fyp.errors import StorageError
from fyp.sovereignty.region_keys import region_secret

if TYPE_CHECKING:
    from fyp.audit.log import Problem

LEDGER_FILE = "erasures.jsonl"


def user_pseudonym(config: DeploymentConfig, region: str, user_id: str) -> str:
    """How append-only records (ledger, audit log) name a user: HMAC with the region's key.

    Records that can never be edited must not hold a user id, or erasing the user
    would be impossible; anyone who knows an id can still find its records."""
    key = region_secret(config, region, "ledger")
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


ERASURE = "erasure"
MOVE = "move"


@dataclass(frozen=True)
class LedgerEntry:
    subject: str  # HMAC of the user id: the pseudonym, never the id itself
    receipt_id: str  # the erasure's receipt, or the move's id
    erased_at_ms: int  # when the user left the region (erased, or moved away)
    kind: str = ERASURE  # erasure | move (entries older than moves have no kind)
    to: str | None = None  # a move's destination region

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        if self.kind == ERASURE:  # an erasure's line is as it always was
            del out["kind"], out["to"]
        return out


class ErasureLedger:
    """The erasure ledger of one region of a deployment."""

    def __init__(self, config: DeploymentConfig, region: str) -> None:
        self.config = config
        self.region = config.region(region).name
        self._key: bytes | None = None

    @property
    def path(self) -> Path:
        return self.config.region_dir(self.region) / LEDGER_FILE

    def subject(self, user_id: str) -> str:
        """The pseudonym the ledger uses for ``user_id``."""
        if self._key is None:
            self._key = region_secret(self.config, self.region, "ledger")
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()  # = user_pseudonym

    def record(
        self,
        user_id: str,
        receipt_id: str,
        erased_at_ms: int,
        kind: str = ERASURE,
        to: str | None = None,
    ) -> LedgerEntry:
        """Append an entry and fsync it before returning (an erasure is acknowledged after)."""
        entry = LedgerEntry(self.subject(user_id), receipt_id, erased_at_ms, kind, to)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_durable(self.path, json.dumps(entry.to_dict(), sort_keys=True) + "\n")
        return entry

    def entries(self) -> list[LedgerEntry]:
        if not self.path.is_file():
            return []
        out: list[LedgerEntry] = []
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(LedgerEntry(**json.loads(line)))
                except (ValueError, TypeError) as exc:
                    raise StorageError(f"{self.path}:{n}: damaged ledger entry: {exc}") from exc
        return out

    def erased_since(self, ts_ms: int) -> list[LedgerEntry]:
        return [e for e in self.entries() if e.erased_at_ms >= ts_ms]

    def find(self, user_id: str, kind: str | None = None) -> LedgerEntry | None:
        """The latest entry for ``user_id`` (of ``kind``, if given), if the user was ever
        erased here or moved away from here (by time: an entry written back from the
        audit log comes after newer ones in the file)."""
        subject = self.subject(user_id)
        hits = [e for e in self.entries() if e.subject == subject and kind in (None, e.kind)]
        return max(reversed(hits), key=lambda e: e.erased_at_ms) if hits else None

    def write_back(self, entries: Iterable[LedgerEntry]) -> None:
        """Append entries the audit log vouches for (:func:`missing_from_ledger`)."""
        lines = "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries)
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_durable(self.path, lines)

    def matching(self, user_ids: Iterable[str], kind: str | None = None) -> set[str]:
        """Which of ``user_ids`` the ledger says were erased or moved away (of ``kind``,
        if given): what a restore must remove again."""
        erased = {e.subject for e in self.entries() if kind in (None, e.kind)}
        if not erased:
            return set()
        return {u for u in user_ids if self.subject(u) in erased}


def moved_into(config: DeploymentConfig, user_id: str, region: str, after_ms: int) -> bool:
    """True when some region's ledger records a move of the user *into* ``region`` after
    ``after_ms``: they came back, and ``region``'s own record of their leaving is spent."""
    for name in config.region_names:
        if name == region:
            continue
        ledger = ErasureLedger(config, name)
        if not ledger.path.is_file():
            continue
        subject = ledger.subject(user_id)
        if any(
            e.kind == MOVE and e.to == region and e.subject == subject and e.erased_at_ms > after_ms
            for e in ledger.entries()
        ):
            return True
    return False


LOGGED = {"erase_user": ERASURE, "move_user_out": MOVE}
"""The audit actions that each come with a ledger entry (same pseudonym, same region)."""


def missing_from_ledger(
    config: DeploymentConfig, store: object, region: str
) -> list[tuple[int, LedgerEntry]]:
    """The erasures and moves away the region's audit log records that its ledger lacks,
    with the entry's seq: a ledger cut or emptied by hand, which a restore would otherwise
    trust and bring the user back (an audit review did exactly that)."""
    from fyp.audit.log import AuditLog

    ledger = ErasureLedger(config, region)
    held = {(e.subject, e.receipt_id) for e in ledger.entries()}
    log = AuditLog(store)
    missing: list[tuple[int, LedgerEntry]] = []
    for action, kind in LOGGED.items():
        for e in log.entries(action=action):
            receipt = str(e.details.get("receipt_id") or e.details.get("move_id") or "")
            if not receipt or (e.subject, receipt) in held:
                continue
            to = e.details.get("to") if kind == MOVE else None
            entry = LedgerEntry(e.subject, receipt, e.ts_ms, kind, None if to is None else str(to))
            missing.append((e.seq, entry))
            held.add((e.subject, receipt))
    return sorted(missing, key=lambda m: m[0])


def ledger_problems(config: DeploymentConfig, store: object, region: str) -> list[Problem]:
    """:func:`missing_from_ledger` as findings of ``fyp audit verify``."""
    from fyp.audit.log import Problem

    return [
        Problem(
            seq,
            "unledgered",
            f"entry {seq} records {'an erasure' if e.kind == ERASURE else 'a move away'} "
            f"({e.receipt_id}) that the region's {LEDGER_FILE} lacks (cut by hand?): a "
            "restore would bring the user back; `fyp erasure process` writes it back and "
            "erases again",
        )
        for seq, e in missing_from_ledger(config, store, region)
    ]
