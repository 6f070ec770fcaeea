"""The feed pipeline: sources -> filters -> scorer -> re-rankers, each stage named.

``FeedPipeline.run`` is pure with respect to storage: it takes a loaded region model
and a user state and returns the ordered page with its explanation. ``FeedService``
(service.py) binds it to a deployment's stores; evaluation calls the same service.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fyp.config import FeedConfig
from fyp.feed.candidates import (
    Candidates,
    CandidateSource,
    Trending,
    configured_sources,
    deeper_trending,
    default_sources,
)
from fyp.feed.filters import AlreadySeen, Filter, NotInterested
from fyp.feed.pool import Pool, RemovedLog, merge
from fyp.feed.reasons import fixed
from fyp.feed.rerank import diversify, explore, separate_creators, shortlist_size
from fyp.feed.scoring import Scorer, ValueScorer
from fyp.feed.settings import RerankParams
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel


@dataclass
class RankedPage:
    pool: Pool
    order: list[int]  # rows of ``pool``, in feed order (longer than the page: backfill)
    scores: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def removed(self) -> RemovedLog:
        return self.pool.removed


# when fewer than REFILL_BELOW x (page + spares) candidates survive the filters, trending
# past the sources' quotas adds REFILL_BY x that many unseen videos
REFILL_BELOW = 4
REFILL_BY = 8


class Universe(CandidateSource):
    """Restricts a feed to a fixed set of videos (evaluation protocols rank a known set)."""

    name = "universe"

    def __init__(self, items: np.ndarray) -> None:
        super().__init__(len(items))
        self.items = np.asarray(items, np.int64)

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        return Candidates(
            self.name,
            self.items,
            np.zeros(len(self.items), np.float32),
            lambda _row: fixed("evaluated_set"),
        )


class FeedPipeline:
    def __init__(
        self,
        sources: list[CandidateSource] | None = None,
        filters: list[Filter] | None = None,
        scorer: Scorer | None = None,
        rerank: RerankParams | None = None,
        proposal_cache_users: int = 10_000,
        refill_reason: str | None = None,
    ) -> None:
        """``refill_reason``: the code the refill past the quotas explains with; by
        default the trending source's (``[feed.sources] trending = 0`` leaves it out)."""
        self.sources = sources if sources is not None else default_sources()
        self.filters = filters if filters is not None else [AlreadySeen(), NotInterested()]
        self.scorer = scorer or ValueScorer()
        self.rerank = rerank or RerankParams()
        self._proposals = ProposalCache(proposal_cache_users)
        # the refill past the quotas explains as the pipeline's trending source does
        self._refill_reason = refill_reason or next(
            (s.reason for s in self.sources if isinstance(s, Trending)), Trending.reason
        )

    def _filtered(
        self, model: RegionModel, state: UserState, candidates: Sequence[Candidates]
    ) -> Pool:
        pool = merge(candidates, model.n_items)
        for f in self.filters:
            pool = f.apply(model, state, pool)
        return pool

    def variant(
        self,
        scorer: Scorer,
        rerank: RerankParams,
        sources: list[CandidateSource] | None = None,
    ) -> FeedPipeline:
        """This pipeline with another scorer and re-ranker (an experiment's variant), and
        other sources if given; the same filters and proposal cache. A proposal depends
        on neither the scorer nor the re-ranker, and the cache keeps each user's with the
        sources that made it, so it never hands one source set's to another."""
        twin = copy.copy(self)
        twin.scorer, twin.rerank = scorer, rerank
        if sources is not None:
            twin.sources = sources
        return twin

    def forget(self, user_id: str) -> None:
        """Drop what is kept for the user (proposals name their videos): an erasure."""
        self._proposals.drop(user_id)

    def run(
        self,
        model: RegionModel,
        state: UserState,
        n: int,
        rng: np.random.Generator,
        universe: np.ndarray | None = None,
        extra_filters: list[Filter] | None = None,
        backfill: int | None = None,
    ) -> RankedPage:
        """``backfill``: videos ranked past the page, spares for what the final checks
        (live catalogue, eligibility) may still drop; by default a quarter of the page,
        at least 2. Every pick of the diversity re-ranker costs, so not a whole page."""
        candidates = self._proposals.get(state, model, self.sources)
        if universe is not None:
            allowed = np.zeros(model.n_items, bool)
            allowed[universe] = True
            restricted = [_restrict(c, allowed) for c in candidates]
            candidates = (*restricted, Universe(universe).fetch(model, state))
        want = n + (max(2, n // 4) if backfill is None else backfill)
        pool = self._filtered(model, state, candidates)
        if universe is None and len(pool) < REFILL_BELOW * want:
            # the user has seen most of what the sources hold: go deeper into trending
            deeper = deeper_trending(model, state, REFILL_BY * want, self._refill_reason)
            candidates = (*candidates, deeper)
            pool = self._filtered(model, state, candidates)
        scores = self.scorer.score(model, state, pool)
        if extra_filters:
            # Costly checks (moderation reads the store) run on exactly what can reach
            # the page: the re-ranker's shortlist (rerank.diversify) and the exploration
            # candidates.
            reach = np.zeros(len(pool), bool)
            reach[np.argsort(-scores, kind="stable")[: shortlist_size(want)]] = True
            reach |= pool.is_from("fresh")
            pool, scores = pool.keep(reach), scores[reach]
            for f in extra_filters:
                before = pool.items  # ascending: merge() and keep() preserve that
                pool = f.apply(model, state, pool)
                scores = scores[np.searchsorted(before, pool.items)]
        order = diversify(model, pool, scores, want, self.rerank, state.recent)
        order = explore(model, pool, order, n, self.rerank, rng, state.recent)
        order = separate_creators(model.creator[pool.items].tolist(), order)
        return RankedPage(pool=pool, order=order, scores=scores)


MAX_SOURCE_SETS = 16  # source sets a proposal cache shares one tuple of between entries


def configured_pipeline(
    feed: FeedConfig, scorer: Scorer, proposal_cache_users: int | None = None
) -> FeedPipeline:
    """The profiled feed's pipeline as ``[feed]`` sets it up (``sources``, ``rerank``, the
    proposal cache's size unless given), ranking with ``scorer``."""
    return FeedPipeline(
        sources=configured_sources(feed.sources),
        scorer=scorer,
        rerank=feed.rerank,
        proposal_cache_users=(
            feed.proposal_cache_users if proposal_cache_users is None else proposal_cache_users
        ),
    )


class ProposalCache:
    """What the sources proposed for a user, kept for the user's next pages and states.

    A proposal depends on the model and on what its source reads of the state
    (``CandidateSource.inputs``), so reusing it while both are unchanged is exact; what
    was served since is filtered later, on every request. A new event builds a new
    state, but a skip leaves the positives as they were, and with them the costly
    proposals (co-engagement, embedding): only the others are fetched again. Bounded: ~9
    KB per user on KuaiRec-EAR, ~90 MB at the default 10,000 (least recently used
    evicted; an erased user's at once, ``drop``). What ``get`` returns is shared with the
    pages and orders ranked from it."""

    def __init__(self, max_users: int = 10_000) -> None:
        self.max_users = max_users
        self._entries: OrderedDict[str, _Proposed] = OrderedDict()
        self._lock = threading.Lock()
        # one tuple per source set (control's, each variant's) for all entries, not one each
        self._sources: dict[tuple[CandidateSource, ...], tuple[CandidateSource, ...]] = {}

    def get(
        self, state: UserState, model: RegionModel, sources: Sequence[CandidateSource]
    ) -> tuple[Candidates, ...]:
        user_id, sources = state.user_id, tuple(sources)
        known = self._sources.get(sources)
        if known is not None:
            sources = known
        else:
            if len(self._sources) >= MAX_SOURCE_SETS:  # experiments reloaded many times
                self._sources.clear()
            self._sources[sources] = sources
        with self._lock:
            before = self._entries.get(user_id)
            if before is not None and (before.model is not model or before.sources != sources):
                before = None
            if before is not None and before.state == state.serial:
                self._entries.move_to_end(user_id)
                return before.found
        inputs = tuple(s.inputs(state) for s in sources)
        found = tuple(
            before.found[k]
            if before is not None and key is not None and before.inputs[k] == key
            else s.fetch(model, state)
            for k, (s, key) in enumerate(zip(sources, inputs, strict=True))
        )
        with self._lock:
            self._entries[user_id] = _Proposed(state.serial, model, sources, inputs, found)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)
        return found

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)


@dataclass(slots=True)
class _Proposed:
    state: int  # the serial of the state ``found`` was fetched or last reused for
    model: RegionModel
    sources: tuple[CandidateSource, ...]
    inputs: tuple[Hashable | None, ...]  # per source, what it read of that state
    found: tuple[Candidates, ...]


def _restrict(c: Candidates, allowed: np.ndarray) -> Candidates:
    rows = np.nonzero(allowed[c.items])[0]
    return Candidates(c.source, c.items[rows], c.scores[rows], lambda r: c.explain(int(rows[r])))
