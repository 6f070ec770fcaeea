"""The KuaiRec-EAR offline protocol, run on a real deployment.

1. A fresh deployment is built and KuaiRec-EAR imported through the real importer:
   train and valid positives become events, the test split becomes held-out labels.
2. The engine trains with ``fyp train``'s code path; the peers fit on the very same
   events, read back from the region stores (never from the test labels).
3. For each test user the engine ranks all test videos through ``FeedService.feed`` —
   the code path of ``GET /v1/users/{id}/feed`` — restricted to the test videos and
   without recording anything; peers score the same videos.
4. Metrics come from the held-out labels only.

With several regions, every model (engine and peers) learns per region, from that
region's users only; the default single region makes results comparable with the
published single-model numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from fyp.evaluation.baselines import PEERS, Recommender
from fyp.evaluation.metrics import (
    coverage,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    recall_at_k,
    summarise,
)
from fyp.events.schema import EventType
from fyp.feed.service import FeedService, encode_cursor
from fyp.models.training import (
    LikeLedger,
    TrainParams,
    event_weight,
    train_and_publish,
    without,
)
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment
from fyp.storage import Store

TOP_K = 50
Log = Callable[[str], None]


@dataclass
class RegionData:
    """One region's training matrix (from its events) and its test users."""

    region: str
    users: list[str]
    user_index: dict[str, int]
    x: sp.csr_matrix
    test: dict[str, set[str]] = field(default_factory=dict)
    # videos no method may rank for a test user (what they already saw, where the
    # protocol holds those out of the relevant set: fyp.evaluation.temporal); the
    # engine's own seen filter removes them from its feed
    seen: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Protocol:
    deployment: Deployment
    video_ids: list[str]
    video_index: dict[str, int]
    universe: list[str]
    regions: list[RegionData]
    category: dict[str, str]
    train_counts: dict[str, float]
    n_train_users: int


TestReader = Callable[[str, Store], tuple[dict[str, set[str]], set[str]]]
"""(region, store) -> (each test user's relevant videos, the region's test videos)."""


def build_protocol(deployment: Deployment, read_test: TestReader, log: Log = print) -> Protocol:
    """Training matrices read back from the region stores, plus each region's test set.

    Protocols differ only in where their held-out test set lives (``read_test``)."""
    video_ids = sorted({v.video_id for s in deployment.stores.values() for v in s.iter_videos()})
    video_index = {v: n for n, v in enumerate(video_ids)}
    category: dict[str, str] = {}
    for store in deployment.stores.values():
        for v in store.iter_videos():
            category.setdefault(v.video_id, v.categories[0] if v.categories else "")
    regions: list[RegionData] = []
    counts = np.zeros(len(video_ids))
    n_users = 0
    universe: set[str] = set()
    for name, store in deployment.stores.items():
        users: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        ledger: LikeLedger[tuple[str, str], int] = (
            LikeLedger()
        )  # as training: a like taken back is none
        for e in store.iter_events():
            if e.type == EventType.unlike:
                ledger.unlike((e.user_id, e.video_id), e)
            elif event_weight(e) > 0 and e.video_id in video_index:
                if e.type == EventType.like:
                    ledger.like((e.user_id, e.video_id), e, len(rows))
                rows.append(users.setdefault(e.user_id, len(users)))
                cols.append(video_index[e.video_id])
        gone = {at for _, at in ledger.taken_back()}
        rows, cols = without(rows, gone), without(cols, gone)
        test, region_universe = read_test(name, store)
        universe |= {v for v in region_universe if v in video_index}
        for uid in sorted(test, key=lambda u: (len(u), u)):
            users.setdefault(uid, len(users))
        x = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(video_ids))
        )
        x.data[:] = 1.0  # repeated positives count once
        counts += np.asarray((x > 0).sum(axis=0)).ravel()
        n_users += int((np.asarray(x.sum(axis=1)).ravel() > 0).sum())
        regions.append(RegionData(name, list(users), users, x.tocsr(), test))
        log(f"region {name}: {x.nnz:,} training positives, {len(test):,} test users")
    return Protocol(
        deployment=deployment,
        video_ids=video_ids,
        video_index=video_index,
        universe=sorted(universe, key=lambda v: (len(v), v)),
        regions=regions,
        category=category,
        train_counts={v: float(c) for v, c in zip(video_ids, counts, strict=True) if c > 0},
        n_train_users=n_users,
    )


def prepare(deployment: Deployment, log: Log = print) -> Protocol:
    """KuaiRec-EAR: the test split is stored as held-out labels in each user's home store."""

    def read_test(region: str, store: Store) -> tuple[dict[str, set[str]], set[str]]:
        test: dict[str, set[str]] = {}
        for label in store.iter_labels("kuairec-ear", "test"):
            test.setdefault(label.user_id, set()).add(label.video_id)
        return test, {v for videos in test.values() for v in videos}

    return build_protocol(deployment, read_test, log)


PER_USER = ("ndcg@10", "recall@10", "recall@50", "recall@50_of_all", "diversity@10", "novelty@10")
"""The offline figures that are a mean over users (each has a value per user)."""


def per_user(lists: dict[str, list[str]], protocol: Protocol) -> dict[str, list[float]]:
    """Each per-user figure (``PER_USER``) of every ranked top-50 list, in ``lists``'
    order (the users' order is the same for every method: :func:`rank_engine`)."""
    truth = {u: rel for r in protocol.regions for u, rel in r.test.items()}
    out: dict[str, list[float]] = {k: [] for k in PER_USER}
    for user, ranked in lists.items():
        relevant = truth[user]
        out["ndcg@10"].append(ndcg_at_k(ranked, dict.fromkeys(relevant, 1.0), 10))
        out["recall@10"].append(recall_at_k(ranked, relevant, 10))
        out["recall@50"].append(recall_at_k(ranked, relevant, 50))
        out["recall@50_of_all"].append(recall_at_k(ranked, relevant, 50, of_all=True))
        out["diversity@10"].append(intra_list_diversity(ranked, protocol.category, 10))
        out["novelty@10"].append(novelty(ranked, protocol.train_counts, protocol.n_train_users, 10))
    return out


def score_lists(
    lists: dict[str, list[str]], protocol: Protocol, values: dict[str, list[float]] | None = None
) -> dict[str, float]:
    """Every offline metric over the ranked top-50 lists of the test users (``values``:
    their :func:`per_user` figures, if already computed)."""
    values = per_user(lists, protocol) if values is None else values
    mean = {k: round(summarise(v), 4) for k, v in values.items()}
    return {
        **{k: mean[k] for k in PER_USER[:4]},
        "coverage@10": round(coverage(list(lists.values()), len(protocol.universe), 10), 4),
        **{k: mean[k] for k in PER_USER[4:]},
        **{k: v for k, v in mean.items() if k not in PER_USER},
        "users": len(lists),
    }


def rank_engine(protocol: Protocol, service: FeedService, seed: int = 0) -> dict[str, list[str]]:
    """Each test user's top-K from the served feed. The cursor of a session numbered
    ``seed`` makes exploration's draws repeatable (a feed without a cursor starts a
    session numbered from the clock)."""
    cursor = encode_cursor(0, seed)
    lists: dict[str, list[str]] = {}
    for region in protocol.regions:
        for user in sorted(region.test):
            page = service.feed(
                user, n=TOP_K, cursor=cursor, record=False, universe=protocol.universe
            )
            lists[user] = [item.video_id for item in page.items]
    return lists


def rank_peer(
    protocol: Protocol, make: Callable[[int], Recommender], seed: int
) -> dict[str, list[str]]:
    universe = np.asarray([protocol.video_index[v] for v in protocol.universe])
    position = {v: n for n, v in enumerate(protocol.universe)}
    lists: dict[str, list[str]] = {}
    for region in protocol.regions:
        model = make(seed).fit(region.x)  # per region: peers respect residency too
        for user in sorted(region.test):
            scores = model.scores(region.user_index[user], universe)
            order = np.argsort(-scores, kind="stable")
            seen = [position[v] for v in region.seen.get(user, ()) if v in position]
            if seen:  # what the user already saw is not theirs to rank
                order = order[~np.isin(order, seen)]
            lists[user] = [protocol.video_ids[i] for i in universe[order[:TOP_K]]]
    return lists


def train_engine(deployment: Deployment, seed: int = 0) -> dict[str, float]:
    """Train every region with ``fyp train``'s settings but the seed (ALS's start, the
    ranker's sample of users): ``fyp eval --seed`` seeds the engine as it seeds the peers."""
    seconds: dict[str, float] = {}
    params = TrainParams(seed=seed)
    for region in deployment.regions:
        started = time.perf_counter()
        train_and_publish(
            deployment.store(region),
            deployment.config.region_dir(region),
            params=params,
            consent=consent_policy(deployment.config, region),
        )
        seconds[region] = round(time.perf_counter() - started, 2)
    return seconds


def run_offline(
    protocol: Protocol,
    seed: int = 0,
    methods: list[str] | None = None,
    log: Log = print,
    peers: Mapping[str, Callable[[int], Recommender]] = PEERS,
) -> dict[str, Any]:
    """Rank with the engine and each peer (``peers``: name -> factory of the seed); return
    metrics per method, their per-user values (``per_user``, for
    :mod:`fyp.evaluation.uncertainty`) and timings."""
    out = Scored()
    started = time.perf_counter()
    service = FeedService(protocol.deployment)
    if methods is None or "fyp" in methods:
        out.add("fyp", rank_engine(protocol, service, seed), protocol, started, log)
    for name, factory in peers.items():
        if methods is not None and name not in methods:
            continue
        started = time.perf_counter()
        out.add(name, rank_peer(protocol, factory, seed), protocol, started, log)
    return out.to_dict()


class Scored:
    """Metrics, per-user values and timings of the methods an offline run ranked."""

    def __init__(
        self, extra: Callable[[dict[str, list[str]]], dict[str, list[float]]] | None = None
    ) -> None:
        self.extra = extra  # more per-user figures (the official protocol's graded NDCG)
        self.metrics: dict[str, dict[str, float]] = {}
        self.per_user: dict[str, dict[str, list[float]]] = {}
        self.seconds: dict[str, float] = {}

    def add(
        self,
        method: str,
        lists: dict[str, list[str]],
        protocol: Protocol,
        started: float,
        log: Log,
    ) -> None:
        values = per_user(lists, protocol)
        if self.extra is not None:
            values.update(self.extra(lists))
        self.metrics[method] = score_lists(lists, protocol, values)
        self.per_user[method] = values
        self.seconds[method] = round(time.perf_counter() - started, 2)
        log(f"{method}: {self.metrics[method]}")

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "per_user": self.per_user, "seconds": self.seconds}
