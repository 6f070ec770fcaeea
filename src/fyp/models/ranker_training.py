"""Build leak-free training rows for the ranker's heads and train them.

Features come from models rebuilt on each user's earlier positives only; labels are
the objectives observed afterwards (see :mod:`fyp.models.ranker`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from fyp.models.ranker import (
    OBJECTIVES,
    FeatureInputs,
    category_shares,
    features,
    sample_rows,
    split_by_time,
    train_heads,
)
from fyp.models.region_model import tag_bitmasks

if TYPE_CHECKING:
    from fyp.models.training import Interactions, TrainParams

TRAINING_USERS = 3000
CANDIDATES_PER_SOURCE = 30
RECENT = 30  # as many positives as the feed's user state keeps (feed.state.RECENT_POSITIVES)
RECENCY = 0.9


def _none() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class FollowHistory:
    """Who followed which creator when, as training can know it, by the store's rule
    (:mod:`fyp.catalog.follow_order`: of a user's actions on a creator the latest by
    time wins, then the later arrival): follow and unfollow events (in seq order), the
    start of each row of the region's ``follows`` table (API follows make no event) and
    each pair's latest action (``follow_actions``: an API unfollow's only trace). Without
    it the ``followed_creator`` feature was 0 in every training row, so the heads never
    learned what serving tells them about follows."""

    ev_user: np.ndarray
    ev_creator: np.ndarray
    ev_ts: np.ndarray
    ev_on: np.ndarray  # True: follow, False: unfollow
    row_user: np.ndarray
    row_creator: np.ndarray
    row_since: np.ndarray
    act_user: np.ndarray = field(default_factory=_none)
    act_creator: np.ndarray = field(default_factory=_none)
    act_ms: np.ndarray = field(default_factory=_none)
    act_on: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def at(self, cut: np.ndarray) -> dict[int, np.ndarray]:
        """The creators each user followed just before ``cut[user]``: of the actions
        before then, the latest (by time; at the same time a row's start after the
        events, the pair's recorded latest action after both: it arrived last, or is
        one of them) was a follow."""
        ts = np.concatenate([self.ev_ts, self.row_since, self.act_ms]).astype(np.int64)
        kind = np.repeat([0, 1, 2], [len(self.ev_ts), len(self.row_since), len(self.act_ms)])
        users = np.concatenate([self.ev_user, self.row_user, self.act_user]).astype(np.int64)
        creators = np.concatenate([self.ev_creator, self.row_creator, self.act_creator])
        on = np.concatenate([self.ev_on, np.ones(len(self.row_since), bool), self.act_on])
        last: dict[tuple[int, int], bool] = {}
        for n in np.lexsort((kind, ts)):  # stable: events keep their seq order
            u = users[n]
            if ts[n] < cut[u]:
                last[int(u), int(creators[n])] = bool(on[n])
        out: dict[int, list[int]] = {}
        for (u, c), followed in last.items():
            if followed:
                out.setdefault(u, []).append(c)
        return {u: np.asarray(sorted(cs), np.int64) for u, cs in out.items()}


def follow_history(
    data: Interactions,
    creator: np.ndarray,
    creator_index: dict[str, int],
    rows: Iterable[tuple[str, str, int]],
    actions: Iterable[tuple[str, str, int, bool]] = (),
) -> FollowHistory:
    """``data``'s follow events with each video's creator (a creator's follow of their
    own video and videos without a creator dropped, as the store's trigger does), the
    table's ``rows`` (user, creator, since) and the pairs' latest ``actions`` (user,
    creator, time, following) of users ``data`` learns from."""
    own = np.asarray([creator_index.get(u, -1) for u in data.users], np.int64)
    users = np.asarray(data.fol_u, np.int64)
    creators = creator[np.asarray(data.fol_i, np.int64)].astype(np.int64)
    keep = (creators >= 0) & (creators != own[users]) if len(users) else np.zeros(0, bool)

    def known(found: Iterable[tuple[str, str, int, bool]]) -> np.ndarray:
        return np.asarray(
            [
                (data.user_index[u], creator_index[c], t, on)
                for u, c, t, on in found
                if u in data.user_index and c in creator_index
            ],
            np.int64,
        ).reshape(-1, 4)

    table = known((u, c, since, True) for u, c, since in rows)
    latest = known(actions)
    return FollowHistory(
        users[keep],
        creators[keep],
        np.asarray(data.fol_ts, np.int64)[keep],
        np.asarray(data.fol_on, bool)[keep],
        table[:, 0],
        table[:, 1],
        table[:, 2],
        latest[:, 0],
        latest[:, 1],
        latest[:, 2],
        latest[:, 3].astype(bool),
    )


def recent_history(
    users: np.ndarray, items: np.ndarray, ts: np.ndarray, n_users: int
) -> list[np.ndarray]:
    """Each user's latest distinct positives, newest first, as the feed state sees them."""
    order = np.lexsort((-ts, users))
    su, si = users[order], items[order]
    bounds = np.searchsorted(su, np.arange(n_users + 1))
    out = []
    for u in range(n_users):
        seq = si[bounds[u] : bounds[u + 1]]
        _, first = np.unique(seq, return_index=True)
        out.append(seq[np.sort(first)][:RECENT])
    return out


def inputs_for(
    history: np.ndarray,
    vector: np.ndarray | None,
    category: np.ndarray,
    n_categories: int,
    followed: np.ndarray,
) -> FeatureInputs:
    """Feature inputs from a newest-first history: shared by training and serving."""
    return FeatureInputs(
        history=history,
        weights=(RECENCY ** np.arange(len(history))).astype(np.float32),
        vector=vector,
        category_share=category_shares(history, category, n_categories),
        followed=followed,
        activity=len(history),
    )


def fit_ranker(
    data: Interactions,
    meta: dict[str, np.ndarray],
    n_items: int,
    params: TrainParams,
    follows: FollowHistory | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Heads (LightGBM model text per objective) and a summary of what they saw;
    ``follows`` sets the ``followed_creator`` feature as of each user's cut."""
    from fyp.models.training import cooccurrence_neighbours, fit_als, serving_popularity

    started = time.perf_counter()
    users = np.asarray(data.u, np.int64)
    items = np.asarray(data.i, np.int64)
    ts = np.asarray(data.ts, np.int64)
    weights = np.asarray(data.w, np.float64)
    history, target = split_by_time(users, items, ts)
    summary: dict[str, Any] = {"target_positives": int(target.sum())}
    if not target.any():
        summary["heads"] = []
        return {}, summary

    n_users = len(data.users)
    hx = sp.csr_matrix(
        (weights[history], (users[history], items[history])), shape=(n_users, n_items)
    )
    # the serving definition (activity exponent, decay); a plain count here taught the
    # heads thresholds that serving's values never cross (KuaiRec-EAR test NDCG@10 of
    # the heads 0.591 -> 0.606)
    popularity = serving_popularity(
        users[history], items[history], weights[history], ts[history], hx.shape, params
    )
    nbr_idx, nbr_sim = cooccurrence_neighbours(hx, params.neighbours)
    user_f, item_f = fit_als(hx, replace(params, als_iterations=max(4, params.als_iterations // 2)))
    trending = np.argsort(-popularity, kind="stable")[:CANDIDATES_PER_SOURCE]
    # item statistics over the history period, defined exactly as the serving model's
    cut = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(cut, users[target], ts[target])
    imp_u = np.asarray(data.imp_u, np.int64)
    early = np.asarray(data.imp_ts, np.int64) < cut[imp_u] if len(imp_u) else np.zeros(0, bool)
    impressions = np.bincount(np.asarray(data.imp_i, np.int64)[early], minlength=n_items).astype(
        np.float64
    )
    likes = np.bincount(items[history], minlength=n_items).astype(np.float64)
    tag_bits = tag_bitmasks(meta["tag_ptr"], meta["tag_idx"])
    n_categories = int(meta["category"].max()) + 1 if len(meta["category"]) else 0

    # objective events from each user's target period on are labels
    obj_u = np.asarray(data.obj_u, np.int64)
    obj_i = np.asarray(data.obj_i, np.int64)
    obj_k = np.asarray(data.obj_k, np.int64)
    later = np.asarray(data.obj_ts, np.int64) >= cut[obj_u] if len(obj_u) else np.zeros(0, bool)

    histories = recent_history(users[history], items[history], ts[history], n_users)
    followed = follows.at(cut) if follows is not None else {}
    no_one = np.zeros(0, np.int64)
    newest_first = (
        np.argsort(-meta["created_at_ms"], kind="stable") if followed else np.zeros(0, np.int64)
    )
    label_sets: dict[int, dict[int, set[int]]] = {}
    for u, i, k in zip(obj_u[later], obj_i[later], obj_k[later], strict=True):
        label_sets.setdefault(int(u), {}).setdefault(int(k), set()).add(int(i))

    train_users = np.asarray(sorted(label_sets))
    train_users = train_users[sample_rows(len(train_users), TRAINING_USERS, params.seed)]
    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for u in train_users:
        hist = histories[u]
        if len(hist) == 0:
            continue
        vector = user_f[u]
        creators = followed.get(int(u), no_one)
        inputs = inputs_for(hist, vector, meta["category"], n_categories, creators)
        everything = hx.indices[hx.indptr[u] : hx.indptr[u + 1]]
        # exactly what serving proposes: the region's trending and the history's neighbours.
        # Adding held-out positives that no source proposes would teach the heads that
        # unpopular means good (the negatives are popular by construction).
        neighbours = nbr_idx[hist][:, :5].ravel()
        k = min(CANDIDATES_PER_SOURCE, n_items - 1)
        nearest = np.argpartition(-(item_f @ vector), k)[: k + 1]
        # and, as serving's following source, the followed creators' newest videos
        theirs = (
            newest_first[np.isin(meta["creator"][newest_first], creators)]
            if len(creators)
            else no_one
        )
        cands = np.unique(
            np.r_[
                trending,
                neighbours[neighbours >= 0][:CANDIDATES_PER_SOURCE],
                nearest,
                theirs[:CANDIDATES_PER_SOURCE],
            ]
        ).astype(np.int64)
        cands = cands[~np.isin(cands, everything)]  # the feed never re-shows history
        if len(cands) == 0:
            continue
        rows.append(
            features(
                inputs,
                cands,
                popularity,
                impressions,
                likes,
                nbr_idx,
                nbr_sim,
                item_f,
                meta["category"],
                meta["creator"],
                tag_bits,
            )
        )
        y = np.zeros((len(cands), len(OBJECTIVES)), np.float32)
        for k, seen in label_sets[int(u)].items():
            y[:, k] = np.isin(cands, list(seen))
        labels.append(y)
    if not rows:
        summary["heads"] = []
        return {}, summary
    x = np.vstack(rows)
    y_all = np.vstack(labels)
    heads = train_heads(
        x,
        {name: np.ascontiguousarray(y_all[:, k]) for k, name in enumerate(OBJECTIVES)},
        seed=params.seed,
    )
    summary.update(
        {
            "heads": sorted(heads),
            "training_rows": len(x),
            "training_users": len(rows),
            "users_following": sum(1 for u in train_users if int(u) in followed),
            "positives_per_objective": {
                name: int(y_all[:, k].sum()) for k, name in enumerate(OBJECTIVES)
            },
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return heads, summary
