"""Choose the ALS, BPR and EASE peers' settings on KuaiRec-EAR's train->valid split.

A peer with careless settings makes the engine look better than it is, so the peers'
settings are chosen the way the engine's are: on validation data, never on the test
block. Each setting is fit on ``train`` only; for each of the 1,411 test users with
valid rows it ranks the videos that have valid rows among those users (their own train
positives excluded) and scores their valid positives with NDCG@10 (the engine's metric
code). The test rows are read for the users' ids only. Prints one JSON line per
setting, best first; ``fyp.evaluation.baselines`` uses the best. A BPR fit is
stochastic (its valid NDCG moves ~20 % with the seed), so each BPR setting is the mean
over ``BPR_SEEDS`` seeds.

    python scripts/ear_peer_grid.py [--data PATH]      # ~3 min
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fyp.evaluation.baselines import ALSRecommender, BPRRecommender, EASERecommender, Recommender
from fyp.evaluation.metrics import ndcg_at_k

ROOT = Path(__file__).resolve().parents[1]
BPR_SEEDS = 4


def read(path: Path) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """(train, valid) matrices and the test users' ids."""
    rows: dict[str, tuple[list[int], list[int]]] = {"train": ([], []), "valid": ([], [])}
    test_users: set[int] = set()
    with path.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "test":
                test_users.add(int(r["user_id"]))
            else:
                rows[r["split"]][0].append(int(r["user_id"]))
                rows[r["split"]][1].append(int(r["video_id"]))
    shape = (
        1 + max(max(u) for u, _ in rows.values()) if rows else 0,
        1 + max(max(v) for _, v in rows.values()) if rows else 0,
    )
    out = []
    for users, videos in rows.values():
        m = sp.csr_matrix((np.ones(len(users)), (users, videos)), shape=shape)
        m.data[:] = 1.0
        out.append(m)
    return out[0], out[1], np.asarray(sorted(u for u in test_users if u < shape[0]))


def valid_ndcg(
    model: Recommender, train: sp.csr_matrix, valid: sp.csr_matrix, users: np.ndarray
) -> float:
    users = users[np.asarray(valid[users].sum(axis=1)).ravel() > 0]
    universe = np.unique(valid[users].nonzero()[1])
    values = []
    for u in users:
        seen = train.indices[train.indptr[u] : train.indptr[u + 1]]
        items = universe[~np.isin(universe, seen)]
        top = items[np.argsort(-model.scores(int(u), items), kind="stable")[:10]]
        relevant = valid.indices[valid.indptr[u] : valid.indptr[u + 1]]
        values.append(ndcg_at_k([str(v) for v in top], dict.fromkeys(map(str, relevant), 1.0), 10))
    return float(np.mean(values))


def grid() -> list[tuple[str, Callable[..., Recommender]]]:
    """(name, factory taking ``seed=``) per setting."""
    out: list[tuple[str, Callable[..., Recommender]]] = []
    for factors, reg in itertools.product((4, 8, 16, 32, 64, 128), (0.01, 0.1, 1.0)):
        out.append(
            (
                f"als factors={factors} regularization={reg} iterations=15",
                lambda f=factors, r=reg, seed=0: ALSRecommender(f, 15, seed, regularization=r),
            )
        )
    for factors, iterations, lr, reg in itertools.product(
        (8, 16, 64), (100, 200), (0.005, 0.01), (0.001, 0.01)
    ):
        out.append(
            (
                f"bpr factors={factors} iterations={iterations} learning_rate={lr} "
                f"regularization={reg}",
                lambda f=factors, i=iterations, lr=lr, r=reg, seed=0: BPRRecommender(
                    f, i, seed, learning_rate=lr, regularization=r
                ),
            )
        )
    for l2 in (50.0, 200.0, 500.0, 1000.0, 5000.0):
        out.append((f"ease l2={l2:g}", lambda r=l2, seed=0: EASERecommender(r)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    train, valid, users = read(args.data / "kuairec-ear" / "interactions.csv")
    results = []
    for name, make in grid():
        seeds = range(BPR_SEEDS if name.startswith("bpr") else 1)
        scores = [valid_ndcg(make(seed=s).fit(train), train, valid, users) for s in seeds]
        results.append({"setting": name, "valid_ndcg@10": round(float(np.mean(scores)), 4)})
    for r in sorted(results, key=lambda r: -float(r["valid_ndcg@10"])):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
