"""What can still be read of the store a restore is about to replace, read before the swap.

A damaged store is the usual reason to restore, and it holds what happened after the
backup: audit entries, and moderation decisions (a takedown) that must not be undone.
:func:`assess` reads it without writing a byte. A store whose ``PRAGMA quick_check``
passes and whose audit log reads whole is *healthy*: its log is carried as it is. Any
other store is *damaged* (the restore moves it aside, :mod:`fyp.sovereignty.quarantine`)
and is salvaged table by table:

- the audit log in windows of seqs, each window that fails read again one seq at a time,
  both through SQLite's normal read-only open and with ``immutable=1`` (which ignores a
  broken ``-wal``/``-shm``); then, if entries are still missing, straight from the
  file's pages (:mod:`fyp.sovereignty.page_scan`, for a damaged root or interior page);
  only rows whose hash still matches their content are kept;
- the moderation verdicts of every video the backup holds, in chunks and then one by
  one, compared with the backup's: each one that differs is a decision made since.

Each comes out ``complete``, ``partial`` or ``unreadable``. An audit entry that cannot
be read is *lost* unless the backup holds it (a damaged page from before the backup
loses nothing). The moderation decisions since the backup are *confirmed* when no entry
since the backup is lost or the verdicts read whole; when neither holds, the restore
says so and fails closed (:func:`fyp.moderation.restored.reapply_moderation`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fyp.audit.log import entry_hash
from fyp.sovereignty.page_scan import scan_audit_rows
from fyp.sovereignty.region_data import read_only

COMPLETE, PARTIAL, UNREADABLE = "complete", "partial", "unreadable"
WINDOW = 256  # audit seqs read at once while salvaging
CHUNK = 200  # video ids looked up at once while salvaging

HistoryRow = Sequence[Any]
"""An audit entry of the replaced store: (seq, ts_ms, actor, action, subject, details, hash)."""
Decision = list[Any]
"""A verdict of the replaced store that the backup does not hold:
[video_id, state, source, decided_by, decided_at_ms, reason]."""

HISTORY_COLS = "seq, ts_ms, actor, action, subject, details, hash"
_AUDIT_COLS = "seq, region, ts_ms, actor, action, subject, details, prev_hash, hash"
_MOD_COLS = "video_id, state, source, decided_by, decided_at_ms, reason, revision, creator_ok"


@dataclass
class Assessment:
    """What :func:`assess` found: ``damage`` is None for a healthy store."""

    damage: str | None = None
    history: list[HistoryRow] | None = field(default_factory=list)  # None: nothing read
    audit: str = COMPLETE  # how much of the audit log could be read
    audit_top: int | None = None  # its last seq, if that could be told
    # entries it held beyond the backup that could not be read (None: unknown)
    audit_lost: int | None = 0
    moderation: str = COMPLETE
    decisions: list[Decision] = field(default_factory=list)
    # users, events and videos it holds that the backup does not (None: unreadable;
    # :func:`fyp.sovereignty.restore_preview.dropped_since`)
    since_backup: dict[str, int] | None = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        """Whether every moderation decision the replaced store made since the backup is
        known: from its whole log since then, or from its whole moderation table."""
        return self.audit_lost == 0 or self.moderation == COMPLETE

    def to_dict(self) -> dict[str, Any]:
        """For the pending-restore marker (the history is kept in a field of its own)."""
        return {
            "damage": self.damage,
            "audit": self.audit,
            "audit_top": self.audit_top,
            "audit_lost": self.audit_lost,
            "moderation": self.moderation,
            "decisions": self.decisions,
            "since_backup": self.since_backup,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], history: list[HistoryRow] | None) -> Assessment:
        if not raw:  # a marker written before salvage existed: what it held was all there was
            if history is None:
                return cls(history=None, audit=UNREADABLE, audit_lost=None, moderation=UNREADABLE)
            return cls(history=history)
        return cls(
            damage=raw.get("damage"),
            history=history,
            audit=str(raw.get("audit", UNREADABLE)),
            audit_top=raw.get("audit_top"),
            audit_lost=raw.get("audit_lost"),
            moderation=str(raw.get("moderation", UNREADABLE)),
            decisions=[list(d) for d in raw.get("decisions", [])],
            since_backup=raw.get("since_backup", {}),
        )


def assess(live: Path, restored: Path) -> Assessment:
    """The replaced store (``live``) as a restore must know it before the swap;
    ``restored`` is the backup's store, unpacked (what the restore puts in its place)."""
    if not live.exists():
        return Assessment()
    damage = _quick_check(live)
    history = audit_history(live)
    if damage is None and history is not None:
        return Assessment(history=history)
    salvaged: list[HistoryRow] | None = history
    audit = COMPLETE
    top: int | None = int(history[-1][0]) if history else 0
    if history is None:
        salvaged, audit, top = _salvage_history(live)
    found = Assessment(
        damage=damage or "its audit log cannot be read",
        history=salvaged,
        audit=audit,
        audit_top=top,
    )
    return reassess(found, live, restored)


def reassess(found: Assessment, damaged: Path, restored: Path) -> Assessment:
    """``found`` compared with the backup being restored (``restored``, its store
    unpacked): which audit entries since it are lost, and which verdicts of the damaged
    store (at ``damaged``) differ from it. Run again when a restore of another backup
    takes over an unfinished one."""
    lost = 0 if found.audit == COMPLETE else _lost(found.history or [], found.audit_top, restored)
    decisions, moderation = _salvage_decisions(damaged, restored)
    return replace(found, audit_lost=lost, decisions=decisions, moderation=moderation)


def _lost(history: list[HistoryRow], top: int | None, restored: Path) -> int | None:
    """How many entries of the damaged log up to ``top`` are missing from ``history``
    and not the backup's own (None: the log's end is unknown). An entry the backup holds
    counts as its own only while every salvaged entry the backup also holds matches
    it: a log that went another way since (a restore of an older backup) shares seqs,
    not entries."""
    if top is None:
        return None
    try:
        with closing(read_only(restored)) as conn:
            held = {int(q): str(h) for q, h in conn.execute("SELECT seq, hash FROM audit_log")}
    except sqlite3.Error:
        held = {}
    got = {int(row[0]): str(row[6]) for row in history}
    same = all(held.get(seq, digest) == digest for seq, digest in got.items())
    covered = set(got) | (set(held) if same else set())
    return top - sum(1 for seq in covered if 1 <= seq <= top)


def _quick_check(path: Path) -> str | None:
    """Why SQLite calls the store damaged (its first complaint), or None."""
    try:
        with closing(read_only(path)) as conn:
            rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.Error as exc:
        return str(exc)
    first = str(rows[0][0]) if rows else "no answer to quick_check"
    return None if first == "ok" else first


def audit_history(path: Path) -> list[HistoryRow] | None:
    """Every entry of the audit log in the store file about to be replaced, parsed, or
    None if it cannot be read whole. Read and parsed before the swap, so nothing after
    it can fail on a damaged entry."""
    if not path.exists():
        return []
    try:
        with closing(read_only(path)) as conn:
            rows = conn.execute(f"SELECT {HISTORY_COLS} FROM audit_log ORDER BY seq").fetchall()
        return parse_history(rows)
    except (sqlite3.DatabaseError, ValueError, TypeError):
        return None


def parse_history(rows: Sequence[Sequence[Any]]) -> list[HistoryRow]:
    """Audit rows read as ``HISTORY_COLS``, parsed (ValueError or TypeError if one is not)."""
    return [
        # (an empty actor or action, which the log refuses, cannot stop a restore)
        (int(seq), int(ts), str(a) or "?", str(act) or "?", str(sub), json.loads(det), str(h))
        for seq, ts, a, act, sub, det, h in rows
    ]


def _connections(path: Path) -> Iterator[sqlite3.Connection]:
    """Read-only connections to a damaged store, one after the other: as SQLite opens it
    (WAL included), then ``immutable`` (no locks, no WAL: what the main file alone holds)."""
    uri = path.resolve().as_uri()
    for query in ("mode=ro", "mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(f"{uri}?{query}", uri=True)
        except sqlite3.Error:
            continue
        with closing(conn):
            yield conn


# -- the audit log ---------------------------------------------------------------------
def _salvage_history(path: Path) -> tuple[list[HistoryRow] | None, str, int | None]:
    """The audit entries that can be read and whose hash holds, in seq order; how
    much that is; and the log's last seq, if it can be told."""
    found: dict[int, HistoryRow] = {}
    top: int | None = None
    complete = False
    for conn in _connections(path):
        rows, clean, end = _read_audit(conn)
        for row in rows:
            found.setdefault(int(row[0]), row)
        if end is not None:
            top = max(top or 0, end, max(found, default=0))
        if clean and top == len(found) and sorted(found) == list(range(1, len(found) + 1)):
            complete = True
            break
    if not complete:  # what the b-trees cannot reach may still be on intact pages
        for row in scan_audit_rows(path):
            verified = _verified(row)
            if verified is not None:
                found.setdefault(int(verified[0]), verified)
        complete = top is not None and sorted(found) == list(range(1, top + 1))
    history = [found[s] for s in sorted(found)]
    if complete:
        return history, COMPLETE, top
    return (history, PARTIAL, top) if history else (None, UNREADABLE, top)


def _read_audit(conn: sqlite3.Connection) -> tuple[list[HistoryRow], bool, int | None]:
    """(verified rows, whether everything read cleanly, the last seq if it is known)."""
    top = _highest_seq(conn)
    out: list[HistoryRow] = []
    clean = top is not None
    start, end = 1, 0
    while top is None or end < top:
        end = start + WINDOW - 1
        try:
            rows = conn.execute(
                f"SELECT {_AUDIT_COLS} FROM audit_log WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (start, end),
            ).fetchall()
            failed = False
        except sqlite3.DatabaseError:
            rows, clean, failed = _one_by_one(conn, start, end), False, True
        for row in rows:
            verified = _verified(row)
            if verified is None:
                clean = False
            else:
                out.append(verified)
        if top is None and not rows:
            break  # (an unknown end: the first window with nothing in it)
        start = end + 1
        if not rows and not failed:  # a gap, or past the end: on to the next entry
            try:
                nxt = conn.execute(
                    "SELECT MIN(seq) FROM audit_log WHERE seq > ?", (end,)
                ).fetchone()
            except sqlite3.DatabaseError:
                continue
            if nxt is None or nxt[0] is None:
                break
            start = int(nxt[0])
    if top is not None:  # anything past what the table's end said
        try:
            rest = conn.execute(
                f"SELECT {_AUDIT_COLS} FROM audit_log WHERE seq > ? ORDER BY seq", (end,)
            ).fetchall()
        except sqlite3.DatabaseError:  # (the head is written with every append: trusted)
            rest, clean = [], False
        for row in rest:
            verified = _verified(row)
            clean = clean and verified is not None
            if verified is not None:
                out.append(verified)
    return out, clean, top


def _highest_seq(conn: sqlite3.Connection) -> int | None:
    """The last seq, from the table's last row or the head row (0: an empty log; None:
    neither reads)."""
    found: list[int] = []
    for sql in ("SELECT MAX(seq) FROM audit_log", "SELECT MAX(seq) FROM audit_head"):
        try:
            row = conn.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            continue
        found.append(int(row[0]) if row and row[0] is not None else 0)
    return max(found) if found else None


def _one_by_one(conn: sqlite3.Connection, start: int, end: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for seq in range(start, end + 1):
        try:
            row = conn.execute(
                f"SELECT {_AUDIT_COLS} FROM audit_log WHERE seq = ?", (seq,)
            ).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            rows.append(row)
    return rows


def _verified(row: tuple[Any, ...]) -> HistoryRow | None:
    """A row as :func:`audit_history` gives it, if its hash matches its content."""
    try:
        seq, region, ts, actor, action, subject, details, prev, digest = row
        body = {
            "seq": int(seq),
            "region": str(region),
            "ts_ms": int(ts),
            "actor": str(actor),
            "action": str(action),
            "subject": str(subject),
            "details": json.loads(details),
            "prev_hash": str(prev),
        }
        if entry_hash(body) != str(digest):
            return None
    except (ValueError, TypeError):
        return None
    return (
        body["seq"],
        body["ts_ms"],
        body["actor"] or "?",
        body["action"] or "?",
        body["subject"],
        body["details"],
        str(digest),
    )


# -- moderation verdicts -----------------------------------------------------------------
def _salvage_decisions(live: Path, restored: Path) -> tuple[list[Decision], str]:
    """The verdicts of the replaced store that differ from the backup's, for the videos
    the backup holds (the others are not in the restored catalogue)."""
    try:
        with closing(read_only(restored)) as conn:
            videos = [str(v) for (v,) in conn.execute("SELECT video_id FROM videos")]
            before = {str(r[0]): r for r in conn.execute(f"SELECT {_MOD_COLS} FROM moderation")}
    except sqlite3.Error:
        return [], UNREADABLE  # (the backup's store was verified: this is not expected)
    found: dict[str, tuple[Any, ...] | None] = {}
    for conn in _connections(live):
        missing = [v for v in videos if v not in found]
        if not missing:
            break
        found.update(_read_verdicts(conn, missing))
    decisions: list[Decision] = []
    for video_id in videos:
        if video_id not in found:
            continue  # unreadable
        row, old = found[video_id], before.get(video_id)
        if row is None:
            if old is not None:  # its verdict went (it left the catalogue): judged again
                decisions.append([video_id, "pending", "", "", 0, "no verdict since the backup"])
        elif old is None or tuple(row[1:]) != tuple(old[1:]):
            decisions.append(
                [str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), str(row[5])]
            )
    if len(found) == len(videos):
        return decisions, COMPLETE
    return decisions, PARTIAL if found else UNREADABLE


def _read_verdicts(
    conn: sqlite3.Connection, video_ids: list[str]
) -> dict[str, tuple[Any, ...] | None]:
    """Video id -> its moderation row (None: no row) for each id that can be read."""
    out: dict[str, tuple[Any, ...] | None] = {}
    for at in range(0, len(video_ids), CHUNK):
        chunk = video_ids[at : at + CHUNK]
        marks = ",".join("?" * len(chunk))
        try:
            rows = conn.execute(
                f"SELECT {_MOD_COLS} FROM moderation WHERE video_id IN ({marks})", chunk
            ).fetchall()
        except sqlite3.DatabaseError:
            for video_id in chunk:
                try:
                    row = conn.execute(
                        f"SELECT {_MOD_COLS} FROM moderation WHERE video_id = ?", (video_id,)
                    ).fetchone()
                except sqlite3.DatabaseError:
                    continue
                out[video_id] = row
            continue
        got = {str(r[0]): r for r in rows}
        out.update({v: got.get(v) for v in chunk})
    return out
