"""After a restore: the moderation decisions made since the backup stand again.

A restore brings back the verdicts the backup holds; decisions made since are read from
the replaced store (:mod:`fyp.sovereignty.restore`): from the audit entries carried into
the restored log and, for a damaged store, from the verdicts salvaged out of its
moderation table (:mod:`fyp.sovereignty.salvage`). A takedown is not undone by a
restore; anything else decided or changed since is judged again.

When nothing confirms what was decided since (neither the replaced store's audit log nor
its moderation table could be read whole), moderation fails closed as far as it sensibly
can: every restored video that is eligible for For You on an automated verdict goes back
to pending until the automated checks judge it again (``fyp moderate``); verdicts a
person gave (``review``, ``appeal``) stand. The restore says so and exits 1: takedowns
made since the backup may be lost and only the operator's own records can bring them
back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fyp.audit.log import now_ms
from fyp.moderation.models import HUMAN_SOURCES, State
from fyp.moderation.service import REMOVALS, Cell, _pend, cell

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

Carried = tuple[str, str, str, Mapping[str, Any] | None, int | None]
"""An audit entry carried into the restored log: actor, action, subject, details, time."""
SERVABLE = (State.approved.value, State.age_restricted.value)
PERSON_APPROVALS = ("review", "appeal")
"""Sources of a verdict a person gave that a restore leaves standing unconfirmed."""


@dataclass(frozen=True)
class Remoderated:
    changed: int  # videos a decision since the backup changed
    held: int  # videos sent back to pending because nothing confirms their verdict


def reapply_moderation(
    deployment: Deployment,
    region: str,
    carried: Sequence[Carried],
    backup_id: str,
    salvaged: Sequence[Sequence[Any]] = (),
    confirmed: bool = True,
) -> Remoderated:
    """Re-apply the decisions made since the backup: a video whose latest decision is a
    human removal gets it back at once; any other video with a decision or an edit
    since goes back to pending, to be judged again with that history in view (rule
    ``human_hold``). ``salvaged``: verdicts of a damaged replaced store that differ
    from the backup's (``[video_id, state, source, decided_by, decided_at_ms, reason]``),
    the latest word on their video. ``confirmed=False``: see the module docstring."""
    last: dict[str, Mapping[str, Any]] = {}
    for _, action, subject, details, _ in carried:
        if action in ("verdict", "pending", "creator_recheck") and details is not None:
            last[subject] = {**details, "_action": action}
    for video_id, state, source, _, _, reason in salvaged:
        action = "pending" if state == State.pending.value else "verdict"
        last[str(video_id)] = {
            "state": state,
            "source": source,
            "reason": reason,
            "_action": action,
        }
    store = deployment.store(region)
    c = cell(store)
    t = now_ms()
    changed = held = 0
    with store.transaction():
        for video_id, details in sorted(last.items()):
            if store.get_video(video_id) is None:
                continue  # not in the restored catalogue: nothing to serve
            if _human_removal(details):
                _remove(c, video_id, details, backup_id, t)
            else:
                reason = f"decided or changed after backup {backup_id}: judged again"
                _pend(c, video_id, reason, "fyp restore", t)
            changed += 1
        if not confirmed:
            rows = c.store.query(
                f"SELECT video_id FROM moderation WHERE state IN ({_marks(SERVABLE)}) "
                f"AND source NOT IN ({_marks(PERSON_APPROVALS)}) ORDER BY video_id",
                (*SERVABLE, *PERSON_APPROVALS),
            )
            reason = (
                f"restored from backup {backup_id} over a store whose decisions since "
                "cannot be read: judged again"
            )
            for (video_id,) in rows:
                if str(video_id) not in last:
                    _pend(c, str(video_id), reason, "fyp restore", t, audited="unconfirmed")
                    held += 1
    return Remoderated(changed, held)


def _human_removal(details: Mapping[str, Any]) -> bool:
    return (
        details["_action"] == "verdict"
        and details.get("source") in HUMAN_SOURCES
        and details.get("state") in {s.value for s in REMOVALS}
    )


def _remove(c: Cell, video_id: str, details: Mapping[str, Any], backup_id: str, t: int) -> None:
    state = details.get("state")
    reason = f"re-applied after restoring {backup_id}: {details.get('reason', '')}"
    verdict = {
        "state": state,
        "creator_ok": False,
        "reason": reason,
        "decided_by": "fyp restore",
        "reapplied": {"source": details.get("source"), "backup": backup_id},
    }
    c.mod.write(video_id, str(state), False, reason, "restore", "fyp restore", t, verdict)
    entry = c.audit.append("fyp restore", "verdict", video_id, {"source": "restore", **verdict}, t)
    c.mod.set_audit_seq(video_id, entry.seq)


def _marks(values: Sequence[str]) -> str:
    return ", ".join("?" * len(values))
