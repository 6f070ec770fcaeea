"""After a restore's swap: what happened since the backup is put back on the restored region.

The audit entries the replaced store holds beyond the backup (read before the swap,
:mod:`fyp.sovereignty.salvage`) are appended to the restored log with their original
time, actor and subject (:func:`carry_audit_history`);
:func:`fyp.sovereignty.erasure.reapply_erasures` erases every restored user that a
region's erasure ledger — never part of a backup, never rolled back — says was erased;
keys revoked since are revoked again; the consents users recorded since stand again
(``fyp.sovereignty.consent_log.reapply_consents``); the two sides of every block agree
again (``fyp.catalog.blocks_check``, from the blocker's row); and the moderation
decisions made since stand again (:mod:`fyp.moderation.restored`). Then the restore's own
audit entry is appended and the pending-restore marker removed.

Each step may run again after a crash: carried entries are not carried twice, erasures
and revocations find nothing left to do, and the moderation decisions and the restore's
entry are one transaction, written once per restore (the entry carries the restore's id
from the marker; a run that finds it only removes the marker).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fyp.config import DeploymentConfig
from fyp.sovereignty.quarantine import why
from fyp.sovereignty.restore_marker import Pending, remove_pending
from fyp.sovereignty.restore_preview import EDITS, KINDS, added_text, plural
from fyp.sovereignty.salvage import Assessment

if TYPE_CHECKING:
    from fyp.audit.log import AuditEntry, AuditLog, Record
    from fyp.regions.deployment import Deployment


@dataclass
class Reapplied:
    """What the re-application did (read back from the restore's audit entry when an
    earlier run of the same restore got that far)."""

    assessment: Assessment
    reerased: list[str] = field(default_factory=list)
    carried: int | None = 0  # None: the replaced store's log could not be read at all
    remoderated: int = 0
    held: int = 0  # pending again: nothing confirms their verdict
    replaced: dict[str, Any] | None = None  # a damaged replaced store (as the entry says)
    served_keys_dropped: int = 0  # served log keys (Redis) of users the backup lacks
    # moves into the region since the backup whose user it lacks: (move id, from region)
    lost_arrivals: list[tuple[str, str]] = field(default_factory=list)
    reconsented: int = 0  # profiles whose consents recorded since the backup were put back
    expired: int = 0  # events the backup held past the region's retention limit, deleted
    expired_rows: dict[str, int] = field(default_factory=dict)  # the same, per table
    resynced_blocks: int = 0  # blocks' sides made to agree again (fyp.catalog.blocks_check)


def reapply(deployment: Deployment, region: str, pending: Pending, late: bool = False) -> Reapplied:
    """Put back on the restored region what happened since the backup, then remove the
    marker (``late``: the restore itself stopped before this point)."""
    from fyp.access.keys import reapply_revocations
    from fyp.audit.log import AuditLog
    from fyp.catalog.blocks_check import check_blocks
    from fyp.moderation.restored import reapply_moderation
    from fyp.sovereignty.consent_log import reapply_consents
    from fyp.sovereignty.erasure import reapply_erasures
    from fyp.sovereignty.retention import expire_region
    from fyp.sovereignty.served_data import drop_absent_users

    store = deployment.store(region)
    log = AuditLog(store)
    found = pending.assessment
    records = None if found.history is None else carry_audit_history(log, found.history)
    done = Reapplied(found, carried=None if records is None else len(records))
    # (erasures first: decisions about the videos they delete have nothing to act on)
    done.reerased = reapply_erasures(deployment, region)
    # a served log outside the store (Redis) is not in backups: keys of users the
    # restored store does not hold go (fyp.sovereignty.served_data)
    done.served_keys_dropped = drop_absent_users(deployment, region)
    done.lost_arrivals = lost_arrivals(deployment, region, records or [])
    # consents recorded since the backup stand again (a withdrawal is never rolled back)
    done.reconsented = reapply_consents(deployment, region, records or [])
    # behaviour that passed the retention limit since the backup was taken goes again
    expired = expire_region(deployment, region)
    done.expired, done.expired_rows = expired.events, expired.tables
    # a block's two sides may live in two regions: the restored side of blocks made or
    # ended since the backup disagrees with the other; the blocker's row is the record
    done.resynced_blocks = check_blocks(deployment, repair=True).repaired
    region_dir = deployment.config.region_dir(region)
    revoked = reapply_revocations(store, region_dir)
    with store.transaction():
        entry = restore_entry(log, pending)
        if entry is not None:  # written by a run that stopped before the marker went
            done.remoderated = int(entry.details.get("remoderated_videos", 0))
            done.held = int(entry.details.get("held_for_recheck", 0))
            done.replaced = entry.details.get("replaced_store")
        else:
            moderated = reapply_moderation(
                deployment,
                region,
                records or [],
                pending.backup_id,
                found.decisions,
                found.confirmed,
            )
            done.remoderated, done.held = moderated.changed, moderated.held
            done.replaced = replaced_store(deployment.config, region, pending)
            details: dict[str, Any] = {
                "restore_id": pending.restore_id,
                "reerased": len(done.reerased),
                "rerevoked_keys": revoked,
                "remoderated_videos": done.remoderated,
                "reapplied_consents": done.reconsented,
                "expired_events": done.expired,
                "expired": done.expired_rows,
                "resynced_blocks": done.resynced_blocks,
                "carried_audit_entries": "unreadable" if done.carried is None else done.carried,
            }
            if done.replaced is not None:
                details["replaced_store"] = done.replaced
            if done.lost_arrivals:
                details["lost_arrivals"] = [m for m, _ in done.lost_arrivals]
            if found.since_backup is None or any(found.since_backup.values()):
                details["dropped_since_backup"] = found.since_backup or "uncounted"
            if not found.confirmed:
                details["moderation_since_backup"] = "unconfirmed"
                details["held_for_recheck"] = done.held
            if late:
                details["finished_at_open"] = True
            log.append("fyp restore", "restore", pending.backup_id, details)
    remove_pending(region_dir)
    return done


def lost_arrivals(
    deployment: Deployment, region: str, since: Sequence[Record]
) -> list[tuple[str, str]]:
    """The moves into ``region`` recorded after the backup (``since``: the carried audit
    entries) whose user the restored store lacks and who has not left since (erased or
    moved on: the region's ledger): the move removed the source's copy, so the restore
    took their only one. Returns (move id, from region) per such move."""
    from fyp.audit.log import sql_store
    from fyp.sovereignty.ledger import ErasureLedger

    arrived = {
        subject: (str(details.get("move_id", "?")), str(details.get("from", "?")))
        for _, action, subject, details, _ in since
        if action == "move_user_in" and details is not None
    }
    if not arrived:
        return []
    ledger = ErasureLedger(deployment.config, region)  # names users as the audit log does
    accounted = {e.subject for e in ledger.entries()}  # left again: erased or moved on
    users = sql_store(deployment.store(region)).query("SELECT user_id FROM users")
    accounted.update(ledger.subject(str(user_id)) for (user_id,) in users)  # restored
    return sorted(move for subject, move in arrived.items() if subject not in accounted)


def restore_entry(log: AuditLog, pending: Pending) -> AuditEntry | None:
    """This restore's own audit entry, if a run of it already wrote one."""
    for entry in log.entries(subject=pending.backup_id, action="restore"):
        if entry.details.get("restore_id") == pending.restore_id:
            return entry
    return None


def replaced_store(
    config: DeploymentConfig, region: str, pending: Pending
) -> dict[str, Any] | None:
    """What the restore's entry says of a damaged replaced store (None: it was healthy,
    and replaced)."""
    aside = config.region_dir(region) / pending.quarantine
    if not aside.is_dir():
        return None
    found = pending.assessment
    try:
        where = aside.relative_to(config.root).as_posix()
    except ValueError:
        where = str(aside)
    return {
        "damage": found.damage or why(aside).get("damage", "?"),
        "quarantined": where,
        "audit_log": found.audit,
        "audit_entries_lost": "unknown" if found.audit_lost is None else found.audit_lost,
        "moderation": found.moderation,
        "salvaged_decisions": len(found.decisions),
    }


def restore_warnings(
    config: DeploymentConfig, region: str, taken: str | None, done: Reapplied
) -> list[str]:
    """What a restore could not put back, each said with what the operator can do."""
    found = done.assessment
    since = f"since the backup (taken {taken})" if taken else "since the backup"
    out: list[str] = []
    if found.audit_lost != 0:
        lost = "an unknown number of" if found.audit_lost is None else str(found.audit_lost)
        out.append(
            f"{lost} audit entries written {since} could not be read from the damaged "
            f"store and are lost ({done.carried or 0} could be, and were carried into the "
            "restored log; the damaged store is kept: see the note)"
        )
    if not found.confirmed:
        out.append(
            f"moderation decisions made {since} cannot be confirmed (neither the damaged "
            "store's audit log nor its verdicts could be read whole): takedowns made since "
            f"may be lost. {done.held} restored videos approved only by the automated checks "
            "went back to pending, out of For You: re-apply the takedowns made since from "
            f"your own records, then run `fyp moderate {config.root} --region {region}` to "
            "judge them again"
        )
    out.extend(_dropped(found, since, len(done.lost_arrivals)))
    for move_id, source in done.lost_arrivals:
        out.append(
            f"a user moved into {region} from {source} {since} (move {move_id}) is not in "
            "the backup, and the move removed the source's copy: their profile, events and "
            "labels are gone from every region but backups of "
            f"{source} taken before the move. Its `move_user_in` audit entry (carried into "
            "the restored log) and the move's receipt name them"
        )
    return out


def _dropped(found: Assessment, since: str, arrivals: int) -> list[str]:
    """What the replaced store held that the backup lacks, had no record outside it, and
    is not in the restored region (:mod:`fyp.sovereignty.restore_preview`)."""
    counts = found.since_backup
    if counts is None:  # a damaged store's tables: the quarantine note says where it is
        if found.damage is not None:
            return []
        return [
            f"the users, events and videos added {since} could not be counted (the replaced "
            "store could not be read) and are not in the restored store"
        ]
    where = (
        "they are only in the damaged store kept aside (see the note)"
        if found.damage is not None
        else "the replaced store was healthy and is overwritten, so they are gone: sign-ups, "
        "events, uploads and profile edits have no record outside the store to put them "
        "back from (`fyp restore --dry-run` counts them before a restore)"
    )
    out = []
    if any(counts.get(kind, 0) for kind in KINDS):
        moved = f" ({arrivals} of the users moved in: see below)" if arrivals else ""
        out.append(f"{added_text(counts)}{moved} added {since} are not in the backup: {where}")
    edited = counts.get(EDITS, 0)
    if edited:
        out.append(
            f"the profile edits of {plural(edited, 'users')} made {since} are undone (the "
            "restored store has their profiles as the backup holds them, but for consents, "
            f"which their audit entries put back): {where}"
        )
    return out


def carry_audit_history(log: AuditLog, history: list[Sequence[Any]]) -> list[Record]:
    """Append to the restored log, in order, every entry of the replaced one that the
    backup does not hold (same seq and hash): what happened after the backup was taken
    (an operator's read, a decision, an erasure) stays on record, with its original
    time, actor and subject and, in ``details.carried_from``, where it was. The chain
    goes on from the backup's head, so ``fyp audit verify`` checks the result whole."""
    restored = {int(seq): str(h) for seq, h in log.store.query("SELECT seq, hash FROM audit_log")}
    already = {  # carried by a run of this restore that stopped before its end
        (int(c["seq"]), str(c["hash"]))
        for (details,) in log.store.query(
            "SELECT details FROM audit_log WHERE instr(details, 'carried_from') > 0"
        )
        if isinstance(c := json.loads(details).get("carried_from"), dict) and "seq" in c
    }
    since = [e for e in history if restored.get(int(e[0])) != e[6]]
    records: list[Record] = [
        (
            actor,
            action,
            subject,
            {
                **(details if isinstance(details, dict) else {"details": details}),
                "carried_from": {"seq": seq, "hash": h},
            },
            ts,
        )
        for seq, ts, actor, action, subject, details, h in since
    ]
    log.append_many([r for r, e in zip(records, since, strict=True) if (e[0], e[6]) not in already])
    return records
