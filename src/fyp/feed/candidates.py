"""Candidate sources: each proposes up to ``quota`` videos with a score and a reason.

Sources never look at another region's data: they read only the region model and
the user's state. Each returns item indices into the region catalogue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel


@dataclass
class Candidates:
    source: str
    items: np.ndarray  # int64 catalogue indices
    scores: np.ndarray  # float32, higher is better, comparable within a source only
    reasons: list[str]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (ties broken by index)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def _caption(model: RegionModel, item: int) -> str:
    return str(model.video_ids[item])


class CandidateSource(ABC):
    """One way of finding videos for a user; ``quota`` caps how many it proposes."""

    name: str = "source"

    def __init__(self, quota: int) -> None:
        self.quota = quota

    @abstractmethod
    def fetch(self, model: RegionModel, state: UserState) -> Candidates: ...


class CoEngagement(CandidateSource):
    """Videos engaged with by the same people as the user's recent positives (item-CF)."""

    name = "co_engagement"

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        if state.is_new:
            return Candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32), [])
        recency = 0.9 ** np.arange(len(state.positives), dtype=np.float32)
        weights = state.positive_weights * recency
        nbr = model.nbr_idx[state.positives]
        sims = model.nbr_sim[state.positives] * weights[:, None]
        valid = nbr >= 0
        cands = nbr[valid]
        contrib = sims[valid]
        anchors = np.broadcast_to(state.positives[:, None], nbr.shape)[valid]
        scores = np.zeros(model.n_items, np.float32)
        np.add.at(scores, cands, contrib)
        items = _top(scores, self.quota)
        items = items[scores[items] > 0]
        # explain each candidate by the recent positive that contributed most to it
        order = np.lexsort((-contrib, cands))
        first = np.unique(cands[order], return_index=True)
        best_anchor = dict(zip(first[0].tolist(), anchors[order][first[1]].tolist(), strict=True))
        reasons = [f"because you liked video {_caption(model, best_anchor[int(i)])}" for i in items]
        return Candidates(self.name, items, scores[items], reasons)


class EmbeddingRetrieval(CandidateSource):
    """Nearest videos to the user's vector (learned, or folded in from recent events)."""

    name = "embedding"

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        vector = model.user_vector(state.user_id, state.positives)
        if vector is None:
            return Candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32), [])
        scores = model.item_factors @ vector
        items = _top(scores, self.quota)
        return Candidates(
            self.name, items, scores[items], ["similar to what you watch"] * len(items)
        )


class Trending(CandidateSource):
    """The region's most engaged-with videos, decayed by age, normalised per user."""

    name = "trending"

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        items = model.trending_order[: self.quota].astype(np.int64)
        return Candidates(
            self.name, items, model.popularity[items], ["popular in your region"] * len(items)
        )


class Following(CandidateSource):
    """Newest videos from creators the user follows."""

    name = "following"

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        if not state.followed_creators:
            return Candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32), [])
        mask = np.isin(model.creator, list(state.followed_creators))
        items = np.nonzero(mask)[0]
        created = model.created_at_ms[items].astype(np.float64)
        order = np.argsort(-created, kind="stable")[: self.quota]
        items = items[order]
        reasons = [
            f"new from {model.creator_ids[model.creator[i]]}, a creator you follow" for i in items
        ]
        return Candidates(
            self.name, items.astype(np.int64), created[order].astype(np.float32), reasons
        )


class Fresh(CandidateSource):
    """Recent videos with few impressions: exploration so new videos get a chance."""

    name = "fresh"

    def __init__(self, quota: int, max_impressions: int = 50) -> None:
        super().__init__(quota)
        self.max_impressions = max_impressions

    def fetch(self, model: RegionModel, state: UserState) -> Candidates:
        few = np.nonzero(model.impressions <= self.max_impressions)[0]
        if len(few) == 0:
            return Candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32), [])
        created = model.created_at_ms[few].astype(np.float64)
        order = _top(created, self.quota)
        items = few[order].astype(np.int64)
        return Candidates(
            self.name, items, created[order].astype(np.float32), ["new on fyp"] * len(items)
        )


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
            return Candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32), [])
        per = max(1, self.quota // len(liked))
        items: list[np.ndarray] = []
        reasons: list[str] = []
        for _, c in liked:
            top = model.category_orders.get(c, np.zeros(0, np.int32))[:per]
            items.append(top.astype(np.int64))
            reasons += [f"because you watch {model.category_names[c]}"] * len(top)
        all_items = np.concatenate(items)
        return Candidates(self.name, all_items, model.popularity[all_items], reasons)


def default_sources() -> list[CandidateSource]:
    return [
        CoEngagement(200),
        EmbeddingRetrieval(200),
        Trending(300),
        Following(50),
        Fresh(30),
        CategoryInterest(90),
    ]
