"""The evaluation copy's follows, blocks and moderation as they stood at the cut.

Cutting the events is not enough: ``follows``, ``follow_actions``, ``blocks`` and
``blocked_by`` hold *state*, what is true now. A follow the user had at the cut and
ended after it (an unfollow event, an API unfollow, a block) is no longer in
``follows``; a block made after the cut is in ``blocks``. Evaluated on that state, the
engine would miss a followed creator's videos the user was being served at the time,
or leave out a creator the user still watched.

So the copy's tables are rebuilt from every trace of an action before the cut, with
the rule the store itself follows (:mod:`fyp.catalog.follow_order`): of a pair's
actions, the one with the latest time wins, and of two in the same millisecond the one
that arrived later. The traces:

- ``follow``/``unfollow`` events before the cut (by ``ts_ms``, then ``seq``); a follow
  event while a block stood adds nothing, as the store's trigger decided;
- a follow in ``follows`` that began before the cut (``since_ms``): it lasted through
  the cut (an unfollow between would have ended the row, a later follow restarted it),
  unless it is the trace of a follow event of that millisecond, which then stands in
  its place (an unfollow of the same millisecond that arrived after a follow past the
  cut was ignored by the store, yet ends the follow at the cut);
- the pair's ``follow_actions`` row if its action was before the cut: it is the latest
  of all, so the state at the cut is today's;
- a block either way that began before the cut and still stands: it ended any follow
  then and barred one since. Blocks made after the cut are taken out of the copy.

What no table keeps cannot be rebuilt: an action through the API that a later one
replaced leaves no trace (``follow_actions`` holds a pair's latest action only), nor
does a block lifted since. A follow made through the API before the cut and ended
after it is therefore missing from the copy, and a block lifted after the cut is not
in force in it (docs/architecture.md, "Evaluating on a deployment's own data").
Events are the app's usual way to follow, and those are all kept.

**Moderation** (:func:`moderation_at`). The ``moderation`` table holds each video's
state now: a video approved after the cut would be served at it, one taken down after
it would not. Every write of a video's state or creator eligibility is one audit entry
of the region, with the write's own time, in the same transaction (``verdict``:
automated checks, reviews, appeals, takedowns, report holds, a restore's re-applied
removals; ``pending``: an edit, a new region, a deletion; ``creator_recheck``), and the
row names its latest (``audit_seq``). So each video's state at the cut is that of its
entries before the cut, in log order. It fails closed: a video with no entry before
the cut had no verdict then (pending), and one whose row is not the work of its
entries (no ``audit_seq``, another entry since, or a state they do not lead to: the
row was written behind the log's back) has no known state at the cut; both are
pending in the copy. Not rebuilt, because no table keeps it: the catalogue as it
was (a video deleted since the cut is not in the copy; one edited since keeps today's
caption, though its verdict is the cut's). And a history imported from before the
region moderated had no verdict at such a cut: nothing in it is servable.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from fyp.moderation.models import State

Pair = tuple[str, str]  # (user, creator)

# a pair's action: its time, then which trace wins a tie at that millisecond (an event
# by its arrival, a standing follow's start, the pair's latest action, a block), then
# the arrival order among events; and whether the user then followed
_EVENT, _FOLLOW, _LATEST, _BLOCK = 0, 1, 2, 3
Action = tuple[int, int, int, bool]

_FOLLOW_EVENTS = """
    SELECT e.user_id, v.creator_id, e.ts_ms, e.seq, e.type = 'follow'
    FROM events AS e JOIN videos AS v ON v.video_id = e.video_id
    WHERE e.type IN ('follow', 'unfollow') AND e.ts_ms < ?
    AND v.creator_id <> e.user_id AND substr(v.creator_id, 1, 1) <> '['
    """


@dataclass(frozen=True)
class FollowState:
    """A pair's state at the cut: its latest action's time, whether it was a follow,
    and the start of the follow it left standing (None if it left none)."""

    acted_ms: int
    following: bool
    since_ms: int | None


def relationships_at(db: sqlite3.Connection, cut_ms: int) -> dict[Pair, FollowState]:
    """Rebuild the copy's blocks and follows as of ``cut_ms`` (module docstring), in
    one transaction; returns each pair's state."""
    with db:
        for table in ("blocks", "blocked_by"):
            db.execute(f"DELETE FROM {table} WHERE since_ms >= ?", (cut_ms,))
        states = follows_at(db, cut_ms)
        db.execute("DELETE FROM follows")
        db.execute("DELETE FROM follow_actions")
        db.executemany(
            "INSERT INTO follow_actions (user_id, creator_id, acted_ms, following) "
            "VALUES (?, ?, ?, ?)",
            [(u, c, s.acted_ms, int(s.following)) for (u, c), s in states.items()],
        )
        db.executemany(
            "INSERT INTO follows (user_id, creator_id, since_ms) VALUES (?, ?, ?)",
            [(u, c, s.since_ms) for (u, c), s in states.items() if s.since_ms is not None],
        )
    return states


def follows_at(db: sqlite3.Connection, cut_ms: int) -> dict[Pair, FollowState]:
    """Each pair's state at ``cut_ms`` from the traces left before it (blocks made
    after it already taken out)."""
    actions: dict[Pair, list[Action]] = {}

    def add(pair: Pair, action: Action) -> None:
        actions.setdefault(pair, []).append(action)

    blocked: dict[Pair, int] = {}  # the pair's standing block's start, either way
    for u, c, t in db.execute(
        "SELECT user_id, creator_id, since_ms FROM blocks WHERE since_ms < ?1 "
        "UNION ALL SELECT user_id, creator_id, since_ms FROM blocked_by WHERE since_ms < ?1",
        (cut_ms,),
    ):
        pair = (str(u), str(c))
        blocked[pair] = min(int(t), blocked.get(pair, int(t)))
        add(pair, (int(t), _BLOCK, 0, False))
    followed_at: dict[tuple[Pair, int], int] = {}  # a follow event's first arrival at a time
    for u, c, t, seq, on in db.execute(_FOLLOW_EVENTS, (cut_ms,)):
        pair, t = (str(u), str(c)), int(t)
        if on and pair in blocked and t >= blocked[pair]:
            continue  # the trigger added nothing: the block stood
        add(pair, (t, _EVENT, int(seq), bool(on)))
        if on:
            followed_at[(pair, t)] = min(int(seq), followed_at.get((pair, t), int(seq)))
    standing: dict[Pair, int] = {}
    for u, c, t in db.execute(
        "SELECT user_id, creator_id, since_ms FROM follows WHERE since_ms < ?", (cut_ms,)
    ):
        pair, t = (str(u), str(c)), int(t)
        standing[pair] = t
        # started by a follow event: that event is the trace, in its own arrival order.
        # An unfollow of the same millisecond that arrived after a later follow (so the
        # store ignored it) still ends it at the cut, where that later follow is not.
        seq = followed_at.get((pair, t))
        add(pair, (t, _FOLLOW, 0, True) if seq is None else (t, _EVENT, seq, True))
    for u, c, t, on in db.execute(
        "SELECT user_id, creator_id, acted_ms, following FROM follow_actions WHERE acted_ms < ?",
        (cut_ms,),
    ):
        add((str(u), str(c)), (int(t), _LATEST, 0, bool(on)))
    return {pair: _fold(sorted(found), standing.get(pair)) for pair, found in actions.items()}


def _fold(actions: list[Action], standing: int | None) -> FollowState:
    """The state the actions (in order) leave; a follow standing since before the cut
    keeps its own start (a repeated follow does not restart one) if it lasted through
    the cut: the pair's latest action came before the cut (today's row is the state
    then), or no unfollow among the traces ended it before a later follow began the
    one standing at the cut."""
    since: int | None = None
    for t, _, _, on in actions:
        if not on:
            since = None
        elif since is None:
            since = t
    last_ms, _, _, following = actions[-1]
    today = any(kind == _LATEST for _, kind, _, _ in actions)
    if following and standing is not None and (today or (since is not None and since <= standing)):
        since = standing
    return FollowState(last_ms, following, since if following else None)


MODERATION_ACTIONS = ("verdict", "pending", "creator_recheck")
"""The audit actions that write a video's moderation row (:mod:`fyp.moderation`)."""
_STATES = frozenset(s.value for s in State)
Moderation = tuple[str | None, bool]  # state (None: unknown), creator eligible


@dataclass(frozen=True)
class ModerationAt:
    """What :func:`moderation_at` did: the videos whose state at the cut differs from
    today's, and those whose history the log does not hold (pending in the copy)."""

    changed: int
    unknown: int


def moderation_at(db: sqlite3.Connection, cut_ms: int) -> ModerationAt:
    """Set the copy's moderation rows to their state at ``cut_ms`` (module docstring),
    in one transaction."""
    latest: dict[str, int] = {}  # video -> seq of its latest entry, whenever it was
    final: dict[str, Moderation] = {}  # video -> the state its entries lead to
    at_cut: dict[str, Moderation] = {}
    rows = db.execute(
        "SELECT seq, subject, ts_ms, action, details FROM audit_log "
        f"WHERE action IN ({', '.join('?' * len(MODERATION_ACTIONS))}) ORDER BY seq",
        MODERATION_ACTIONS,
    )
    for seq, subject, ts, action, details in rows:
        video = str(subject)
        latest[video] = int(seq)
        written = json.loads(details)
        final[video] = _moderation_after(final.get(video, (None, False)), str(action), written)
        if int(ts) < cut_ms:
            before = at_cut.get(video, (None, False))
            at_cut[video] = _moderation_after(before, str(action), written)
    updates: list[tuple[str, int, str]] = []
    unknown = 0
    for video, state, ok, seq in db.execute(
        "SELECT video_id, state, creator_ok, audit_seq FROM moderation"
    ).fetchall():
        known = (
            seq is not None
            and latest.get(str(video)) == int(seq)
            and final.get(str(video)) == (str(state), bool(ok))
        )
        unknown += not known
        then, then_ok = at_cut.get(str(video), (None, False)) if known else (None, False)
        if then is None:
            then, then_ok = State.pending.value, False
        if (then, then_ok) != (str(state), bool(ok)):
            updates.append((then, int(then_ok), str(video)))
    with db:
        db.executemany(
            "UPDATE moderation SET state = ?, creator_ok = ? WHERE video_id = ?", updates
        )
    return ModerationAt(len(updates), unknown)


def _moderation_after(before: Moderation, action: str, details: dict[str, Any]) -> Moderation:
    """A video's state after one of its entries: as the write it records left the row
    (a report hold's verdict leaves creator eligibility as it was)."""
    state, ok = before
    if action == "pending":
        return State.pending.value, False
    if action == "creator_recheck":
        return state, bool(details.get("creator_ok"))
    given = details.get("state")
    then = given if isinstance(given, str) and given in _STATES else None
    return then, bool(details["creator_ok"]) if "creator_ok" in details else ok
