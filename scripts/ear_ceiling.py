"""How far can ranking by item popularity go on KuaiRec-EAR's fully observed test block?

A diagnostic of the data, not a method: it reads the test labels, so nothing it prints
may be used to choose a setting (settings are chosen on the train->valid split,
``scripts/ear_valid_split.py``). It prints NDCG@10 over the 1,411 test users for

- ``oracle``: every user gets the same list, ordered by how many test users like each
  video. This is the best any ranking that ignores who the user is can do;
- ``prior a=...``: the engine's popularity prior alone (sum over users of 1 / n_u^a,
  fit on train+valid), for a few activity exponents a.

The served feed adds personal terms, diversity and exploration on top of the prior
(docs/benchmarks.md compares). Run: ``python scripts/ear_ceiling.py [--data PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fyp.evaluation.metrics import ndcg_at_k

ROOT = Path(__file__).resolve().parents[1]
EXPONENTS = (0.0, 1.0, 1.5, 1.7, 2.0)


def matrices(path: Path) -> dict[str, sp.csr_matrix]:
    rows: dict[str, tuple[list[int], list[int]]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for record in csv.DictReader(f):
            users, videos = rows.setdefault(record["split"], ([], []))
            users.append(int(record["user_id"]))
            videos.append(int(record["video_id"]))
    n_users = 1 + max(max(u) for u, _ in rows.values())
    n_videos = 1 + max(max(v) for _, v in rows.values())
    out = {}
    for split, (users, videos) in rows.items():
        m = sp.csr_matrix(
            (np.ones(len(users)), (users, videos)), shape=(n_users, n_videos), dtype=np.float64
        )
        m.data[:] = 1.0
        out[split] = m
    return out


def ndcg_at_10(order: np.ndarray, test: sp.csr_matrix, users: np.ndarray) -> float:
    """Mean NDCG@10 (the engine's metric code) when every user gets ``order``."""
    top = [str(v) for v in order[:10]]
    values = [
        ndcg_at_k(
            top, dict.fromkeys(map(str, test.indices[test.indptr[u] : test.indptr[u + 1]]), 1.0), 10
        )
        for u in users
    ]
    return float(np.mean(values))


def prior(x: sp.csr_matrix, exponent: float) -> np.ndarray:
    activity = np.asarray(x.sum(axis=1)).ravel()
    weights = sp.diags(1.0 / np.power(np.maximum(activity, 1e-9), exponent))
    return np.asarray((weights @ x).sum(axis=0)).ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    m = matrices(args.data / "kuairec-ear" / "interactions.csv")
    test, fit = m["test"], m["train"] + m["valid"]
    fit.data[:] = 1.0
    users = np.unique(test.nonzero()[0])
    videos = np.unique(test.nonzero()[1])

    def ranked(scores: np.ndarray) -> np.ndarray:
        return videos[np.argsort(-scores[videos], kind="stable")]

    out = {"users": len(users), "videos": len(videos)}
    out["oracle"] = round(ndcg_at_10(ranked(np.asarray(test.sum(axis=0)).ravel()), test, users), 4)
    for a in EXPONENTS:
        out[f"prior a={a}"] = round(ndcg_at_10(ranked(prior(fit, a)), test, users), 4)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
