"""Prove that nothing of an erased user remains: ``fyp erasure verify DIR USER``.

Checked in every region, not only the one the user was homed in:

- every store column that names a person (:func:`fyp.sovereignty.remnants.person_columns`),
  the audit log included (it must name users by pseudonym only);
- the store files' raw bytes (``store.sqlite`` and its WAL), when the id is distinctive
  enough that finding it means something (not all digits, at least 6 characters):
  deleted rows must not linger in free pages;
- every artifact version's id arrays (vectors, learned-from list, creators);
- what an artifact write or removal killed mid-way left under ``models/``
  (``.<version>.tmp``, ``.<version>.deleting``), as ``copy`` remnants: its arrays as far
  as they were written (a cut file counts, as an unreadable copy does), until the
  region's next training or ``fyp erasure process`` removes it;
- every other file under ``regions/<r>/`` (but the ledger, models and secrets) and in the
  deployment directory outside the regions' (a store copied to the root, an export left
  there), read as the residency scan reads files (CSV user columns, JSON person fields,
  ``user_id=`` pairs in any text such as a log), else by their bytes for a distinctive id
  (region ``-`` outside the regions); archives (``.zip``) are not opened;
- plaintext copies under ``regions/<r>/``: any other SQLite file (person columns, and
  its bytes as above) and ``.npz`` arrays outside ``models/`` — the staging directories
  of backups, restores and residency scans among them: a run killed mid-way leaves its
  copy of the whole store until ``fyp erasure process`` or the next backup removes it;
- damaged stores a restore moved aside (``regions/<r>/.quarantine/``,
  :mod:`fyp.sovereignty.quarantine`), as ``quarantine`` remnants: a store file the user
  is named in, or that cannot be read (nothing can vouch for it), and any of its files
  (WAL included) whose bytes hold the id. Nothing removes them but the operator, so a
  quarantined store keeps every erasure verified after it at ``remnants`` until it is
  deleted: it must not outlive its use;
- every region's served log kept on a server of its own (Redis): any key naming the
  user, and a server that cannot be scanned (a ``served_log`` remnant either way);
- the retrain that removes the user's share of aggregates: while a receipt is still
  pending in some artifact, the result is *pending* (exit 1) with its deadline.

Encrypted backups are outside this check: they may still hold the user, and a restore
re-applies every erasure in the ledger (:func:`fyp.sovereignty.erasure.reapply_erasures`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fyp.models.artifacts import LEFTOVER_FIX, leftovers
from fyp.regions.deployment import Deployment
from fyp.sovereignty import served_data
from fyp.sovereignty.erasure import Receipt, iso, now_ms, receipt_signature_ok
from fyp.sovereignty.erasure_process import pending_retrains
from fyp.sovereignty.ledger import ERASURE, MOVE, ErasureLedger, user_pseudonym
from fyp.sovereignty.quarantine import WHY, in_quarantine, quarantined, why
from fyp.sovereignty.region_data import store_companions
from fyp.sovereignty.remnants import (
    SKIPPED_FILES,
    SQLITE_MAGIC,
    artifacts_naming,
    copies,
    copy_hits,
    region_walk,
    store_hits,
)
from fyp.sovereignty.residency_readers import file_names

MIN_SCANNABLE_ID = 6
SCAN_CHUNK = 1 << 22


@dataclass(frozen=True)
class Remnant:
    region: str
    # store | store_bytes | artifact | file (| file_bytes) | copy (| copy_bytes) | quarantine
    # | served_log
    kind: str
    where: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ErasureReport:
    user_id: str
    remnants: list[Remnant] = field(default_factory=list)
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # region -> entry
    pending: dict[str, int] = field(default_factory=dict)  # receipt -> deadline
    receipt: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    checked_at_ms: int = field(default_factory=now_ms)

    @property
    def receipt_ok(self) -> bool:
        return self.receipt is None or bool(self.receipt.get("ok"))

    @property
    def status(self) -> str:
        if not self.ledger:  # no erasure to prove (a typo, or a user never erased: what
            return "not_erased"  # they hold is listed, but is no erasure's remnant)
        if self.remnants:
            return "remnants"
        if not self.receipt_ok:
            return "bad_receipt"
        if self.pending:
            overdue = min(self.pending.values()) < self.checked_at_ms
            return "retrain_overdue" if overdue else "pending_retrain"
        return "erased"

    @property
    def ok(self) -> bool:
        return self.status == "erased"

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "status": self.status,
            "ok": self.ok,
            "remnants": [r.to_dict() for r in self.remnants],
            "ledger": self.ledger,
            "pending_retrain": {
                k: {"deadline_ms": v, "deadline": iso(v)} for k, v in self.pending.items()
            },
            "receipt": self.receipt,
            "notes": self.notes,
        }


def bytes_found(path: Path, needle: bytes) -> int:
    """Occurrences of ``needle`` in a file, read in overlapping chunks."""
    if not path.is_file():
        return 0
    found = 0
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(SCAN_CHUNK):
            block = tail + chunk
            found += block.count(needle)
            # shorter than the needle, so nothing counted here is counted again
            tail = block[-(len(needle) - 1) :] if len(needle) > 1 else b""
    return found


def quarantine_remnants(
    region: str, region_dir: Path, entry: Path, user_id: str, scannable: bool
) -> list[Remnant]:
    """What of ``user_id`` a quarantined store may hold: its store file read as any copy
    (one that does not read counts: nothing vouches for it), every file's bytes."""
    out: list[Remnant] = []
    for path in sorted(p for p in entry.rglob("*") if p.is_file() and p.name != WHY):
        rel = path.relative_to(region_dir).as_posix()
        side = path.name.endswith(("-wal", "-shm", "-journal"))
        with path.open("rb") as f:
            is_sqlite = f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
        if is_sqlite:
            for where, n in copy_hits(path, user_id).items():
                out.append(Remnant(region, "quarantine", f"{rel}: {where}", n))
        elif not side:
            out.append(Remnant(region, "quarantine", f"{rel}: not a readable SQLite file", 1))
        n = bytes_found(path, user_id.encode()) if scannable else 0
        if n:
            out.append(Remnant(region, "quarantine", f"{rel}: raw bytes", n))
    return out


def check_receipt(deployment: Deployment, user_id: str, receipt: Receipt) -> dict[str, Any]:
    """Signature, pseudonym and ledger entry of a receipt, each checked on its own."""
    signed = receipt_signature_ok(deployment, receipt)
    names_user = (
        receipt.region in deployment.regions
        and user_pseudonym(deployment.config, receipt.region, user_id) == receipt.pseudonym
    )
    in_ledger = False
    if receipt.region in deployment.regions:
        ledger = ErasureLedger(deployment.config, receipt.region)
        in_ledger = any(
            e.receipt_id == receipt.receipt_id and e.subject == receipt.pseudonym
            for e in ledger.entries()
        )
    return {
        "receipt_id": receipt.receipt_id,
        "signature_valid": signed,
        "names_this_user": names_user,
        "in_ledger": in_ledger,
        "ok": signed and names_user and in_ledger,
    }


def region_remnants(
    deployment: Deployment,
    region: str,
    user_id: str,
    notes: list[str],
    creators: bool = True,
) -> list[Remnant]:
    """What of ``user_id`` one region still holds: store rows, store bytes, copies,
    quarantined stores, artifacts and data files (``notes`` gets what was not checked).
    ``creators=False`` leaves out the public catalogue's creator ids (a user who moved
    away stays the creator of their uploads), and the store bytes when those name them."""
    config = deployment.config
    scannable = len(user_id) >= MIN_SCANNABLE_ID and not user_id.isdigit()
    out: list[Remnant] = []
    store = deployment.store(region)
    hits = store_hits(store, user_id)
    if not creators:
        uploads = [h for h in hits if h.column == "creator_id"]
        hits = [h for h in hits if h.column != "creator_id"]
        if uploads and scannable:
            scannable = False
            notes.append(
                f"region {region!r}: store bytes not scanned: its catalogue names the user "
                "as a creator (uploads stay when a user moves)"
            )
    for hit in hits:
        out.append(Remnant(region, "store", f"{hit.table}.{hit.column}", hit.rows))
    raw = getattr(store, "path", None)
    files = [] if not isinstance(raw, str) or raw == ":memory:" else [Path(raw)]
    if raw is None and scannable:
        notes.append(
            f"region {region!r}: its store is on a database server, whose files are "
            "not byte-scanned here (its rows were checked)"
        )
    if scannable:
        for f in [*files, *(p.with_name(p.name + "-wal") for p in files)]:
            n = bytes_found(f, user_id.encode())
            if n:
                out.append(Remnant(region, "store_bytes", f.name, n))
    region_dir = config.region_dir(region)
    live = {p.resolve() for f in files for p in store_companions(f)}
    copied = list(copies(region_dir, live))  # read as copies here, and not again below
    for path in copied:
        if in_quarantine(region_dir, path):
            continue  # below
        rel = path.relative_to(region_dir).as_posix()
        for where, n in copy_hits(path, user_id).items():
            out.append(Remnant(region, "copy", f"{rel}: {where}", n))
        n = bytes_found(path, user_id.encode()) if scannable else 0
        if n and path.suffix != ".npz":
            out.append(Remnant(region, "copy_bytes", rel, n))
    for aside in quarantined(region_dir):
        out += quarantine_remnants(region, region_dir, aside, user_id, scannable)
        notes.append(
            f"regions/{region}/{aside.relative_to(region_dir).as_posix()}: a damaged store "
            f"fyp restore moved aside ({why(aside).get('damage', 'damaged')}); only its "
            "operator removes it (`fyp quarantine remove`, on record), once nothing more is "
            "to be salvaged from it"
        )
    for version, arrays in artifacts_naming(region_dir, user_id).items():
        if not creators:
            arrays = [a for a in arrays if a != "creator_ids"]
        if arrays:
            out.append(Remnant(region, "artifact", f"models/{version}: {', '.join(arrays)}", 1))
    for leftover in leftovers(region_dir):
        found = leftover_remnants(region, region_dir, leftover, user_id, scannable)
        if found:
            out += found
            notes.append(f"regions/{region}/models/{leftover.name}: {LEFTOVER_FIX}")
    listed = {p.resolve() for p in copied}
    others = (
        path
        for path in region_walk(region_dir)
        if path.resolve() not in live | listed
        and path.name not in SKIPPED_FILES
        and not in_quarantine(region_dir, path)
    )
    out += file_remnants(region, region_dir, others, user_id, scannable, creators)
    return out


def leftover_remnants(
    region: str, region_dir: Path, leftover: Path, user_id: str, scannable: bool
) -> list[Remnant]:
    """What of ``user_id`` a killed artifact writer's directory (``models/.<version>.tmp``,
    :func:`fyp.models.artifacts.leftovers`) holds, as ``copy`` remnants: its arrays read
    as far as they were written (a cut file counts: nothing vouches for the rest), any
    other file by its bytes for a distinctive id."""
    out: list[Remnant] = []
    for path in sorted(p for p in leftover.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(region_dir).as_posix()
        if path.suffix in {".npz", ".npy"}:
            for where, n in copy_hits(path, user_id).items():
                out.append(Remnant(region, "copy", f"{rel}: {where}", n))
        elif scannable and (n := bytes_found(path, user_id.encode())):
            out.append(Remnant(region, "copy_bytes", rel, n))
    return out


def file_remnants(
    region: str,
    base: Path,
    paths: Iterable[Path],
    user_id: str,
    scannable: bool,
    creators: bool = True,
) -> list[Remnant]:
    """Files naming the user as the residency scan reads them (a SQLite file's person
    columns, arrays, a CSV's user columns, a JSON document's person fields, ``user_id=``
    pairs in any text, e.g. a log), else, for a distinctive id, by their bytes (an
    export renamed ``.txt``). A ``.zip`` or other archive is not opened."""
    out: list[Remnant] = []
    for path in paths:
        rel = path.relative_to(base).as_posix()
        n = sum(
            counts.get(user_id, 0)
            for where, cls, counts in file_names(path)
            if cls not in ("pseudonym", "unreadable") and (creators or "creator" not in where)
        )
        if n:
            out.append(Remnant(region, "file", rel, n))
        elif scannable and (n := bytes_found(path, user_id.encode())):
            out.append(Remnant(region, "file_bytes", rel, n))
    return out


def outside_remnants(deployment: Deployment, user_id: str, scannable: bool) -> list[Remnant]:
    """Files of the deployment directory outside every region's (a store copied to the
    root, an export left there): the residency scan's unowned files, region ``-``."""
    from fyp.sovereignty.residency import unowned_files  # it builds on this module

    config = deployment.config
    return file_remnants("-", config.root, unowned_files(config), user_id, scannable)


def verify_erasure(
    deployment: Deployment, user_id: str, receipt: Receipt | None = None
) -> ErasureReport:
    report = ErasureReport(user_id)
    config = deployment.config
    receipts: set[str] = set()
    for region in deployment.regions:
        ledger = ErasureLedger(config, region)
        entry = ledger.find(user_id, ERASURE)  # a move away is no erasure
        if ledger.find(user_id, MOVE) is not None:
            report.notes.append(
                f"region {region!r} recorded a move of this user away from it: `fyp user "
                "verify-move` proves that move"
            )
        if entry is not None:
            receipts.add(entry.receipt_id)
            report.ledger[region] = {
                "receipt_id": entry.receipt_id,
                "erased_at_ms": entry.erased_at_ms,
                "erased_at": iso(entry.erased_at_ms),
            }
    if not report.ledger:
        report.notes.append("no erasure of this id is recorded in any region's ledger")
    scannable = len(user_id) >= MIN_SCANNABLE_ID and not user_id.isdigit()
    if not scannable:
        report.notes.append(
            f"store files not byte-scanned: the id {user_id!r} is too short or numeric "
            "for a raw match to mean anything (the column checks still ran)"
        )
    for region in deployment.regions:
        report.remnants += region_remnants(deployment, region, user_id, report.notes)
        for rid, deadline in pending_retrains(config.region_dir(region)).items():
            if rid in receipts:
                report.pending[rid] = deadline
    report.remnants += outside_remnants(deployment, user_id, scannable)
    for region, where, keys in served_data.remnants(deployment, user_id):
        report.remnants.append(Remnant(region, "served_log", where, keys))
    if receipt is not None:
        report.receipt = check_receipt(deployment, user_id, receipt)
    if (config.root / "backups").is_dir():
        report.notes.append(
            "backups/ may still hold the user (encrypted); a restore re-applies every erasure "
            "in the ledger"
        )
    return report
