"""A serving-time copy of what a region may show: live videos and their moderation state.

Every feed checks eligibility twice (on the shortlist, and on the final page); asking
the store each time cost two queries per feed. The snapshot answers from memory and
stays exact: triggers in the store append the id of every video whose catalogue row
or moderation row changes to ``catalog_changes``, whichever process wrote it, and
each check first reads the head of that change feed (one indexed lookup) and re-reads
just the changed videos. A takedown is therefore visible in the very next feed, as it
was with direct queries. A reader too far behind (changes pruned) reloads in full.
Within ``held()`` the checks of one feed page share one refresh, so they see one
version of the catalogue (and pay one query, not one per check). For a model's
catalogue the answer is also kept as one bool per item (``blocked_items``), so the feed
checks hundreds of candidates with one array lookup instead of a set lookup per id.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from fyp.audit.log import SQLStore, sql_store
from fyp.storage.migrations import Migration

CATALOG_CHANGES_MIGRATION = Migration(
    20,
    "catalogue change feed: ids of videos whose catalogue or moderation row changed",
    """
    CREATE TABLE catalog_changes (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        video_id       TEXT NOT NULL
    );
    CREATE TRIGGER catalog_changes_video_insert AFTER INSERT ON videos
    BEGIN INSERT INTO catalog_changes (video_id) VALUES (NEW.video_id); END;
    CREATE TRIGGER catalog_changes_video_update AFTER UPDATE ON videos
    BEGIN INSERT INTO catalog_changes (video_id) VALUES (NEW.video_id); END;
    CREATE TRIGGER catalog_changes_video_delete AFTER DELETE ON videos
    BEGIN INSERT INTO catalog_changes (video_id) VALUES (OLD.video_id); END;
    CREATE TRIGGER catalog_changes_moderation_insert AFTER INSERT ON moderation
    BEGIN INSERT INTO catalog_changes (video_id) VALUES (NEW.video_id); END;
    CREATE TRIGGER catalog_changes_moderation_update AFTER UPDATE ON moderation
    BEGIN INSERT INTO catalog_changes (video_id) VALUES (NEW.video_id); END;
    CREATE TRIGGER catalog_changes_moderation_delete AFTER DELETE ON moderation
    BEGIN INSERT INTO catalog_changes (video_id) VALUES (OLD.video_id); END;
    """,
)

KEEP_CHANGES = 100_000
"""Changes kept for readers that are behind; older ones are pruned now and then."""

State = tuple[str, bool]  # moderation state, creator eligible
PENDING: State = ("pending", False)
NOT_LIVE = "not available in your region"
REASONS = {
    "pending": "pending moderation",
    "rejected": "rejected by moderation",
    "restricted": "restricted: not eligible for For You",
    "blocked": "blocked in your region",
}


def barred_reason(state: State, adult: bool) -> str | None:
    """Why a live video in ``state`` may not reach the feed of a viewer who is (or is not
    known to be) an adult; None when it may."""
    name, creator_ok = state
    if name == "approved" or (name == "age_restricted" and adult):
        return None if creator_ok else "creator not eligible for For You (age under 16 or unknown)"
    if name == "age_restricted":
        return "age-restricted (18+) and you are not known to be 18"
    return REASONS.get(name, f"moderation state {name}")


class ItemCatalogue(Protocol):
    """What ``blocked_items`` needs of a model (``fyp.models.region_model.RegionModel``):
    its videos, by item number."""

    @property
    def video_ids(self) -> np.ndarray: ...

    @property
    def video_index(self) -> dict[str, int]: ...


def change_head(store: SQLStore) -> int:
    """The newest entry of the region's catalogue change feed (0 before any change): it
    moves whenever a video or its moderation changes, so training records it and a
    retrain is due once it has moved (``fyp.models.schedule``)."""
    rows = store.query("SELECT seq FROM catalog_changes ORDER BY seq DESC LIMIT 1")
    return int(rows[0][0]) if rows else 0


class CatalogSnapshot:
    """Live video ids and moderation states of one region store, kept current."""

    def __init__(self, store: object, keep_changes: int = KEEP_CHANGES) -> None:
        self.store: SQLStore = sql_store(store)
        self.keep_changes = keep_changes
        self.seq: int | None = None
        self.live: set[str] = set()
        self.states: dict[str, State] = {}
        self.reloads = 0
        self._lock = threading.Lock()
        self._held = threading.local()  # this thread's held() depth
        # per viewer kind (adult or not): each barred live video and why, worked out
        # once and kept in step with the changes (the feed checks hundreds per request)
        self._barred: dict[bool, dict[str, str]] = {}
        # the same per item of a model's catalogue (``blocked_items``), also kept in step
        self._blocked: weakref.WeakKeyDictionary[ItemCatalogue, dict[bool, np.ndarray]] = (
            weakref.WeakKeyDictionary()
        )

    @contextmanager
    def held(self) -> Iterator[None]:
        """Refresh now, and make the refreshes this thread asks for inside a no-op: what
        one feed page checks comes from one version of the catalogue."""
        depth = getattr(self._held, "depth", 0)
        if not depth:
            try:
                self.refresh()
            except Exception:  # not held: each check refreshes, and fails closed, itself
                yield
                return
        self._held.depth = depth + 1
        try:
            yield
        finally:
            self._held.depth = depth

    def refresh(self) -> None:
        """Catch up with the change feed (one small query when nothing changed)."""
        if getattr(self._held, "depth", 0):
            return
        with self._lock:
            head = self._head()
            if head == self.seq:
                return
            if self.seq is None or self._pruned_past(self.seq):
                self._reload()
                return
            rows = self.store.query(
                "SELECT seq, video_id FROM catalog_changes WHERE seq > ? ORDER BY seq",
                (self.seq,),
            )
            if not rows:
                return
            self._apply(sorted({str(r[1]) for r in rows}))
            self.seq = int(rows[-1][0])
            if self.seq - self._oldest() > 2 * self.keep_changes:
                self.store.execute(
                    "DELETE FROM catalog_changes WHERE seq <= ?", (self.seq - self.keep_changes,)
                )

    def lookup(self, video_ids: Sequence[str]) -> dict[str, State | None]:
        """Each id's moderation state, or None when it is not in the live catalogue."""
        self.refresh()
        live, states = self.live, self.states
        return {v: (states.get(v, PENDING) if v in live else None) for v in video_ids}

    def barred(self, adult: bool) -> dict[str, str]:
        """Every live video an adult (or a viewer not known to be one) may not be
        shown, with the reason (``barred_reason``); what is not live is not in it."""
        self.refresh()
        found = self._barred.get(adult)
        if found is None:
            with self._lock:
                states = self.states
                found = {}
                for v in self.live:
                    reason = barred_reason(states.get(v, PENDING), adult)
                    if reason is not None:
                        found[v] = reason
                self._barred[adult] = found
        return found

    def blocked_items(self, model: ItemCatalogue, adult: bool) -> np.ndarray:
        """Per item of ``model``: True when it may not reach the feed of such a viewer
        (not live, or in ``barred(adult)``). Shared and kept in step with the changes:
        read it, never write to it."""
        barred = self.barred(adult)  # refreshes first
        with self._lock:
            per_kind = self._blocked.get(model)
            if per_kind is None:
                per_kind = self._blocked[model] = {}
            mask = per_kind.get(adult)
            if mask is None:
                live, ids = self.live, model.video_ids.tolist()
                mask = per_kind[adult] = np.fromiter(
                    (v in barred or v not in live for v in ids), bool, len(ids)
                )
            return mask

    def live_ids(self, video_ids: Sequence[str]) -> set[str]:
        self.refresh()
        return {v for v in video_ids if v in self.live}

    # -- internals ----------------------------------------------------------------
    def _head(self) -> int:
        return change_head(self.store)

    def _oldest(self) -> int:
        rows = self.store.query("SELECT seq FROM catalog_changes ORDER BY seq LIMIT 1")
        return int(rows[0][0]) if rows else 0

    def _pruned_past(self, seq: int) -> bool:
        oldest = self._oldest()
        return oldest > seq + 1

    def _reload(self) -> None:
        # the head is read first: anything written after it is replayed next refresh
        head = self._head()
        self.live = {str(r[0]) for r in self.store.query("SELECT video_id FROM videos")}
        self.states = {
            str(r[0]): (str(r[1]), bool(r[2]))
            for r in self.store.query("SELECT video_id, state, creator_ok FROM moderation")
        }
        self._barred = {}  # worked out again when next asked for
        self._blocked = weakref.WeakKeyDictionary()
        self.seq = head
        self.reloads += 1

    def _apply(self, video_ids: list[str]) -> None:
        ids = json.dumps(video_ids, ensure_ascii=False)
        present = {
            str(r[0])
            for r in self.store.query(
                "SELECT video_id FROM videos WHERE video_id IN (SELECT value FROM json_each(?))",
                (ids,),
            )
        }
        rows: list[tuple[Any, ...]] = self.store.query(
            "SELECT video_id, state, creator_ok FROM moderation "
            "WHERE video_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        found = {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}
        for v in video_ids:
            if v in present:
                self.live.add(v)
            else:
                self.live.discard(v)
            if v in found:
                self.states[v] = found[v]
            else:
                self.states.pop(v, None)
            # why it is barred, per viewer kind (adult or not); None: not live at all
            state = self.states.get(v, PENDING)
            why = {a: barred_reason(state, a) for a in (False, True)} if v in present else None
            for adult, barred in self._barred.items():
                reason = None if why is None else why[adult]
                if reason is None:
                    barred.pop(v, None)
                else:
                    barred[v] = reason
            for model, per_kind in self._blocked.items():
                item = model.video_index.get(v)
                if item is None:
                    continue  # not in that model's catalogue: never one of its candidates
                for adult, mask in per_kind.items():
                    mask[item] = why is None or why[adult] is not None


_snapshots: weakref.WeakKeyDictionary[object, CatalogSnapshot] = weakref.WeakKeyDictionary()
_snapshots_lock = threading.Lock()


def snapshot_for(store: object) -> CatalogSnapshot:
    """The one snapshot of a store object in this process (shared by every reader)."""
    with _snapshots_lock:
        found = _snapshots.get(store)
        if found is None:
            found = _snapshots[store] = CatalogSnapshot(store)
        return found
