"""A user's state at feed time, read from their home region's store.

Short-term state is the user's latest events, read on every feed request: an event
acknowledged before the request always influences it (read-your-writes), whichever
process ingested it. Long-term state is the user's learned vector in the region model.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fyp.events.schema import EventType, StoredEvent
from fyp.models.region_model import RegionModel
from fyp.models.training import event_weight

RECENT_POSITIVES = 30
RECENT_WINDOW = 8  # latest distinct videos, for look-alike avoidance
NEGATIVE_TYPES = frozenset({EventType.skip, EventType.not_interested, EventType.report})


def _mark(mask: np.ndarray, model: RegionModel, video_ids: Iterable[str]) -> None:
    """Set ``mask[item]`` for the videos of ``video_ids`` in the model's catalogue."""
    index = model.video_index
    mask[[index[v] for v in video_ids if v in index]] = True


class ServedMask:
    """``mask[item]`` for the items of a served set, shared by the states built on the
    same served part: an event builds a new state but keeps that part (StateCache), so a
    heavy user's thousands of served ids are not turned into items again per event.
    Valid while its size matches: the sets that share one only grow, from one another."""

    def __init__(self) -> None:
        self._memo: tuple[RegionModel, int, np.ndarray] | None = None

    def get(self, model: RegionModel, served: set[str]) -> np.ndarray:
        memo = self._memo
        if memo is not None and memo[0] is model and memo[1] == len(served):
            return memo[2]
        mask = np.zeros(model.n_items, bool)
        _mark(mask, model, served)
        self._memo = (model, len(served), mask)
        return mask

    def grew(self, before: int, added: Iterable[str], after: int) -> None:
        """The set went from ``before`` to ``after`` ids by ``added``: keep up if in step."""
        memo = self._memo
        if memo is None or memo[1] != before:
            return
        model, _, mask = memo
        _mark(mask, model, added)
        self._memo = (model, after, mask)


@dataclass
class UserState:
    user_id: str
    region: str
    age: int | None
    positives: np.ndarray  # item indices, newest first
    positive_weights: np.ndarray
    seen: set[str] = field(default_factory=set)  # served in the window, or acted on
    served: set[str] = field(default_factory=set)  # the served log's part of ``seen``
    not_interested_videos: set[str] = field(default_factory=set)
    not_interested_creators: set[int] = field(default_factory=set)
    not_interested_categories: set[int] = field(default_factory=set)
    followed_creators: set[int] = field(default_factory=set)
    category_affinity: dict[int, float] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # newest first

    acted: set[str] | None = None  # acted on (events); ``seen`` is served | acted, if known
    served_mask: ServedMask = field(default_factory=ServedMask, repr=False)
    _seen_mask: tuple[RegionModel, int, np.ndarray] | None = field(default=None, repr=False)
    _vector: tuple[RegionModel, np.ndarray | None] | None = field(default=None, repr=False)

    @property
    def is_new(self) -> bool:
        return len(self.positives) == 0

    def vector(self, model: RegionModel) -> np.ndarray | None:
        """The user's vector in ``model`` (learned, moved towards recent positives);
        worked out once: a state's positives never change (a new event builds a new
        state)."""
        memo = self._vector
        if memo is None or memo[0] is not model:
            memo = self._vector = (model, model.user_vector(self.user_id, self.positives))
        return memo[1]

    def seen_mask(self, model: RegionModel) -> np.ndarray:
        """``mask[item]`` is True for the catalogue items in ``seen`` (kept while unchanged:
        ``seen`` only grows, so its size tells whether it changed)."""
        memo = self._seen_mask
        if memo is not None and memo[0] is model and memo[1] == len(self.seen):
            return memo[2]
        mask = self.served_mask.get(model, self.served).copy()
        _mark(mask, model, self.seen.difference(self.served) if self.acted is None else self.acted)
        self._seen_mask = (model, len(self.seen), mask)
        return mask

    def add_served(self, video_ids: Sequence[str]) -> None:
        """Videos this process just served: seen and served now (masks kept in step)."""
        before = len(self.served)
        self.seen.update(video_ids)
        self.served.update(video_ids)
        self.served_mask.grew(before, video_ids, len(self.served))


def build_state(
    user_id: str,
    region: str,
    age: int | None,
    events: Iterable[StoredEvent],
    served: Iterable[str],
    model: RegionModel,
    category_block_after: int = 2,
    served_mask: ServedMask | None = None,
) -> UserState:
    """Fold the user's recent events (newest first) and served videos into a state;
    ``served_mask``: the one of the state whose served part this is, if any."""
    served_set = set(served)
    positives: list[int] = []
    weights: list[float] = []
    acted: set[str] = set()
    ni_videos: set[str] = set()
    ni_creators: set[int] = set()
    ni_category_counts: dict[int, int] = {}
    followed: set[int] = set()
    affinity: dict[int, float] = {}
    skipped: set[int] = set()
    recent: list[int] = []
    for e in events:
        acted.add(e.video_id)
        item = model.video_index.get(e.video_id)
        if item is not None and len(recent) < RECENT_WINDOW and item not in recent:
            recent.append(item)
        creator = int(model.creator[item]) if item is not None else -1
        category = int(model.category[item]) if item is not None else -1
        if e.type == EventType.not_interested:
            ni_videos.add(e.video_id)
            if creator >= 0:
                ni_creators.add(creator)
            if category >= 0:
                ni_category_counts[category] = ni_category_counts.get(category, 0) + 1
            continue
        if e.type == EventType.follow and creator >= 0:
            followed.add(creator)
        if item is None:
            continue
        if e.type in NEGATIVE_TYPES or (e.type == EventType.play and e.short_play):
            skipped.add(item)
            if category >= 0:
                affinity[category] = affinity.get(category, 0.0) - 0.5
            continue
        weight = event_weight(e)
        if weight > 0:
            if len(positives) < RECENT_POSITIVES and item not in positives:
                positives.append(item)
                weights.append(weight)
            if category >= 0:
                affinity[category] = affinity.get(category, 0.0) + weight
    return UserState(
        user_id=user_id,
        region=region,
        age=age,
        positives=np.asarray(positives, np.int64),
        positive_weights=np.asarray(weights, np.float32),
        seen=served_set | acted,
        served=served_set,
        acted=acted,
        not_interested_videos=ni_videos,
        not_interested_creators=ni_creators,
        not_interested_categories={
            c for c, n in ni_category_counts.items() if n >= category_block_after
        },
        followed_creators=followed,
        category_affinity=affinity,
        skipped=skipped,
        recent=np.asarray(recent, np.int64),
        served_mask=served_mask or ServedMask(),
    )


STATE_CACHE_USERS = 100_000
STATE_TTL_S = 60.0  # the seen window slides: rebuild now and then even if nothing changed


class StateCache:
    """Built user states, each valid while the store's marker for the user is unchanged
    and the model is the one it was built against (least recently used evicted)."""

    def __init__(self, max_users: int = STATE_CACHE_USERS, ttl_s: float = STATE_TTL_S) -> None:
        self.max_users = max_users
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[tuple[int, ...], RegionModel, float, UserState]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, user_id: str, model: RegionModel, marker: tuple[int, ...]) -> UserState | None:
        with self._lock:
            hit = self._entries.get(user_id)
            if hit is None or hit[0] != marker or hit[1] is not model or self._expired(hit[2]):
                return None
            self._entries.move_to_end(user_id)
            return hit[3]

    def previous(self, user_id: str) -> tuple[tuple[int, ...], UserState] | None:
        """The user's cached state and the marker it was built at, whatever the marker
        is now: what has not changed since (the profile, ``marker[0]``; the served log,
        ``marker[2:]``) need not be read again when a new event rebuilds the state, and
        a heavy user's seen window can hold tens of thousands of rows."""
        with self._lock:
            hit = self._entries.get(user_id)
            if hit is None or self._expired(hit[2]):
                return None
            return hit[0], hit[3]

    def _expired(self, built: float) -> bool:
        return time.monotonic() - built > self.ttl_s

    def put(
        self, user_id: str, model: RegionModel, marker: tuple[int, ...], state: UserState
    ) -> None:
        with self._lock:
            self._entries[user_id] = (marker, model, time.monotonic(), state)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def served(
        self, user_id: str, marker: tuple[int, ...] | None, video_ids: Sequence[str]
    ) -> None:
        """The feed recorded ``video_ids`` as served: keep the state if that is all that
        changed (same profile and events, and the served counter one up: no other
        process showed the user anything in between), else drop it."""
        with self._lock:
            hit = self._entries.get(user_id)
            if hit is None:
                return
            if marker is None or marker[:2] != hit[0][:2] or marker[2:] != (hit[0][2] + 1,):
                del self._entries[user_id]
                return
            hit[3].add_served(video_ids)
            self._entries[user_id] = (marker, hit[1], hit[2], hit[3])

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)
