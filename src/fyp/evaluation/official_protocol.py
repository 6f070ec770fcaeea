"""The official KuaiRec protocol: train on the big matrix, test on the small one.

KuaiRec's authors evaluate on the fully observed small matrix (1,411 users x 3,327
videos, nearly every pair watched) after training on the big matrix. Here:

1. The official layout is imported with ``split_protocol=True``
   (:func:`fyp.datasets.official.import_kuairec`): big-matrix rows whose pair is also in
   the small matrix are dropped, the rest become play events; the small matrix becomes
   ``regions/<region>/datasets/kuairec-small.csv`` (``user_id,video_id,watch_ratio``)
   per home region, its positives (``watch_ratio >= 2``) also stored as labels.
2. The engine and the peers learn from the same events, exactly as in
   :mod:`fyp.evaluation.offline` (a play counts as a positive when it is a long play,
   :func:`fyp.models.training.event_weight`).
3. Each test user (a small-matrix user with at least one positive) gets every
   small-matrix video ranked; relevant = the user's positives.
4. Metrics: those of the offline protocol (binary relevance), plus ``ndcg@10_graded``:
   NDCG@10 with gain ``min(watch_ratio, 5)`` over *all* of the user's small-matrix
   pairs, so a video watched 1.5 times still counts for something and one watched 40
   times does not dominate.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fyp.datasets.official import DATASET, POSITIVE_RATIO, TEST_COLUMNS, TEST_FILE
from fyp.errors import InvalidRequest
from fyp.evaluation.baselines import PEERS, Recommender
from fyp.evaluation.metrics import ndcg_at_k, summarise
from fyp.evaluation.offline import (
    Log,
    Protocol,
    Scored,
    build_protocol,
    per_user,
    rank_engine,
    rank_peer,
    score_lists,
)
from fyp.evaluation.simulator import serving_threads
from fyp.feed.service import FeedService
from fyp.regions.deployment import Deployment
from fyp.storage import Store

MAX_GAIN = 5.0
GRADED = "ndcg@10_graded"


def graded_gain(watch_ratio: float) -> float:
    """The graded relevance of a watched pair: min(watch_ratio, 5)."""
    return min(watch_ratio, MAX_GAIN)


def small_matrix_path(deployment: Deployment, region: str) -> Path:
    return deployment.config.region_dir(region) / "datasets" / TEST_FILE


def read_test_set(path: Path) -> dict[str, dict[str, float]]:
    """``{user: {video: watch_ratio}}`` of one region's small-matrix file."""
    if not path.is_file():
        raise InvalidRequest(
            f"{path} is missing: import the official layout with split_protocol "
            "(fyp import kuairec --split-protocol) before evaluating it",
            path=str(path),
        )
    out: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if tuple(header) != TEST_COLUMNS:
            raise InvalidRequest(
                f"{path}: expected columns {','.join(TEST_COLUMNS)}, found {','.join(header)}",
                path=str(path),
            )
        for user, video, ratio in reader:
            try:
                value = float(ratio)
            except ValueError:
                continue
            if math.isfinite(value):
                out.setdefault(user, {})[video] = value
    return out


def prepare_official(
    deployment: Deployment, log: Log = print
) -> tuple[Protocol, dict[str, dict[str, float]]]:
    """The offline :class:`Protocol` of the official layout, and each test user's gains.

    The universe is every small-matrix video; test users are small-matrix users with
    at least one positive (``watch_ratio >= 2``)."""
    gains: dict[str, dict[str, float]] = {}

    def read_test(region: str, store: Store) -> tuple[dict[str, set[str]], set[str]]:
        ratios = read_test_set(small_matrix_path(deployment, region))
        test: dict[str, set[str]] = {}
        for user, pairs in ratios.items():
            positives = {v for v, r in pairs.items() if r >= POSITIVE_RATIO}
            if positives:
                test[user] = positives
                gains[user] = {v: graded_gain(r) for v, r in pairs.items() if r > 0}
        log(
            f"region {region}: {sum(len(p) for p in ratios.values()):,} test pairs "
            f"({store.count_labels(DATASET):,} positive labels)"
        )
        return test, {v for pairs in ratios.values() for v in pairs}

    protocol = build_protocol(deployment, read_test, log)
    return protocol, gains


def graded_ndcg(lists: dict[str, list[str]], gains: dict[str, dict[str, float]], k: int) -> float:
    """Mean NDCG@k over the ranked users, gains = min(watch_ratio, 5) of their pairs."""
    return summarise(graded_per_user(lists, gains, k))


def graded_per_user(
    lists: dict[str, list[str]], gains: dict[str, dict[str, float]], k: int
) -> list[float]:
    return [ndcg_at_k(ranked, gains.get(u, {}), k) for u, ranked in lists.items()]


def score_official(
    lists: dict[str, list[str]], protocol: Protocol, gains: dict[str, dict[str, float]]
) -> dict[str, float]:
    return score_lists(lists, protocol, {**per_user(lists, protocol), **_graded(lists, gains)})


def _graded(
    lists: dict[str, list[str]], gains: dict[str, dict[str, float]]
) -> dict[str, list[float]]:
    return {GRADED: graded_per_user(lists, gains, 10)}


def run_official_offline(
    protocol: Protocol,
    gains: dict[str, dict[str, float]],
    seed: int = 0,
    methods: Sequence[str] | None = None,
    log: Log = print,
    peers: Mapping[str, Callable[[int], Recommender]] = PEERS,
) -> dict[str, Any]:
    """Rank with the engine and each peer (``peers``: name -> factory of the seed);
    metrics per method, per-user values and timings (as
    :func:`fyp.evaluation.offline.run_offline` returns them)."""
    out = Scored(extra=lambda lists: _graded(lists, gains))
    if methods is None or "fyp" in methods:
        started = time.perf_counter()
        with serving_threads(True):  # one BLAS thread, as fyp serve runs the feed
            lists = rank_engine(protocol, FeedService(protocol.deployment), seed)
        out.add("fyp", lists, protocol, started, log)
    for name, factory in peers.items():
        if methods is not None and name not in methods:
            continue
        started = time.perf_counter()
        out.add(name, rank_peer(protocol, factory, seed), protocol, started, log)
    return out.to_dict()
