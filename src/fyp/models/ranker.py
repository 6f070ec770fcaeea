"""The multi-objective ranker: one LightGBM head per objective, combined by a value model.

Heads predict, for a user and a candidate video, the probability of each objective
(long play, like, share, follow, skip). The feed's final score is a weighted sum of
the heads (weights from ``fyp.toml``), as in TikTok's published value model
"P(like)·V(like) + E(playtime)·V(playtime) + ...".

Training is leak-free: each user's positives are split by time; the features come
from models rebuilt on the earlier part only, the labels from the later part.
Candidates for training are what serving would propose (popular videos and
co-engagement neighbours of the history) plus the held-out positives. A head is
trained only when its objective has enough positives in the region; the manifest
says which heads exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBJECTIVES: tuple[str, ...] = ("long_play", "like", "share", "follow", "skip")
FEATURES: tuple[str, ...] = (
    "log_popularity",
    "log_impressions",
    "like_rate",
    "co_engagement",
    "embedding",
    "category_affinity",
    "tag_overlap",
    "log_user_activity",
    "followed_creator",
)
MIN_POSITIVES = 50
HOLDOUT_SHARE = 0.2
MIN_USER_POSITIVES = 5


@dataclass
class FeatureInputs:
    """What feature computation needs about one user, independent of the candidates."""

    history: np.ndarray  # item indices of the user's positives, newest first
    weights: np.ndarray  # recency x event weight of each history item
    vector: np.ndarray | None  # user embedding
    category_share: np.ndarray  # per category (+1 spare slot for "none"): share of positives
    followed: np.ndarray  # creator indices the user follows
    activity: int


def features(
    inputs: FeatureInputs,
    items: np.ndarray,
    popularity: np.ndarray,
    impressions: np.ndarray,
    likes: np.ndarray,
    nbr_idx: np.ndarray,
    nbr_sim: np.ndarray,
    item_factors: np.ndarray,
    category: np.ndarray,
    creator: np.ndarray,
    tag_bits: np.ndarray,
) -> np.ndarray:
    """The feature matrix (len(items) x len(FEATURES)) of one user's candidates."""
    out = np.zeros((len(items), len(FEATURES)), np.float32)
    out[:, 0] = np.log(popularity[items] + 1e-6)
    out[:, 1] = np.log1p(impressions[items])
    out[:, 2] = likes[items] / (impressions[items] + 1.0)
    if len(inputs.history):
        nbr = nbr_idx[inputs.history]
        sims = nbr_sim[inputs.history] * inputs.weights[:, None]
        co = np.zeros(len(popularity), np.float32)
        valid = nbr >= 0
        np.add.at(co, nbr[valid], sims[valid])
        out[:, 3] = np.log1p(100.0 * co[items])
        recent_bits = np.bitwise_or.reduce(tag_bits[inputs.history[:10]])
        shared = tag_bits[items] & recent_bits
        out[:, 6] = np.array([bin(int(b)).count("1") for b in shared], np.float32)
    if inputs.vector is not None:
        out[:, 4] = item_factors[items] @ inputs.vector
    out[:, 5] = inputs.category_share[category[items]]
    out[:, 7] = np.log1p(inputs.activity)
    if len(inputs.followed):
        out[:, 8] = np.isin(creator[items], inputs.followed)
    return out


def category_shares(history: np.ndarray, category: np.ndarray, n_categories: int) -> np.ndarray:
    """Share of the user's positives per category; the last slot stands for 'no category'."""
    shares = np.zeros(n_categories + 1, np.float32)
    cats = category[history]
    cats = np.where(cats < 0, n_categories, cats)
    np.add.at(shares, cats, 1.0)
    return shares / max(len(history), 1)


def split_by_time(
    users: np.ndarray, items: np.ndarray, ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (history, target): each user's latest HOLDOUT_SHARE positives are
    targets, if the user has at least MIN_USER_POSITIVES; everything else is history."""
    order = np.lexsort((ts, users))
    sorted_users = users[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_users))[0] + 1]
    counts = np.diff(np.r_[starts, len(order)])
    target = np.zeros(len(users), bool)
    for start, count in zip(starts, counts, strict=True):
        if count < MIN_USER_POSITIVES:
            continue
        held = max(1, round(count * HOLDOUT_SHARE))
        target[order[start + count - held : start + count]] = True
    return ~target, target


def train_heads(
    x: np.ndarray, labels: dict[str, np.ndarray], seed: int, rounds: int = 120
) -> dict[str, str]:
    """One LightGBM binary model per objective with enough positives; model text by name."""
    import lightgbm as lgb

    heads: dict[str, str] = {}
    for name, y in labels.items():
        if int(y.sum()) < MIN_POSITIVES or int((1 - y).sum()) < MIN_POSITIVES:
            continue
        params = {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": seed,
            "deterministic": True,
            "num_threads": 1,
            "verbosity": -1,
        }
        data = lgb.Dataset(x, label=y, feature_name=list(FEATURES), free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=rounds)
        heads[name] = booster.model_to_string()
    return heads


class Heads:
    """Loaded heads for serving: ``predict`` gives P(objective) per candidate."""

    def __init__(self, texts: dict[str, str]) -> None:
        import lightgbm as lgb

        self.boosters = {name: lgb.Booster(model_str=text) for name, text in texts.items()}

    @property
    def names(self) -> list[str]:
        return sorted(self.boosters)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: np.asarray(b.predict(x, num_threads=1), np.float64)
            for name, b in self.boosters.items()
        }


def value(predictions: dict[str, np.ndarray], weights: dict[str, float], n: int) -> np.ndarray:
    """The value model: sum over heads of weight x prediction (missing heads count 0)."""
    total = np.zeros(n, np.float64)
    for name, p in predictions.items():
        total += weights.get(name, 0.0) * p
    return total


def sample_rows(n_users: int, cap: int, seed: int) -> np.ndarray:
    """Which users to build training rows for (all of them up to ``cap``)."""
    if n_users <= cap:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(seed).choice(n_users, cap, replace=False))
