"""Prove a move: ``fyp user verify-move DIR USER``.

A user who moved lives on in the destination, so an erasure's proof (nothing of them
anywhere) does not apply. For every region whose erasure ledger records that the user
moved away (and who has not moved back since), this checks that nothing of the user
remains *there*, with the erasure verifier's own checks
(:func:`fyp.sovereignty.erasure_verify.region_remnants`: store rows and bytes, copies,
quarantined stores, artifacts, data files, the served log on Redis), the public
catalogue's creator ids aside (uploads stay). It also checks that the user is homed in
exactly one region, that no journal says the move is unfinished, and that the retrain
removing the user's share of the source's aggregates has run (pending until then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fyp.regions.deployment import Deployment
from fyp.sovereignty import served_data
from fyp.sovereignty.erasure import iso, now_ms
from fyp.sovereignty.erasure_process import pending_retrains
from fyp.sovereignty.erasure_verify import Remnant, region_remnants
from fyp.sovereignty.ledger import MOVE, ErasureLedger, moved_into
from fyp.sovereignty.move_journal import pending_move_of


@dataclass
class MoveReport:
    user_id: str
    homes: list[str] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)  # the ledgers' records
    unfinished: dict[str, Any] | None = None
    remnants: list[Remnant] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checked_at_ms: int = field(default_factory=now_ms)

    @property
    def status(self) -> str:
        if self.unfinished is not None:
            return "unfinished"
        if not self.moves:
            return "not_moved"
        if len(self.homes) != 1:
            return "no_home" if not self.homes else "several_homes"
        if self.remnants:
            return "remnants"
        if self.pending:
            overdue = min(self.pending.values()) < self.checked_at_ms
            return "retrain_overdue" if overdue else "pending_retrain"
        return "moved"

    @property
    def ok(self) -> bool:
        return self.status == "moved"

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "status": self.status,
            "ok": self.ok,
            "homes": self.homes,
            "moves": self.moves,
            "unfinished": self.unfinished,
            "remnants": [r.to_dict() for r in self.remnants],
            "pending_retrain": {
                k: {"deadline_ms": v, "deadline": iso(v)} for k, v in self.pending.items()
            },
            "notes": self.notes,
        }


def verify_move(deployment: Deployment, user_id: str) -> MoveReport:
    config = deployment.config
    report = MoveReport(user_id)
    report.homes = [r for r in deployment.regions if deployment.store(r).existing_users([user_id])]
    journal = pending_move_of(config, user_id)
    if journal is not None:
        report.unfinished = {
            "move_id": journal.move_id,
            "from": journal.source,
            "to": journal.dest,
            "step": journal.step,
            "finish_with": journal.finish_command(config),
        }
    left: dict[str, set[str]] = {}  # region -> moves away from it that still stand
    for region in deployment.regions:
        ledger = ErasureLedger(config, region)
        subject = ledger.subject(user_id)
        for entry in ledger.entries():
            if entry.kind != MOVE or entry.subject != subject:
                continue
            back = moved_into(config, user_id, region, entry.erased_at_ms)
            report.moves.append(
                {
                    "from": region,
                    "to": entry.to,
                    "move_id": entry.receipt_id,
                    "moved_at": iso(entry.erased_at_ms),
                    "moved_back_since": back,
                }
            )
            if not back:
                left.setdefault(region, set()).add(entry.receipt_id)
    for region, moves in left.items():
        report.remnants += region_remnants(
            deployment, region, user_id, report.notes, creators=False
        )
        for rid, deadline in pending_retrains(config.region_dir(region)).items():
            if rid in moves:
                report.pending[rid] = deadline
    for region, where, keys in served_data.remnants(deployment, user_id):
        if region in left:
            report.remnants.append(Remnant(region, "served_log", where, keys))
    if (config.root / "backups").is_dir() and left:
        report.notes.append(
            "backups of the regions the user left may still hold them (encrypted); a restore "
            "removes them again (the ledger records the move)"
        )
    return report
