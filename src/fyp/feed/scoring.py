"""Scoring: turn a candidate pool into one value per video.

``ValueScorer`` is a weighted sum of per-objective signals, in the spirit of TikTok's
published value model (P(like)*V(like) + E(playtime)*V(playtime) + ...). Weights come
from config. Its signals today are engagement estimates from the trained region model
(normalised popularity, co-engagement, embedding affinity, category affinity, follows);
a learned multi-objective ranker plugs in behind the same ``Scorer`` base.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fyp.feed.pool import Pool
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel


class Scorer(ABC):
    name: str = "scorer"

    @abstractmethod
    def score(self, model: RegionModel, state: UserState, pool: Pool) -> np.ndarray: ...


@dataclass(frozen=True)
class ValueWeights:
    popularity: float = 1.0
    co_engagement: float = 0.1
    embedding: float = 0.05
    category: float = 0.05
    following: float = 1.0
    skipped_category: float = 0.2


class ValueScorer(Scorer):
    name = "value_model"

    def __init__(self, weights: ValueWeights | None = None) -> None:
        self.weights = weights or ValueWeights()

    def score(self, model: RegionModel, state: UserState, pool: Pool) -> np.ndarray:
        w = self.weights
        items = pool.items
        if len(items) == 0:
            return np.zeros(0, np.float64)
        s: np.ndarray = w.popularity * np.log(model.popularity[items].astype(np.float64) + 1e-6)
        co = pool.features.get("co_engagement")
        if co is not None:
            s += w.co_engagement * np.log1p(100.0 * co)
        vector = model.user_vector(state.user_id, state.positives)
        if vector is not None:
            emb = model.item_factors[items] @ vector
            s += w.embedding * emb / (np.abs(emb).max() + 1e-9)
        if state.category_affinity:
            total = sum(abs(v) for v in state.category_affinity.values()) or 1.0
            per_category = np.zeros(len(model.category_names) + 1)
            for c, v in state.category_affinity.items():
                per_category[c] = v / total
            aff = per_category[model.category[items]]  # category -1 reads the spare 0 slot
            s += np.where(aff > 0, w.category * aff, w.skipped_category * aff)
        if state.followed_creators:
            s += w.following * np.isin(model.creator[items], list(state.followed_creators))
        return s
