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
    # per share of the user's positives the model has not learned yet (this session's
    # likes), by category: a new user's likes show on page 1 (5 likes of pets: 2 pet
    # videos on the demo's first page, none at 0). Offline protocols never have any
    fresh_category: float = 1.0


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
        vector = state.vector(model)
        if vector is not None:
            # in float64: for a vector nearly orthogonal to the pool the float32 products
            # cancel ~2,000-fold and round otherwise at another row, and the division by
            # the largest carries that to the whole term (7e-5 of it: hypothesis, session 29)
            emb = model.item_factors[items].astype(np.float64) @ vector.astype(np.float64)
            s += w.embedding * emb / (np.abs(emb).max() + 1e-9)
        if state.category_affinity:
            aff = _shares(model, state.category_affinity, items)
            s += np.where(aff > 0, w.category * aff, w.skipped_category * aff)
        if state.fresh_affinity:
            s += w.fresh_category * _shares(model, state.fresh_affinity, items)
        if state.followed_creators:
            s += w.following * np.isin(model.creator[items], list(state.followed_creators))
        return s


def _shares(model: RegionModel, affinity: dict[int, float], items: np.ndarray) -> np.ndarray:
    """Each item's category's share of the user's affinity (signed, over the sum of its
    magnitudes); an item without a category reads the spare last slot, 0."""
    total = sum(abs(v) for v in affinity.values()) or 1.0
    per_category = np.zeros(len(model.category_names) + 1)
    for c, v in affinity.items():
        per_category[c] = v / total
    shares: np.ndarray = per_category[model.category[items]]
    return shares


DEFAULT_OBJECTIVE_WEIGHTS: dict[str, float] = {
    "long_play": 1.0,
    "like": 1.0,
    "share": 2.0,
    "follow": 2.0,
    "skip": -0.5,
}


class RankerScorer(Scorer):
    """Two stages: the cheap value model shortlists, the multi-objective heads decide.

    The final score of a shortlisted video is sum_h weight_h * P_h (the learned value
    model); videos outside the shortlist keep their cheap score, placed below every
    shortlisted one. Without trained heads (a region with too little data) the cheap
    value model is the ranking."""

    name = "multi_objective"

    def __init__(
        self,
        objective_weights: dict[str, float] | None = None,
        prior: ValueScorer | None = None,
        shortlist: int = 200,
    ) -> None:
        self.objective_weights = objective_weights or dict(DEFAULT_OBJECTIVE_WEIGHTS)
        self.prior = prior or ValueScorer()
        self.shortlist = shortlist

    def score(self, model: RegionModel, state: UserState, pool: Pool) -> np.ndarray:
        cheap = self.prior.score(model, state, pool)
        if model.heads is None or len(pool) == 0:
            return cheap
        from fyp.models.ranker import value

        # ties broken by video, not by the pool's order: the same candidates make the
        # same shortlist however the sources listed them
        top = np.lexsort((pool.items, -cheap))[: self.shortlist]
        x = head_features(model, state, pool.items[top])
        learned: np.ndarray = value(model.heads.predict(x), self.objective_weights, len(top))
        out: np.ndarray = cheap - cheap.max() - 1.0 - (learned.max() - learned.min())  # below top
        out[top] = learned
        return out


def head_features(model: RegionModel, state: UserState, items: np.ndarray) -> np.ndarray:
    """The learned heads' features of ``items`` for the user, from their state, as
    training builds its rows (``fyp.models.ranker_training.inputs_for``)."""
    from fyp.models.ranker import features
    from fyp.models.ranker_training import inputs_for

    inputs = inputs_for(
        state.positives,
        state.vector(model),
        model.category,
        len(model.category_names),
        np.asarray(sorted(state.followed_creators), np.int64),
    )
    return features(
        inputs,
        items,
        model.popularity,
        model.impressions,
        model.likes,
        model.nbr_idx,
        model.nbr_sim,
        model.item_factors,
        model.category,
        model.creator,
        model.tag_bits,
    )
