"""Damaged stores a restore moved aside instead of deleting them.

A restore over a damaged store (:mod:`fyp.sovereignty.restore`) never deletes it: what
SQLite could not read, a person with better tools may, and what happened after the
backup is only in there. The store file goes with its ``-wal``, ``-journal`` and
``-shm`` (never checkpointed: the damaged file is not written to) into
``regions/<r>/.quarantine/store-<UTC time>-<nonce>/``, inside the region's own
directory (its data stays in its region), with ``why.json`` (when, which restore and
backup, what was wrong: no user's data).

A quarantined store is a plaintext copy of the region as it was, erased users of later
erasures included, so it is never forgotten: no backup or carve-out carries it (it is a
dot-directory), ``fyp erasure verify`` reports it as a ``quarantine`` remnant of any
user it names or cannot vouch for (a damaged store cannot be vouched for), and
``fyp residency check`` scans it as its own source. Nothing deletes it but the operator,
once nothing more is to be salvaged from it: ``fyp quarantine remove`` (:func:`remove`),
which records who removed it, when and why in the region's audit log before it deletes
the files (a removal cut short is finished by running it again, recorded once), so the
deletion of the last copy of erased users' data is on the record like their erasure.
``fyp quarantine list`` (:func:`entries`) shows what is kept, how large, since when and why.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fyp.durable import fsync_path, write_durable

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

QUARANTINE = ".quarantine"
WHY = "why.json"
REMOVED = "quarantine.remove"  # the audit action of a removal


def new_quarantine(started_at_ms: int, nonce: str | None = None) -> str:
    """A quarantine directory's path (relative to the region's directory), named for the
    restore's start; ``nonce`` makes it the same each time it is worked out again."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at_ms / 1000))
    return f"{QUARANTINE}/store-{stamp}-{nonce or secrets.token_hex(3)}"


def quarantined(region_dir: Path) -> list[Path]:
    """Every quarantined store directory of a region, oldest first."""
    root = region_dir / QUARANTINE
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir())


def in_quarantine(region_dir: Path, path: Path) -> bool:
    try:
        return path.relative_to(region_dir).parts[:1] == (QUARANTINE,)
    except ValueError:
        return False


def why(entry: Path) -> dict[str, Any]:
    """What ``why.json`` says (empty if it cannot be read)."""
    try:
        raw = json.loads((entry / WHY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def move_aside(files: list[Path], dest: Path, reason: dict[str, Any]) -> list[Path]:
    """Move ``files`` (a store and its side files, those that exist) into ``dest``,
    durably; returns where they are now. The store file goes last, so a run cut short
    leaves it behind for the next run to see (and move with whatever is left)."""
    dest.mkdir(parents=True, exist_ok=True)
    note = dest / WHY
    if not note.exists():
        write_durable(note, json.dumps(reason, indent=2, sort_keys=True).encode())
    moved: list[Path] = []
    for path in [*files[1:], files[0]]:
        if path.exists():
            target = dest / path.name
            _move(path, target)
            moved.append(target)
    fsync_path(dest)
    for parent in {p.parent for p in files}:
        fsync_path(parent)
    return moved


def _move(src: Path, dest: Path) -> None:
    """Rename, or across file systems copy (fsynced) and then remove."""
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(src, tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        src.unlink()


def entries(region_dir: Path) -> list[dict[str, Any]]:
    """Each quarantined store of a region: its name, size, and what ``why.json`` says
    (when, the damage, the restore and backup); nothing about any user."""
    out = []
    for entry in quarantined(region_dir):
        files = [p for p in entry.rglob("*") if p.is_file()]
        note = why(entry)
        out.append(
            {
                "name": entry.name,
                "path": f"{QUARANTINE}/{entry.name}",  # in the region's directory
                "bytes": sum(p.stat().st_size for p in files),
                "files": len(files),
                "quarantined_at_ms": note.get("quarantined_at_ms"),
                "damage": note.get("damage"),
                "restore_id": note.get("restore_id"),
                "replaced_by_backup": note.get("replaced_by_backup"),
            }
        )
    return out


def remove(
    deployment: Deployment, region: str, name: str, reason: str, actor: str
) -> dict[str, Any]:
    """Delete the quarantined store ``name`` of ``region``, recorded first in the region's
    audit log (``quarantine.remove``, subject ``.quarantine/<name>``, with its size, its
    ``why.json`` and ``reason``). A name that is not one of the region's quarantined
    stores is refused (no path outside ``.quarantine/`` can be named). Running it again
    after a removal was cut short finishes it without a second entry."""
    from fyp.audit.log import AuditLog
    from fyp.errors import InvalidRequest, NotFound

    if not reason.strip():
        raise InvalidRequest("say why the quarantined store may go (--reason)", field="reason")
    region_dir = deployment.config.region_dir(region)
    found = {e["name"]: e for e in entries(region_dir)}
    if name not in found:
        raise NotFound(
            f"region {region!r} has no quarantined store {name!r}"
            + (f" (it has: {', '.join(sorted(found))})" if found else " (it has none)")
        )
    log = AuditLog(deployment.store(region))
    subject = f"{QUARANTINE}/{name}"
    recorded = list(log.entries(action=REMOVED, subject=subject))
    if recorded:
        entry = recorded[-1]  # a removal cut short: its entry stands
    else:
        details = {k: v for k, v in found[name].items() if k not in ("name", "path")}
        entry = log.append(actor, REMOVED, subject, {**details, "reason": reason.strip()})
    shutil.rmtree(region_dir / QUARANTINE / name)
    fsync_path(region_dir / QUARANTINE)
    return {"region": region, **found[name], "audit_seq": entry.seq}
