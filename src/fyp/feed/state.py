"""A user's state at feed time, read from their home region's store.

Short-term state is the user's latest events, read on every feed request: an event
acknowledged before the request always influences it (read-your-writes), whichever
process ingested it. Long-term state is the user's learned vector in the region model.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fyp.events.schema import EventType, StoredEvent
from fyp.models.region_model import RegionModel
from fyp.models.training import event_weight

RECENT_POSITIVES = 30
RECENT_WINDOW = 8  # latest distinct videos, for look-alike avoidance
NEGATIVE_TYPES = frozenset({EventType.skip, EventType.not_interested, EventType.report})
CREATOR_ACTIONS = frozenset({EventType.not_interested})
"""Events that act on a video's creator (and category), whether or not the model knows
the video: the feed looks those up in the catalogue. (Follows are not read from events:
the store keeps them, :mod:`fyp.catalog.follows`.)"""

# A state's sets of ids are a dict's keys (values None): the collector leaves a dict of
# atomic keys and values untracked (see ``gc.is_tracked``), where it tracks every set and
# visits each of its members on a full collection. A server caches thousands of states
# of hundreds of ids each; as sets they made full collections ~250 ms long after 40 s of
# serving (docs/benchmarks.md).
Ids = dict[str, None]
Codes = dict[int, None]


def _mark(mask: np.ndarray, model: RegionModel, video_ids: Iterable[str]) -> None:
    """Set ``mask[item]`` for the videos of ``video_ids`` in the model's catalogue."""
    mask[[i for i in map(model.video_index.get, video_ids) if i is not None]] = True


class ServedMask:
    """``mask[item]`` for the items of a served set, shared by the states built on the
    same served part: an event builds a new state but keeps that part (StateCache), so a
    heavy user's thousands of served ids are not turned into items again per event.
    Valid while its size matches: the sets that share one only grow, from one another.
    (The memo is three slots, not a tuple: one object less per cached state for every
    full collection to visit.)"""

    __slots__ = ("_mask", "_model", "_size")

    def __init__(self) -> None:
        self._model: RegionModel | None = None
        self._size = -1
        self._mask = np.zeros(0, bool)

    def get(self, model: RegionModel, served: Ids) -> np.ndarray:
        if self._model is model and self._size == len(served):
            return self._mask
        mask = np.zeros(model.n_items, bool)
        _mark(mask, model, served)
        self._model, self._size, self._mask = model, len(served), mask
        return mask

    def grew(self, before: int, added: Iterable[str], after: int) -> None:
        """The set went from ``before`` to ``after`` ids by ``added``: keep up if in step."""
        if self._model is None or self._size != before:
            return
        _mark(self._mask, self._model, added)
        self._size = after


_SERIALS = itertools.count()


@dataclass(slots=True)
class UserState:
    user_id: str
    region: str
    age: int | None
    positives: np.ndarray  # item indices, newest first
    positive_weights: np.ndarray
    seen: Ids = field(default_factory=dict)  # served in the window, or acted on
    served: Ids = field(default_factory=dict)  # the served log's part of ``seen``
    not_interested_videos: Ids = field(default_factory=dict)
    not_interested_creators: Codes = field(default_factory=dict)
    not_interested_categories: Codes = field(default_factory=dict)
    followed_creators: Codes = field(default_factory=dict)
    blocked_creators: Codes = field(default_factory=dict)
    category_affinity: dict[int, float] = field(default_factory=dict)
    # the same, from events newer than the model (what it has not learned: this
    # session's likes), which the scorer weighs more: a new user's few likes show at once
    fresh_affinity: dict[int, float] = field(default_factory=dict)
    skipped: Codes = field(default_factory=dict)
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # newest first

    acted: Ids | None = None  # acted on (events); ``seen`` is served | acted, if known
    served_mask: ServedMask = field(default_factory=ServedMask, repr=False)
    # memos, each for the model it was worked out with (fields, not tuples: a server
    # caches thousands of states, and every full collection visits each tuple)
    _seen_mask_for: RegionModel | None = field(default=None, repr=False)
    _seen_mask_size: int = field(default=-1, repr=False)  # of ``seen`` it was worked out at
    _seen_mask: np.ndarray | None = field(default=None, repr=False)
    _vector_for: RegionModel | None = field(default=None, repr=False)
    _vector: np.ndarray | None = field(default=None, repr=False)
    # which state this is, for a cache that must not keep it alive (a weak reference
    # would be one more object per cached user for every full collection to visit)
    serial: int = field(default_factory=lambda: next(_SERIALS), init=False, repr=False)
    # where StateCache keeps it: the marker and model it is valid for, when it was built
    # (fields of the state, not an entry tuple: one object less per cached user; the
    # marker, a tuple of ints, the collector does not track)
    cached_marker: tuple[int, ...] = field(default=(), init=False, repr=False)
    cached_model: RegionModel | None = field(default=None, init=False, repr=False)
    cached_at: float = field(default=0.0, init=False, repr=False)

    @property
    def is_new(self) -> bool:
        return len(self.positives) == 0

    def vector(self, model: RegionModel) -> np.ndarray | None:
        """The user's vector in ``model`` (learned, moved towards recent positives);
        worked out once: a state's positives never change (a new event builds a new
        state)."""
        if self._vector_for is not model:
            self._vector = model.user_vector(self.user_id, self.positives)
            self._vector_for = model
        return self._vector

    def seen_mask(self, model: RegionModel) -> np.ndarray:
        """``mask[item]`` is True for the catalogue items in ``seen`` (kept while unchanged:
        ``seen`` only grows, so its size tells whether it changed)."""
        kept, size = self._seen_mask, self._seen_mask_size
        if kept is not None and self._seen_mask_for is model and size == len(self.seen):
            return kept
        mask = self.served_mask.get(model, self.served).copy()
        served = self.served
        _mark(
            mask,
            model,
            (v for v in self.seen if v not in served) if self.acted is None else self.acted,
        )
        self._seen_mask_for, self._seen_mask_size, self._seen_mask = model, len(self.seen), mask
        return mask

    def add_served(self, video_ids: Sequence[str]) -> None:
        """Videos this process just served: seen and served now (masks kept in step)."""
        before = len(self.served)
        added = dict.fromkeys(video_ids)
        self.seen.update(added)
        self.served.update(added)
        self.served_mask.grew(before, video_ids, len(self.served))


_NEVER = (-(2**63), 0)
_UNLIKE = EventType.unlike.value


def latest_unlikes(events: Iterable[StoredEvent], model: RegionModel) -> dict[int, tuple[int, int]]:
    """Each item's latest ``unlike`` among ``events``, by (``ts_ms``, ``seq``): a like
    before it is taken back, whichever of the two arrived first (apps send events queued
    offline late)."""
    out: dict[int, tuple[int, int]] = {}
    # a comprehension against the plain string: a fifth of the time of a loop comparing
    # each event with EventType.unlike (300 events, timed on a loaded machine)
    for e in [e for e in events if e.type == _UNLIKE]:
        item = model.video_index.get(e.video_id)
        if item is not None and (e.ts_ms, e.seq) > out.get(item, _NEVER):
            out[item] = (e.ts_ms, e.seq)
    return out


def build_state(
    user_id: str,
    region: str,
    age: int | None,
    events: Sequence[StoredEvent],
    served: Iterable[str],
    model: RegionModel,
    category_block_after: int = 2,
    served_mask: ServedMask | None = None,
    outside: Mapping[str, tuple[int, int]] | None = None,
    followed: Iterable[int] = (),
    earlier: Iterable[StoredEvent] = (),
    blocked: Iterable[int] = (),
) -> UserState:
    """Fold the user's recent events (newest first) and served videos into a state (a
    like is no positive when an ``unlike`` of its video among ``events`` was done after
    it by the client's time, ``ts_ms`` then ``seq``, whichever arrived first; a like
    after the unlike counts again);
    ``served_mask``: the one of the state whose served part this is, if any;
    ``outside``: creator and category codes of videos the model has not learned that
    the user said "not interested" in (see :data:`CREATOR_ACTIONS`); ``followed``: the
    model's codes of the creators the user follows (all of them, however old the follow:
    the store's list, not these events); ``earlier``: the user's "not interested" events
    older than ``events`` within the seen window, which count as those among ``events``;
    ``blocked``: the model's codes of the creators the user blocked."""
    outside = outside or {}
    served_ids: Ids = dict.fromkeys(served)
    positives: list[int] = []
    weights: list[float] = []
    acted: Ids = {}
    ni_videos: Ids = {}
    ni_creators: Codes = {}
    ni_category_counts: dict[int, int] = {}
    affinity: dict[int, float] = {}
    skipped: Codes = {}
    recent: list[int] = []
    fresh: dict[int, float] = {}
    unliked: dict[int, tuple[int, int]] | None = None  # each item's latest unlike, if read
    learned = model.manifest.snapshot.max_seq  # events up to this seq are in the model

    def not_interested(video_id: str, creator: int, category: int) -> None:
        ni_videos[video_id] = None
        if creator >= 0:
            ni_creators[creator] = None
        if category >= 0:
            ni_category_counts[category] = ni_category_counts.get(category, 0) + 1

    for e in events:
        acted[e.video_id] = None
        item = model.video_index.get(e.video_id)
        if item is not None and len(recent) < RECENT_WINDOW and item not in recent:
            recent.append(item)
        if item is not None:
            creator, category = int(model.creator[item]), int(model.category[item])
        else:
            creator, category = outside.get(e.video_id, (-1, -1))
        if e.type == EventType.not_interested:
            not_interested(e.video_id, creator, category)
            continue
        if item is None:
            continue
        if e.type in NEGATIVE_TYPES or (e.type == EventType.play and e.short_play):
            skipped[item] = None
            if category >= 0:
                affinity[category] = affinity.get(category, 0.0) - 0.5
            continue
        weight = event_weight(e)
        if e.type == EventType.like:
            if unliked is None:  # read once, at the first like (most states have none)
                unliked = latest_unlikes(events, model)
            if (e.ts_ms, e.seq) < unliked.get(item, _NEVER):
                weight = 0.0  # taken back: the video stays acted on, but is no positive
        if weight > 0:
            if len(positives) < RECENT_POSITIVES and item not in positives:
                positives.append(item)
                weights.append(weight)
            if category >= 0:
                affinity[category] = affinity.get(category, 0.0) + weight
                if e.seq > learned:
                    fresh[category] = fresh.get(category, 0.0) + weight
    for e in earlier:  # older "not interested" events: only that of them counts
        acted[e.video_id] = None
        item = model.video_index.get(e.video_id)
        if item is not None:
            not_interested(e.video_id, int(model.creator[item]), int(model.category[item]))
        else:
            not_interested(e.video_id, *outside.get(e.video_id, (-1, -1)))
    return UserState(
        user_id=user_id,
        region=region,
        age=age,
        positives=np.asarray(positives, np.int64),
        positive_weights=np.asarray(weights, np.float32),
        seen=served_ids | acted,
        served=served_ids,
        acted=acted,
        not_interested_videos=ni_videos,
        not_interested_creators=ni_creators,
        not_interested_categories={
            c: None for c, n in ni_category_counts.items() if n >= category_block_after
        },
        followed_creators={c: None for c in followed if c >= 0},
        blocked_creators={c: None for c in blocked if c >= 0},
        category_affinity=affinity,
        fresh_affinity=fresh,
        skipped=skipped,
        recent=np.asarray(recent, np.int64),
        served_mask=served_mask or ServedMask(),
    )


STATE_CACHE_USERS = 100_000
STATE_TTL_S = 60.0  # the seen window slides: rebuild now and then even if nothing changed


class StateCache:
    """Built user states, each valid while the store's marker for the user is unchanged
    and the model is the one it was built against (least recently used evicted, and
    expired ones too as they reach the front: a state past ``ttl_s`` is never used, and
    kept it would only cost memory and every full collection)."""

    def __init__(self, max_users: int = STATE_CACHE_USERS, ttl_s: float = STATE_TTL_S) -> None:
        self.max_users = max_users
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, UserState] = OrderedDict()  # each its cached_*
        self._lock = threading.Lock()

    def get(self, user_id: str, model: RegionModel, marker: tuple[int, ...]) -> UserState | None:
        with self._lock:
            hit = self._entries.get(user_id)
            if hit is None:
                return None
            if (
                hit.cached_marker != marker
                or hit.cached_model is not model
                or self._expired(hit.cached_at)
            ):
                return None
            self._entries.move_to_end(user_id)
            return hit

    def previous(self, user_id: str) -> tuple[tuple[int, ...], UserState] | None:
        """The user's cached state and the marker it was built at, whatever the marker
        is now: what has not changed since (the profile, ``marker[0]``; the served log,
        ``marker[2:]``) need not be read again when a new event rebuilds the state, and
        a heavy user's seen window can hold tens of thousands of rows."""
        with self._lock:
            hit = self._entries.get(user_id)
            if hit is None or self._expired(hit.cached_at):
                return None
            return hit.cached_marker, hit

    def _expired(self, built: float) -> bool:
        return time.monotonic() - built > self.ttl_s

    def put(
        self, user_id: str, model: RegionModel, marker: tuple[int, ...], state: UserState
    ) -> None:
        with self._lock:
            state.cached_marker, state.cached_model = marker, model
            state.cached_at = time.monotonic()
            self._entries[user_id] = state
            self._entries.move_to_end(user_id)
            entries = self._entries
            while len(entries) > self.max_users or (
                entries and self._expired(next(iter(entries.values())).cached_at)
            ):
                entries.popitem(last=False)

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
            kept = hit.cached_marker
            if marker is None or marker[:2] != kept[:2] or marker[2:] != (kept[2] + 1,):
                del self._entries[user_id]
                return
            hit.add_served(video_ids)
            hit.cached_marker = marker

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)
