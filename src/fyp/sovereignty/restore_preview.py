"""What a restore would drop, said before it is run (``fyp restore --dry-run``) and by it.

A restore puts a region back as its backup was. What happened since is put back only
where a record outside the store says it happened: erasures and moves (the region's
ledger), audit entries, moderation decisions and key revocations
(:mod:`fyp.sovereignty.restore_reapply`). Sign-ups, events and uploads since the backup
have no such record: the replaced store alone holds them. A healthy replaced store is
overwritten, so they are gone; a damaged one is kept in the quarantine, so they are
there only. Profile edits since the backup are undone the same way: the backup's
version of each profile comes back. :func:`dropped_since` counts them all before the
swap (the restore warns and
its audit entry records the counts), and :func:`preview` runs everything a restore
runs before its swap (verify and unpack the backup, read the store it would replace)
and changes nothing. Counts only: no user or video id is in either.

Events since are those numbered past the backup's last (``seq``) when the two stores
share that event; a store that went another way since (an older backup was restored
over it meanwhile) is compared event by event instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fyp.config import DeploymentConfig

Query = Callable[[str, Sequence[Any]], Sequence[Sequence[Any]]]
"""Runs a statement on the replaced store (``?`` placeholders) and returns its rows."""

KINDS = ("users", "events", "videos")  # added since the backup
EDITS = "profile_edits"  # users in both whose profile changed since the backup
_CHUNK = 500  # event ids compared at once with the backup's, for a store that diverged


def dropped_since(live: Query, restored: Path) -> dict[str, int] | None:
    """How many users, events and videos the replaced store (``live``) holds that the
    backup's store (``restored``, unpacked) does not, and how many users both hold whose
    profile the replaced store has from a later edit (``profile_edits``); None when the
    replaced store cannot be read (it is damaged: what it holds is kept aside)."""
    from fyp.sovereignty.region_data import read_only

    with closing(read_only(restored)) as backup:
        users = {
            str(u): int(t) for u, t in backup.execute("SELECT user_id, updated_at_ms FROM users")
        }
        videos = {str(v) for (v,) in backup.execute("SELECT video_id FROM videos")}
        top, last = backup.execute(
            "SELECT seq, event_id FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone() or (0, None)
        try:
            profiles = live("SELECT user_id, updated_at_ms FROM users", ())
            new_users = sum(1 for u, _ in profiles if str(u) not in users)
            edited = sum(1 for u, t in profiles if int(t) > users.get(str(u), int(t)))
            new_videos = _not_in(live("SELECT video_id FROM videos", ()), videos)
            shared = live("SELECT event_id FROM events WHERE seq = ?", (int(top),))
            if last is None or [str(r[0]) for r in shared] == [str(last)]:
                events = int(live("SELECT COUNT(*) FROM events WHERE seq > ?", (int(top),))[0][0])
            else:
                events = _missing_events(live, backup)
        except Exception:  # whatever stops the read of a damaged store
            return None
    return {"users": new_users, "events": events, "videos": new_videos, EDITS: edited}


def plural(n: int, kind: str) -> str:
    """``1 user``, ``2 users`` (``kind``: one of :data:`KINDS`)."""
    return f"{n:,} {kind if n != 1 else kind[:-1]}"


def added_text(counts: dict[str, int]) -> str:
    """``2 users, 3 events, 1 video``: what was added since the backup."""
    return ", ".join(plural(counts.get(kind, 0), kind) for kind in KINDS)


def _not_in(rows: Sequence[Sequence[Any]], held: set[str]) -> int:
    return sum(1 for (value,) in rows if str(value) not in held)


def _missing_events(live: Query, backup: sqlite3.Connection) -> int:
    """Events of the replaced store the backup lacks, compared by id (stores whose
    numbering went apart)."""
    missing, after = 0, -1
    while True:
        rows = live(
            "SELECT seq, event_id FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, _CHUNK)
        )
        if not rows:
            return missing
        ids = [str(r[1]) for r in rows]
        marks = ",".join("?" * len(ids))
        held = backup.execute(f"SELECT COUNT(*) FROM events WHERE event_id IN ({marks})", ids)
        missing += len(ids) - int(held.fetchone()[0])
        after = int(rows[-1][0])


def count_dropped(
    config: DeploymentConfig, region: str, restored: Path, server: Any = None
) -> dict[str, int] | None:
    """:func:`dropped_since` for the store a restore of ``region`` replaces."""
    try:
        with replaced_store(config, region, server) as live:
            return dropped_since(live, restored)
    except Exception:  # whatever stops the read of a damaged store
        return None


def to_carry_count(history: Sequence[Sequence[Any]] | None, restored: Path) -> int | None:
    """How many audit entries of the replaced store (``history``, as read before a swap)
    the backup does not hold, same seq and hash: what a restore carries over."""
    from fyp.sovereignty.region_data import read_only

    if history is None:
        return None
    with closing(read_only(restored)) as backup:
        held = {(int(q), str(h)) for q, h in backup.execute("SELECT seq, hash FROM audit_log")}
    return sum(1 for row in history if (int(row[0]), str(row[6])) not in held)


def removed_again(config: DeploymentConfig, restored: Path) -> int:
    """The backup's users whom some region's ledger records as erased or moved away: at
    most this many are removed again after a restore (a new account under an erased id,
    or a user who moved back since, stays)."""
    from fyp.sovereignty.ledger import ErasureLedger
    from fyp.sovereignty.region_data import read_only

    with closing(read_only(restored)) as backup:
        users = [str(u) for (u,) in backup.execute("SELECT user_id FROM users")]
    gone: set[str] = set()
    for name in config.region_names:
        gone |= ErasureLedger(config, name).matching(users)
    return len(gone)


@contextmanager
def replaced_store(config: DeploymentConfig, region: str, server: Any = None) -> Iterator[Query]:
    """Queries on the store a restore of ``region`` replaces: its SQLite file read-only,
    or its database server (``server``: a restore's claimed store, else opened here)."""
    from fyp.audit.log import sql_store
    from fyp.sovereignty.region_data import (
        open_server_store,
        read_only,
        server_url,
        store_file,
    )

    if server_url(config, region) is None:
        live = store_file(config, region)
        if not live.exists():
            yield lambda _sql, _params: []
            return
        with closing(read_only(live)) as conn:
            yield lambda sql, params: conn.execute(sql, params).fetchall()
        return
    own = server is None
    store = open_server_store(config, region) if own else server
    try:
        yield sql_store(store).query  # (it reads SQLite's spelling)
    finally:
        if own:
            store.close()


@dataclass
class RestorePreview:
    """What ``fyp restore`` would do with a backup, found without doing it."""

    region: str
    backup_id: str
    backup_created_at: str
    verified_parts: int
    store: dict[str, Any]  # the backup's store: users, events
    replaced_store_damage: str | None  # None: healthy (it would be overwritten)
    dropped_since_backup: dict[str, int] | None  # None: the replaced store cannot be read
    audit_entries_to_carry: int | None  # None: its audit log cannot be read
    # the backup's users whom a region's ledger records as erased or moved away since
    users_to_remove_again: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
