"""Candidate sources: each proposes up to ``quota`` videos with a score and a reason.

Sources never look at another region's data: they read only the region model and
the user's state. Each returns item indices into the region catalogue.
"""

from __future__ import annotations

import functools
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from fyp.feed.reasons import Reason, category_interest, fixed, liked_similar, other
from fyp.feed.settings import SourceQuotas
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel

Explain = Callable[[int], Reason]


@dataclass(slots=True)
class Candidates:
    """What one source proposes. ``explain(row)`` writes the reason for ``items[row]``
    lazily: only the few videos that reach the page are ever explained.

    Proposals are cached for thousands of users (fyp.feed.pipeline.ProposalCache) and a
    full collection visits every object they hold, so an ``explain`` is one small object
    (or a function shared by every proposal), not a closure with a cell per variable."""

    source: str
    items: np.ndarray  # int64 catalogue indices
    scores: np.ndarray  # float32, higher is better, comparable within a source only
    explain: Explain


@functools.cache
def _fixed(code: str) -> Explain:
    """The same reason for every row: one function per code, shared."""
    reason = fixed(code) if code else other("")
    return lambda _row: reason


@functools.cache
def _empty(source: str) -> Candidates:
    """Nothing proposed (shared: candidates are never changed in place)."""
    return Candidates(source, np.zeros(0, np.int64), np.zeros(0, np.float32), _fixed(""))


def _top(scores: np.ndarray, k: int, narrow: bool = False) -> np.ndarray:
    """Indices of the k highest scores, best first, ties by index. Which of several
    videos tied at the cut make it in is ``argpartition``'s (deterministic) choice, not
    necessarily the lowest indices: making it so cost 9 µs a call (session 10).
    ``narrow``: the scores seldom tie (dot products), so first try the same selection
    among the few above a sampled threshold (``_narrowed_top``)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = _narrowed_top(scores, k) if narrow else None
    if part is None:
        part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


SAMPLE_EVERY = 16  # a narrowed top-k reads every 16th score for its threshold


def _narrowed_top(scores: np.ndarray, k: int) -> np.ndarray | None:
    """The k highest scores' indices, as a set exactly those ``argpartition(-scores,
    k - 1)[:k]`` selects, found among the few scores above a threshold read off a
    sample (~2k of them) instead of the whole catalogue: a fifth of the time for the
    embedding's 200 of ~10,000 (every page ranked afresh asks for them). None when that
    cannot be sure of the same set, and the caller selects from all: too few above the
    threshold, or scores tied at the cut (which of them make it in is then
    argpartition's choice over the whole array; co-engagement's sums of similarities
    tie there for most users, so it does not try)."""
    sample = scores[::SAMPLE_EVERY]
    m = 2 * k // SAMPLE_EVERY + 1
    if len(scores) < SAMPLE_EVERY * k:
        return None
    threshold = np.partition(sample, len(sample) - m)[len(sample) - m]
    above = np.flatnonzero(scores >= threshold)  # NaN is never above: argpartition puts it last
    if len(above) < k:
        return None
    sub = scores[above]
    picked = np.argpartition(-sub, k - 1)[:k]
    cut = sub[picked].min()
    if np.count_nonzero(sub == cut) != np.count_nonzero(sub[picked] == cut):
        return None
    found: np.ndarray = above[picked]
    return found


class CandidateSource(ABC):
    """One way of finding videos for a user; ``quota`` caps how many it proposes."""

    name: str = "source"

    def __init__(self, quota: int) -> None:
        self.quota = quota

    @abstractmethod
    def fetch(self, model: RegionModel, state: UserState) -> Candidates: ...

    def inputs(self, state: UserState) -> Hashable | None:
        """All that ``fetch`` reads of ``state``, comparable between two states of one user
        (the model aside): where equal, so are the proposals, and a cache may reuse them
        (fyp.feed.pipeline.ProposalCache). None: fetch every time."""
        return None


class CoEngagement(CandidateSource):
    """Videos engaged with by the same people as the user's recent positives (item-CF)."""

    name = "co_engagement"

    def inputs(self, state: UserState) -> Hashable | None:
        return state.positives.tobytes(), state.positive_weights.tobytes()

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        if state.is_new:
            return _empty(self.name)
        recency = 0.9 ** np.arange(len(state.positives), dtype=np.float32)
        # the explanation below keeps these two small arrays, never the state or the
        # neighbour rows: proposals are cached (fyp.feed.pipeline.ProposalCache)
        positives, weights = state.positives, state.positive_weights * recency
        nbr, sims = _neighbours(model, positives, weights)
        valid = nbr >= 0
        scores = np.bincount(nbr[valid], weights=sims[valid], minlength=model.n_items)
        items = _top(scores.astype(np.float32), self.quota)
        items = items[scores[items] > 0]

        explain = _BecauseYouLiked(model, positives, weights, items)
        return Candidates(self.name, items, scores[items].astype(np.float32), explain)


class _BecauseYouLiked:
    """Names, for each co-engagement candidate, the recent positive that contributed most
    to it: one pass for all of them on the first reason asked for (an order ranked ahead
    explains dozens), ties to the newest."""

    __slots__ = ("_anchors", "_items", "_model", "_positives", "_weights")

    def __init__(
        self, model: RegionModel, positives: np.ndarray, weights: np.ndarray, items: np.ndarray
    ) -> None:
        self._model, self._positives, self._weights, self._items = model, positives, weights, items
        self._anchors: np.ndarray | None = None

    def __call__(self, row: int) -> Reason:
        model, positives = self._model, self._positives
        if self._anchors is None:
            nbr, sims = _neighbours(model, positives, self._weights)
            best_first = np.argsort(-sims, axis=None, kind="stable")
            # each neighbour's first (strongest) appearance, and whose neighbour it is
            found, at = np.unique(nbr.ravel()[best_first], return_index=True)
            owner = best_first[at] // nbr.shape[1]
            self._anchors = owner[np.searchsorted(found, self._items)]
        anchor = int(positives[int(self._anchors[row])])
        return liked_similar(str(model.video_ids[anchor]))


def _neighbours(
    model: RegionModel, positives: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each positive's neighbour videos and their similarity times the positive's weight."""
    return model.nbr_idx[positives], model.nbr_sim[positives] * weights[:, None]


class EmbeddingRetrieval(CandidateSource):
    """Nearest videos to the user's vector (learned, or folded in from recent events)."""

    name = "embedding"

    def inputs(self, state: UserState) -> Hashable | None:
        return state.user_id, state.positives.tobytes()  # the vector (RegionModel.user_vector)

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        vector = state.vector(model)
        if vector is None:
            return _empty(self.name)
        scores = model.item_factors @ vector
        items = _top(scores, self.quota, narrow=True)
        return Candidates(self.name, items, scores[items], _fixed("similar_to_watched"))


class ModelWideSource(CandidateSource):
    """A source that proposes the same videos to every user of a model: worked out
    once per model (one per region) and shared."""

    def __init__(self, quota: int) -> None:
        super().__init__(quota)
        self._memo: weakref.WeakKeyDictionary[RegionModel, Candidates] = weakref.WeakKeyDictionary()

    @abstractmethod
    def propose(self, model: RegionModel) -> Candidates: ...

    def inputs(self, state: UserState) -> Hashable | None:
        return ()  # nothing of the state

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        found = self._memo.get(model)
        if found is None:
            found = self._memo[model] = self.propose(model)
        return found


class Trending(ModelWideSource):
    """The region's most engaged-with videos, decayed by age, normalised per user."""

    name = "trending"
    reason = "trending_region"  # the code of every proposal's reason (and of the refill's)

    def propose(self, model: RegionModel) -> Candidates:
        items = model.trending_order[: self.quota].astype(np.int64)
        return Candidates(self.name, items, model.popularity[items], _fixed(self.reason))


class Following(CandidateSource):
    """Newest videos from creators the user follows."""

    name = "following"

    def inputs(self, state: UserState) -> Hashable | None:
        return tuple(sorted(state.followed_creators))

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        if not state.followed_creators:
            return _empty(self.name)
        mask = np.isin(model.creator, list(state.followed_creators))
        items = np.nonzero(mask)[0]
        created = model.created_at_ms[items].astype(np.float64)
        order = np.argsort(-created, kind="stable")[: self.quota]
        items = items[order]

        return Candidates(
            self.name,
            items.astype(np.int64),
            created[order].astype(np.float32),
            # no creator id in the reason: reasons are stored ahead (fyp.models.ahead) and
            # must not name a user
            _fixed("followed_creator"),
        )


class Fresh(ModelWideSource):
    """Recent videos with few impressions: exploration so new videos get a chance."""

    name = "fresh"
    reason = "new_on_fyp"

    def __init__(self, quota: int, max_impressions: int = 50) -> None:
        super().__init__(quota)
        self.max_impressions = max_impressions

    def propose(self, model: RegionModel) -> Candidates:
        few = np.nonzero(model.impressions <= self.max_impressions)[0]
        if len(few) == 0:
            return _empty(self.name)
        created = model.created_at_ms[few].astype(np.float64)
        order = _top(created, self.quota)
        items = few[order].astype(np.int64)
        return Candidates(self.name, items, created[order].astype(np.float32), _fixed(self.reason))


class CategoryInterest(CandidateSource):
    """Popular videos in the categories the user engages with most."""

    name = "category_interest"

    def __init__(self, quota: int, categories: int = 3) -> None:
        super().__init__(quota)
        self.categories = categories

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        liked = sorted(((w, c) for c, w in state.category_affinity.items() if w > 0), reverse=True)[
            : self.categories
        ]
        if not liked:
            return _empty(self.name)
        per = max(1, self.quota // len(liked))
        items = np.concatenate(
            [model.category_orders.get(c, np.zeros(0, np.int32))[:per] for _, c in liked]
        ).astype(np.int64)

        return Candidates(self.name, items, model.popularity[items], _BecauseYouWatch(model, items))


class _BecauseYouWatch:
    """Names each category-interest candidate's category."""

    __slots__ = ("_items", "_model")

    def __init__(self, model: RegionModel, items: np.ndarray) -> None:
        self._model, self._items = model, items

    def __call__(self, row: int) -> Reason:
        model = self._model
        return category_interest(str(model.category_names[model.category[self._items[row]]]))


def deeper_trending(
    model: RegionModel, state: UserState, count: int, reason: str = Trending.reason
) -> Candidates:
    """The region's popularity order past what the sources proposed, skipping what the
    user has seen: for a user who has seen what every source's quota holds (~350 videos
    on KuaiRec-EAR), whose feed would otherwise run dry while the region has thousands
    of videos they have never been shown. ``reason``: the code each explains with (the
    pipeline's trending source's)."""
    order = model.trending_order
    unseen = order[~state.seen_mask(model)[order]][:count].astype(np.int64)
    return Candidates(Trending.name, unseen, model.popularity[unseen], _fixed(reason))


def configured_sources(quotas: SourceQuotas) -> list[CandidateSource]:
    """The profiled feed's sources with ``[feed.sources]``'s quotas; a source whose quota
    is 0 is left out, so it costs nothing (the embedding's scan of the catalogue, the
    co-engagement sums) rather than proposing nothing."""
    made: list[CandidateSource] = [
        CoEngagement(quotas.co_engagement),
        EmbeddingRetrieval(quotas.embedding),
        Trending(quotas.trending),
        Following(quotas.following),
        Fresh(quotas.fresh, quotas.fresh_max_impressions),
        CategoryInterest(quotas.category_interest),
    ]
    return [s for s in made if s.quota > 0]


def default_sources() -> list[CandidateSource]:
    return configured_sources(SourceQuotas())
