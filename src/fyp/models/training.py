"""Train every model of one region from that region's store only.

What is learned (all arrays, indexed by the region's catalogue order):

- ``popularity``: user-normalised engagement, sum over users of w(u,i) / n_u ** a with
  a time decay. Dividing by a user's activity stops a few heavy users from defining
  what is popular; on the fully observed KuaiRec test this beats raw counts. The
  exponent ``a`` (``TrainParams.activity_exponent``, 1.5) was chosen on KuaiRec-EAR's
  train->valid split (``scripts/ear_valid_split.py``): above 1, the votes of selective
  users (few positives) weigh more. Through the served feed, 1.5 instead of 1 ranks the
  valid positives of the protocol's own (test) users ~45 % better (NDCG@10) and those
  of all valid users 1.5-5 % worse; 2 gains more on the former but loses ~11 % on the
  latter.
- ``nbr_idx`` / ``nbr_sim``: top-K co-engagement neighbours of each video (cosine
  over users), the item-to-item candidate source.
- ``item_factors`` / ``user_factors``: implicit-feedback matrix factorisation (ALS,
  the ``implicit`` library) for embedding retrieval; ``fold_in`` turns a brand-new
  user's few recent positives into a vector without retraining.
- per-video metadata (category, creator, tags, age, impressions, likes) for
  filters, diversity and exploration.

Nothing is learned from a user whose effective ``model_training`` consent is false
when the training reads the store (``fyp.regions.consent``): their events are hashed
into the snapshot (what was read) but enter no count, matrix or label, so every model
above is as if they had no events. The manifest's ``lineage.consent`` says how many
users that left out, a digest of their ids, the policy in force and the audit log's
head at the read, so ``fyp lineage verify`` can check it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from fyp.events.schema import EventType, StoredEvent
from fyp.models.artifacts import EventHasher, Manifest, Snapshot, hash_ids, new_version
from fyp.regions.consent import ConsentPolicy, training_snapshot
from fyp.storage import Store

POSITIVE_WEIGHTS: dict[str, float] = {
    EventType.like: 1.0,
    EventType.share: 1.5,
    EventType.comment: 1.0,
    EventType.follow: 1.0,
}
LONG_PLAY_WEIGHT = 1.0
IMPRESSION_TYPES = frozenset({EventType.impression, EventType.play, EventType.skip})


@dataclass(frozen=True)
class TrainParams:
    half_life_days: float = 14.0
    # an event never counts less than this share however old: popularity falls back to
    # the long-run ranking instead of collapsing when the newest events are far newer
    # than the rest (one live like after a 2020 import had halved everything else 156
    # times); binds only past ~93 days, so KuaiRec-EAR's 1.5 days of events are untouched
    decay_floor: float = 0.01
    activity_exponent: float = 1.5  # popularity = sum_u w(u,i) / activity_u ** exponent
    neighbours: int = 50
    factors: int = 48
    als_iterations: int = 12
    als_regularization: float = 0.05
    seed: int = 7
    ranker: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


K = TypeVar("K", bound=Hashable)
P = TypeVar("P")
T = TypeVar("T")


class LikeLedger(Generic[K, P]):
    """Which likes of a stream an ``unlike`` took back, per (user, video): a like is
    taken back by an unlike of the pair that the user did later, by the client's time
    (``ts_ms``, then arrival: ``seq``), whichever arrived first (apps send events queued
    offline late). Only likes are kept, not the stream: a fold notes where each like
    went as it reads, and drops what :meth:`taken_back` names at the end
    (:func:`without`)."""

    def __init__(self) -> None:
        self._likes: dict[K, list[tuple[tuple[int, int], P]]] = {}
        self._unliked: dict[K, tuple[int, int]] = {}  # the pair's latest unlike

    def like(self, pair: K, e: StoredEvent, position: P) -> None:
        self._likes.setdefault(pair, []).append(((e.ts_ms, e.seq), position))

    def unlike(self, pair: K, e: StoredEvent) -> None:
        at = (e.ts_ms, e.seq)
        if at > self._unliked.get(pair, (-(2**63), 0)):
            self._unliked[pair] = at

    def taken_back(self) -> list[tuple[K, P]]:
        """(pair, position) of every like an unlike of its pair came after."""
        return [
            (pair, position)
            for pair, latest in self._unliked.items()
            for at, position in self._likes.get(pair, ())
            if at < latest
        ]


def without(values: list[T], gone: set[int]) -> list[T]:
    """``values`` less the positions in ``gone``."""
    return [v for n, v in enumerate(values) if n not in gone] if gone else values


@dataclass
class Interactions:
    """Per-event arrays read from a store, in ingestion order."""

    users: list[str] = field(default_factory=list)
    user_index: dict[str, int] = field(default_factory=dict)
    u: list[int] = field(default_factory=list)
    i: list[int] = field(default_factory=list)
    w: list[float] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    impressions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    likes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # every event that says something about an objective: (user, item, objective, ts)
    obj_u: list[int] = field(default_factory=list)
    obj_i: list[int] = field(default_factory=list)
    obj_k: list[int] = field(default_factory=list)
    obj_ts: list[int] = field(default_factory=list)
    # every impression-type event (impression, play, skip): (user, item, ts)
    imp_u: list[int] = field(default_factory=list)
    imp_i: list[int] = field(default_factory=list)
    imp_ts: list[int] = field(default_factory=list)
    # follow and unfollow events in ingestion order: (user, item, ts, True for a follow)
    fol_u: list[int] = field(default_factory=list)
    fol_i: list[int] = field(default_factory=list)
    fol_ts: list[int] = field(default_factory=list)
    fol_on: list[bool] = field(default_factory=list)
    # users whose events were read but not learned from (no consent to model training)
    excluded: set[str] = field(default_factory=set)

    def take_back(self, weights: set[int], objectives: set[int]) -> None:
        """Drop the positive events at ``weights`` and objective events at ``objectives``
        (likes an unlike took back)."""
        self.u, self.i = without(self.u, weights), without(self.i, weights)
        self.w, self.ts = without(self.w, weights), without(self.ts, weights)
        self.obj_u, self.obj_i = without(self.obj_u, objectives), without(self.obj_i, objectives)
        self.obj_k, self.obj_ts = without(self.obj_k, objectives), without(self.obj_ts, objectives)


def event_weight(e: StoredEvent) -> float:
    """How much an event says 'more like this' (0 for neutral or negative events). Of
    one event: a like that a later ``unlike`` takes back is left out by whatever folds a
    stream of them (:func:`read_interactions`, :class:`LikeLedger`)."""
    if e.type == EventType.play:
        return LONG_PLAY_WEIGHT if e.long_play else 0.0
    return POSITIVE_WEIGHTS.get(e.type, 0.0)


def event_objective(e: StoredEvent) -> int | None:
    """Index into ``ranker.OBJECTIVES`` of what this event is evidence of, if anything
    (an ``unlike`` is evidence of none; the like it takes back is no label either, as
    for :func:`event_weight`)."""
    if e.type == EventType.play:
        if e.long_play:
            return 0
        return 4 if e.short_play else None
    return {EventType.like: 1, EventType.share: 2, EventType.follow: 3, EventType.skip: 4}.get(
        EventType(e.type)
    )


def read_interactions(
    events: Iterable[StoredEvent],
    video_index: dict[str, int],
    hasher: EventHasher,
    learns: Callable[[str], bool] | None = None,
) -> Interactions:
    """The interactions to learn from; ``learns(user_id)`` False leaves a user's events
    out of everything (they are still hashed: the snapshot is what was read). A like
    taken back by a later ``unlike`` is neither a weight nor a ``like`` label (nor in
    ``likes``), whichever arrived first; the unlike itself is hashed and nothing else."""
    out = Interactions(
        impressions=np.zeros(len(video_index), np.int64),
        likes=np.zeros(len(video_index), np.int64),
    )
    allowed: dict[str, bool] = {}
    # (user, item) -> (weight, objective) positions
    ledger: LikeLedger[tuple[str, int], tuple[int, int]] = LikeLedger()
    for e in events:
        hasher.add(e.seq, e.event_id, e.user_id, e.video_id, e.type, e.ts_ms)
        if learns is not None:
            ok = allowed.get(e.user_id)
            if ok is None:
                ok = allowed[e.user_id] = learns(e.user_id)
                if not ok:
                    out.excluded.add(e.user_id)
            if not ok:
                continue
        item = video_index.get(e.video_id)
        if item is None:  # video withdrawn from this region since
            continue
        if e.type == EventType.unlike:
            ledger.unlike((e.user_id, item), e)
            continue
        if e.type == EventType.unfollow:
            known = out.user_index.get(e.user_id)  # None: they followed no one yet
            if known is not None:
                out.fol_u.append(known)
                out.fol_i.append(item)
                out.fol_ts.append(e.ts_ms)
                out.fol_on.append(False)
            continue
        shown = e.type in IMPRESSION_TYPES
        objective = event_objective(e)
        weight = event_weight(e)
        if not shown and objective is None and weight <= 0:
            continue
        uid = out.user_index.get(e.user_id)
        if uid is None:
            uid = out.user_index[e.user_id] = len(out.users)
            out.users.append(e.user_id)
        if e.type == EventType.follow:
            out.fol_u.append(uid)
            out.fol_i.append(item)
            out.fol_ts.append(e.ts_ms)
            out.fol_on.append(True)
        if e.type == EventType.like:  # a weight and an objective, appended below
            ledger.like((e.user_id, item), e, (len(out.w), len(out.obj_u)))
        if shown:
            out.impressions[item] += 1
            out.imp_u.append(uid)
            out.imp_i.append(item)
            out.imp_ts.append(e.ts_ms)
        if objective is not None:
            out.obj_u.append(uid)
            out.obj_i.append(item)
            out.obj_k.append(objective)
            out.obj_ts.append(e.ts_ms)
        if weight <= 0:
            continue
        out.likes[item] += 1
        out.u.append(uid)
        out.i.append(item)
        out.w.append(weight)
        out.ts.append(e.ts_ms)
    gone_w: set[int] = set()
    gone_obj: set[int] = set()
    for (_, item), (w_at, obj_at) in ledger.taken_back():
        gone_w.add(w_at)
        gone_obj.add(obj_at)
        out.likes[item] -= 1
    out.take_back(gone_w, gone_obj)
    return out


def user_normalised_popularity(
    x: sp.csr_matrix, decayed: sp.csr_matrix, exponent: float = 1.0
) -> np.ndarray:
    """sum_u decayed[u,i] / (sum_i x[u,i]) ** exponent.

    With ``exponent`` 1 each user's engagement counts as one vote; above 1 a user's vote
    also shrinks with their activity, so a video engaged with by selective users (who
    engage with little) outranks one carried by a few heavy users."""
    activity = np.asarray(x.sum(axis=1)).ravel()
    per_user = sp.diags(1.0 / np.power(np.maximum(activity, 1e-9), exponent))
    return np.asarray((per_user @ decayed).sum(axis=0)).ravel().astype(np.float32)


def serving_popularity(
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    ts: np.ndarray,
    shape: tuple[int, int],
    params: TrainParams,
) -> np.ndarray:
    """The popularity the feed serves: user-normalised (``activity_exponent``) and
    decayed (``half_life_days`` before the newest event). One definition, so the
    ranker's heads learn on the very feature that serving feeds them."""
    x = sp.csr_matrix((weights, (users, items)), shape=shape)
    now_ms = int(ts.max()) if len(ts) else 0
    decayed = sp.csr_matrix(
        (
            weights * decay_weights(ts, now_ms, params.half_life_days, params.decay_floor),
            (users, items),
        ),
        shape=shape,
    )
    return user_normalised_popularity(x, decayed, params.activity_exponent)


def decay_weights(
    ts: np.ndarray, now_ms: int, half_life_days: float, floor: float = 0.0
) -> np.ndarray:
    """Halve an event's weight every ``half_life_days`` before the newest event, down to
    ``floor``."""
    return np.maximum(np.power(0.5, (now_ms - ts) / (half_life_days * 86_400_000.0)), floor)


def cooccurrence_neighbours(x: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of each item over binary user engagement."""
    binary = x.copy()
    binary.data[:] = 1.0
    counts = np.asarray(binary.sum(axis=0)).ravel()
    co = (binary.T @ binary).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    n = x.shape[1]
    idx = np.full((n, k), -1, np.int32)
    sim = np.zeros((n, k), np.float32)
    norms = np.sqrt(np.maximum(counts, 1.0))
    for item in range(n):
        start, end = co.indptr[item], co.indptr[item + 1]
        if start == end:
            continue
        cols = co.indices[start:end]
        vals = co.data[start:end] / (norms[item] * norms[cols])
        top = np.argsort(-vals, kind="stable")[:k]
        idx[item, : len(top)] = cols[top]
        sim[item, : len(top)] = vals[top]
    return idx, sim


def fit_als(x: sp.csr_matrix, params: TrainParams) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors from implicit ALS (single BLAS thread, seeded)."""
    from implicit.cpu.als import AlternatingLeastSquares

    if x.nnz == 0:
        return (
            np.zeros((x.shape[0], params.factors), np.float32),
            np.zeros((x.shape[1], params.factors), np.float32),
        )
    with threadpool_limits(1, "blas"):  # implicit's ALS is slower with threaded BLAS
        model = AlternatingLeastSquares(
            factors=params.factors,
            iterations=params.als_iterations,
            regularization=params.als_regularization,
            random_state=params.seed,
            calculate_training_loss=False,
        )
        model.fit(x, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def catalogue_arrays(store: Store) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[str]]]:
    """Video ids in a stable order plus per-video metadata arrays and vocabularies."""
    videos = list(store.iter_videos())
    ids = [v.video_id for v in videos]
    categories: dict[str, int] = {}
    creators: dict[str, int] = {}
    tags: dict[str, int] = {}
    category = np.full(len(videos), -1, np.int32)
    creator = np.full(len(videos), -1, np.int32)
    created = np.zeros(len(videos), np.int64)
    tag_ptr = [0]
    tag_idx: list[int] = []
    for n, v in enumerate(videos):
        if v.categories:
            category[n] = categories.setdefault(v.categories[0], len(categories))
        if v.creator_id is not None:
            creator[n] = creators.setdefault(v.creator_id, len(creators))
        created[n] = v.created_at_ms
        tag_idx.extend(tags.setdefault(t, len(tags)) for t in v.tags)
        tag_ptr.append(len(tag_idx))
    arrays: dict[str, np.ndarray] = {
        "category": category,
        "creator": creator,
        "created_at_ms": created,
        "tag_ptr": np.asarray(tag_ptr, np.int64),
        "tag_idx": np.asarray(tag_idx, np.int32),
    }
    vocab = {"categories": list(categories), "creators": list(creators), "tags": list(tags)}
    return ids, arrays, vocab


def catalogue_mark(store: Store) -> int | None:
    """Where the store's catalogue change feed stands (None for a store without one)."""
    from fyp.audit.log import offers_sql
    from fyp.moderation.snapshot import change_head

    return change_head(store) if offers_sql(store) else None


def train_region(
    store: Store,
    region_dir: Path,
    params: TrainParams | None = None,
    trained_on: dict[str, Any] | None = None,
    *,
    consent: ConsentPolicy,
) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Read one region's store and return the manifest and arrays of a new artifact.
    ``trained_on``: where this runs, for the manifest's lineage (default: this host,
    ``fyp.models.placement.local_placement``; a Ray task passes its node's record).
    ``consent``: the region's consent policy (``fyp.regions.consent.consent_policy``),
    required so no caller can learn from users a default-false region did not ask."""
    from fyp.models.placement import local_placement

    params = params or TrainParams()
    started = time.perf_counter()
    read_started_ms = time.time_ns() // 1_000_000  # an erasure before this is not learned
    catalog_seq = catalogue_mark(store)  # before the read: a change during it is not learned
    # consents as of this instant: a withdrawal committed after it is a pending retrain
    consents, audit_seq = training_snapshot(store, consent)
    video_ids, meta, vocab = catalogue_arrays(store)
    video_index = {v: n for n, v in enumerate(video_ids)}
    hasher = EventHasher()
    data = read_interactions(store.iter_events(), video_index, hasher, consents.allows)
    learned_from = hasher.users - data.excluded
    n_users, n_items = len(data.users), len(video_ids)
    rows, cols = np.asarray(data.u, np.int64), np.asarray(data.i, np.int64)
    weights = np.asarray(data.w, np.float64)
    ts = np.asarray(data.ts, np.int64)
    x = sp.csr_matrix((weights, (rows, cols)), shape=(n_users, n_items))
    popularity = serving_popularity(rows, cols, weights, ts, (n_users, n_items), params)
    nbr_idx, nbr_sim = cooccurrence_neighbours(x, params.neighbours)
    user_factors, item_factors = fit_als(x, params)
    heads: dict[str, str] = {}
    ranker_summary: dict[str, Any] = {"heads": []}
    if params.ranker:
        from fyp.catalog.follow_order import region_actions
        from fyp.catalog.follows import region_follows
        from fyp.models.ranker_training import fit_ranker, follow_history

        creator_index = {c: n for n, c in enumerate(vocab["creators"])}
        follows = follow_history(
            data, meta["creator"], creator_index, region_follows(store), region_actions(store)
        )
        heads, ranker_summary = fit_ranker(data, meta, n_items, params, follows)
    arrays: dict[str, np.ndarray] = {
        "video_ids": np.asarray(video_ids, dtype=np.str_),
        "user_ids": np.asarray(data.users, dtype=np.str_),
        # everyone learned from (whose events were read, less those without consent),
        # so the manifest's users hash can be recomputed
        "lineage_user_ids": np.asarray(sorted(learned_from), dtype=np.str_),
        "popularity": popularity,
        "nbr_idx": nbr_idx,
        "nbr_sim": nbr_sim,
        "user_factors": user_factors,
        "item_factors": item_factors,
        "impressions": data.impressions,
        "likes": data.likes,
        "category_names": np.asarray(vocab["categories"], dtype=np.str_),
        "creator_ids": np.asarray(vocab["creators"], dtype=np.str_),
        "tag_names": np.asarray(vocab["tags"], dtype=np.str_),
        **meta,
        **{f"ranker_{name}": np.asarray(text) for name, text in heads.items()},
    }
    snapshot = Snapshot(
        event_count=hasher.count,
        min_seq=hasher.min_seq,
        max_seq=hasher.max_seq,
        events_sha256=hasher.hexdigest(),
        users_sha256=hash_ids(learned_from),
        user_count=len(learned_from),
    )
    manifest = Manifest(
        region=store.region,
        version=new_version(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        snapshot=snapshot,
        params=params.to_dict(),
        metrics={
            "videos": n_items,
            "users_learned": n_users,
            "positives": int(x.nnz),
            "ranker": ranker_summary,
            "train_seconds": round(time.perf_counter() - started, 3),
        },
        lineage={
            "read_started_ms": read_started_ms,
            "oldest_event_ms": hasher.oldest_ms,  # None: no events
            "catalog_seq": catalog_seq,
            "trained_on": trained_on or local_placement(),
            "consent": {
                "policy": consent.training_record(),
                "audit_seq": audit_seq,
                "excluded_users": len(data.excluded),
                "excluded_sha256": hash_ids(data.excluded),
            },
        },
    )
    return manifest, arrays


Augment = Callable[[Manifest, dict[str, np.ndarray]], dict[str, np.ndarray]]


def train_and_publish(
    store: Store,
    region_dir: Path,
    params: TrainParams | None = None,
    keep: int | None = None,
    augment: Augment | None = None,
    trained_on: dict[str, Any] | None = None,
    *,
    consent: ConsentPolicy,
) -> Manifest:
    """Train a region's models and make them the live artifact (atomic switch); with
    ``keep``, delete all but the newest ``keep`` versions. ``augment`` adds arrays
    worked out with the new models before they go live (the feed's orders ranked ahead,
    ``fyp.feed.ahead.rank_region``); its seconds go in the manifest's metrics.
    ``trained_on``, ``consent``: as for :func:`train_region`.

    Training reads the store without the region's models lock (erasures go on); the
    publish holds it, so it never interleaves with an erasure rewriting artifacts, and
    first removes what killed artifact writers left (``models/.<version>.tmp``: arrays
    naming users, erased ones among them)."""
    from fyp.models.artifacts import prune_versions, remove_leftovers, write_artifact
    from fyp.sovereignty.erasure import region_models_lock

    manifest, arrays = train_region(store, region_dir, params, trained_on, consent=consent)
    if augment is not None:
        started = time.perf_counter()
        arrays = {**arrays, **augment(manifest, arrays)}
        manifest.metrics["augment_seconds"] = round(time.perf_counter() - started, 3)
    with region_models_lock(region_dir):
        remove_leftovers(region_dir)  # no live writer's: each holds this lock
        write_artifact(region_dir, manifest, arrays)
        if keep is not None:
            prune_versions(region_dir, keep)
    return manifest
