"""``fyp eval deployment``'s cut: what the copy keeps, and what it holds out.

Steps 2-4 and 6 of :mod:`fyp.evaluation.temporal`, on the SQLite copy of one region's
store: the cut's time (:func:`choose_cut`), then :func:`split_copy`, which deletes the
events from the cut on (and every served page and exposure), the users who withheld
``model_training``, rebuilds follows, blocks and moderation as they stood at the cut
(:mod:`fyp.evaluation.as_of`), and returns each test user's held-out positives and each
newcomer's first events.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fyp.config import DeploymentConfig
from fyp.errors import ValidationFailed
from fyp.evaluation.as_of import moderation_at, relationships_at
from fyp.events.schema import EventType, StoredEvent
from fyp.models.training import LikeLedger, event_weight
from fyp.regions.consent import MODEL_TRAINING, PERSONALISED_FEED, consent_policy, effective
from fyp.storage.base import EventRow

EVENT_COLUMNS = (
    "seq, event_id, user_id, video_id, type, ts_ms, watch_ms, watch_ratio, "
    "valid_play, long_play, short_play"
)


@dataclass
class Split:
    """What the cut left in the copy and what it held out."""

    cut_ms: int
    events_before: int = 0
    events_after: int = 0
    excluded_users: int = 0  # withheld model_training: not in the copy
    not_personalised: int = 0  # personalised_feed off: no test users
    held_out: dict[str, set[str]] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=dict)  # test users' pre-cut videos
    universe: set[str] = field(default_factory=set)
    # newcomers (no event before the cut): their first events after it, put back in the
    # copy once the engine has trained (the state reads them, no model learned them),
    # and their positives after those
    newcomer_events: list[EventRow] = field(default_factory=list)
    newcomers: dict[str, set[str]] = field(default_factory=dict)
    # moderation: "at_cut" (the copy's rebuilt from the audit log) or "now"; the videos
    # whose state at the cut is not today's, those whose state then is unknown (pending
    # in the copy), and the time of the region's first verdict (None: none)
    moderation: str = "at_cut"
    moderation_changed: int = 0
    moderation_unknown: int = 0
    first_verdict_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cut_ms": self.cut_ms,
            "events_before_cut": self.events_before,
            "events_after_cut": self.events_after,
            "users_without_training_consent": self.excluded_users,
            "users_not_personalised": self.not_personalised,
            "held_out_positives": sum(len(v) for v in self.held_out.values()),
            "newcomer_events_kept": len(self.newcomer_events),
            "newcomer_held_out_positives": sum(len(v) for v in self.newcomers.values()),
            "moderation": self.moderation,
            "moderation_changed_since_cut": self.moderation_changed,
            "moderation_unknown_at_cut": self.moderation_unknown,
        }


def choose_cut(db: sqlite3.Connection, holdout: float) -> int:
    """The time of the first event of the last ``holdout`` of the region's events (by
    time): events from it on are held out."""
    (n,) = db.execute("SELECT count(*) FROM events").fetchone()
    if n < 2:
        raise ValidationFailed(f"the region holds {n} events: too few to split in time")
    k = min(n - 1, max(1, math.ceil(n * (1.0 - holdout))))
    (cut,) = db.execute(
        "SELECT ts_ms FROM events ORDER BY ts_ms, seq LIMIT 1 OFFSET ?", (k,)
    ).fetchone()
    (first,) = db.execute("SELECT min(ts_ms) FROM events").fetchone()
    if int(cut) <= int(first):
        raise ValidationFailed(
            "the region's events do not spread over time enough to hold out the last "
            f"{holdout:.0%} of them: pass --cut or another --holdout"
        )
    return int(cut)


def _events(db: sqlite3.Connection, cut_ms: int) -> Iterator[StoredEvent]:
    """The copy's events at or after the cut, in ingestion order."""
    rows = db.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE ts_ms >= ? ORDER BY seq", (cut_ms,)
    )
    for seq, event_id, user, video, kind, ts, watch_ms, ratio, valid, long, short in rows:
        flags = bool(valid), bool(long), bool(short)
        yield StoredEvent(seq, event_id, user, video, kind, ts, watch_ms, ratio, *flags)


def positives(events: Iterable[StoredEvent]) -> dict[str, set[str]]:
    """Each user's videos with a positive event, likes taken back left out (as training
    folds them, :class:`fyp.models.training.LikeLedger`)."""
    ledger: LikeLedger[tuple[str, str], int] = LikeLedger()
    rows: list[tuple[str, str]] = []
    for e in events:
        if e.type == EventType.unlike:
            ledger.unlike((e.user_id, e.video_id), e)
        elif event_weight(e) > 0:
            if e.type == EventType.like:
                ledger.like((e.user_id, e.video_id), e, len(rows))
            rows.append((e.user_id, e.video_id))
    gone = {n for _, n in ledger.taken_back()}
    out: dict[str, set[str]] = {}
    for n, (user, video) in enumerate(rows):
        if n not in gone:
            out.setdefault(user, set()).add(video)
    return out


def _count(db: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> int:
    (n,) = db.execute(sql, args).fetchone()
    return int(n)


def split_copy(
    db: sqlite3.Connection,
    config: DeploymentConfig,
    region: str,
    cut_ms: int,
    newcomer_events: int = 0,
    moderation_now: bool = False,
) -> Split:
    """Cut the copy at ``cut_ms`` (module docstring, steps 2-4); with
    ``newcomer_events`` K, a newcomer's first K events after the cut are kept aside
    (step 6); with ``moderation_now``, the copy keeps today's verdicts. The held-out
    sets are not yet limited to what the feed could serve (:func:`servable`)."""
    policy = consent_policy(config, region)
    consents = {
        str(u): json.loads(c or "{}") for u, c in db.execute("SELECT user_id, consents FROM users")
    }
    withheld = [(u,) for u, c in consents.items() if not effective(c, policy, MODEL_TRAINING)]
    impersonal = {u for u, c in consents.items() if not effective(c, policy, PERSONALISED_FEED)}
    with db:  # not in the copy at all: nothing is learned or measured of them
        for table in (
            "events",
            "labels",
            "follows",
            "follow_actions",
            "served_pages",
            "experiment_exposures",
        ):
            db.executemany(f"DELETE FROM {table} WHERE user_id = ?", withheld)
    split = Split(cut_ms, excluded_users=len(withheld))
    split.events_before = _count(db, "SELECT count(*) FROM events WHERE ts_ms < ?", (cut_ms,))
    split.events_after = _count(db, "SELECT count(*) FROM events WHERE ts_ms >= ?", (cut_ms,))
    later = list(_events(db, cut_ms))
    after = positives(later)
    seen: dict[str, set[str]] = {}
    for user, video in db.execute(
        "SELECT user_id, video_id FROM events WHERE ts_ms < ?", (cut_ms,)
    ):
        seen.setdefault(str(user), set()).add(str(video))
    existed = {
        str(v)
        for (v,) in db.execute("SELECT video_id FROM videos WHERE created_at_ms < ?", (cut_ms,))
    }
    split.universe = existed | {v for videos in seen.values() for v in videos}
    if newcomer_events > 0:
        newcomers(split, later, seen, impersonal, newcomer_events)
    for user, videos in sorted(after.items()):
        if user not in seen:
            continue  # no history before the cut: a newcomer's count apart
        if user in impersonal:
            split.not_personalised += 1
            continue
        fresh = (videos & split.universe) - seen[user]
        if fresh:
            split.held_out[user] = fresh
            split.seen[user] = seen[user]
    with db:
        db.execute("DELETE FROM events WHERE ts_ms >= ?", (cut_ms,))
        for table in ("served_pages", "experiment_exposures", "labels"):
            db.execute(f"DELETE FROM {table}")
    relationships_at(db, cut_ms)  # follows and blocks as they stood at the cut
    if moderation_now:
        split.moderation = "now"
    else:  # every video's verdict as it stood at the cut
        done = moderation_at(db, cut_ms)
        split.moderation_changed, split.moderation_unknown = done.changed, done.unknown
        (first,) = db.execute(
            "SELECT min(ts_ms) FROM audit_log WHERE action = 'verdict'"
        ).fetchone()
        split.first_verdict_ms = None if first is None else int(first)
    return split


def newcomers(
    split: Split,
    later: list[StoredEvent],
    seen: dict[str, set[str]],
    impersonal: set[str],
    k: int,
) -> None:
    """Each user with no event before the cut: their first ``k`` events after it (by
    time) become the history the feed sees, their positives after those are held out."""
    by_user: dict[str, list[StoredEvent]] = {}
    for e in later:
        if e.user_id not in seen and e.user_id not in impersonal:
            by_user.setdefault(e.user_id, []).append(e)
    for user, events in sorted(by_user.items()):
        events.sort(key=lambda e: (e.ts_ms, e.seq))
        first, rest = events[:k], events[k:]
        watched = {e.video_id for e in first}
        fresh = (positives(rest).get(user, set()) & split.universe) - watched
        if len(first) == k and fresh:
            split.newcomers[user] = fresh
            split.newcomer_events += [EventRow(*e[1:]) for e in first]


def nothing_servable(split: Split) -> str:
    """Why no video could be ranked at the cut, and what to do about it."""
    cut = iso(split.cut_ms)
    if split.moderation == "now":
        return f"no video that existed at the cut {cut} may be served now"
    first = split.first_verdict_ms
    since = "" if first is None else f" (its first verdict is of {iso(first)})"
    return (
        f"no video that existed at the cut {cut} was approved for For You then: the "
        f"region's moderation history{since} holds no such verdict before the cut. For a "
        "history imported from before the region moderated, pass a later --cut, or "
        "--moderation-now to judge by today's verdicts"
    )


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
