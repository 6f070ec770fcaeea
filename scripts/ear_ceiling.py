"""How far can any ranking go on KuaiRec-EAR's fully observed test block?

A diagnostic of the data, not a method: it reads the test labels, so nothing it prints
may be used to choose a setting (settings are chosen on the train->valid split,
``scripts/ear_valid_split.py``). NDCG@10 over the 1,411 test users (the engine's metric
code) for

- ``oracle``: every user gets the same list, ordered by how many test users like each
  video. This is the best any ranking that ignores who the user is can do;
- ``prior a=...``: the engine's popularity prior alone (sum over users of 1 / n_u^a,
  fit on train+valid), for a few activity exponents a;
- ``... look-alike rule``: the same lists re-ordered greedily so that no video shares a
  KuaiRec tag with any of the 4 before it (the interactive simulator's leave rule, which
  the feed's tag window keeps);
- ``per group: best feature``: each user gets the oracle list of the test users who share
  their value of one ``user_features.csv`` column (the user left out), for the column
  that does best: what user features could add at most;
- ``half of the test labels``: each user's test positives split at random in two; a list
  ranked from half A (their own A positives excluded) is scored on half B, once by
  popularity over everyone's A and once by user-kNN (cosine on A). With ~76 of the user's
  own positives on these very videos, does anything personal beat popularity?

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
WINDOW = 4  # the simulator's user leaves when a tag repeats one of the last 4 videos
NEIGHBOURS = (50, 200)


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


def mean_ndcg(tops: np.ndarray, labels: np.ndarray) -> float:
    """Mean NDCG@10 over the rows of ``labels`` (users x videos, 0/1) when user row r gets
    the video columns ``tops[r]`` (or ``tops`` itself when it is one list); users without
    a positive count as 0."""
    values = [
        ndcg_at_k(
            [str(j) for j in (tops if tops.ndim == 1 else tops[r])[:10]],
            dict.fromkeys(map(str, np.flatnonzero(row)), 1.0),
            10,
        )
        for r, row in enumerate(labels)
    ]
    return float(np.mean(values))


def top10(scores: np.ndarray) -> np.ndarray:
    """Each row's (or the one list's) ten best columns, ties to the lower column."""
    return np.argsort(-scores, axis=-1, kind="stable")[..., :10]


def look_alike_rule(scores: np.ndarray, tags: list[frozenset[int]], n: int = 10) -> np.ndarray:
    """Greedy: each position takes the best video not yet taken that shares no tag with
    the last WINDOW taken (a video passed over comes back once the window has moved)."""
    waiting = [int(j) for j in np.argsort(-scores, kind="stable")[: 50 * n]]
    chosen: list[int] = []
    while len(chosen) < n:
        recent = frozenset().union(*(tags[i] for i in chosen[-WINDOW:]))
        pick = next((j for j in waiting if not tags[j] & recent), None)
        if pick is None:
            break
        chosen.append(pick)
        waiting.remove(pick)
    return np.asarray(chosen)


def prior(x: sp.csr_matrix, exponent: float) -> np.ndarray:
    activity = np.asarray(x.sum(axis=1)).ravel()
    weights = sp.diags(1.0 / np.power(np.maximum(activity, 1e-9), exponent))
    return np.asarray((weights @ x).sum(axis=0)).ravel()


def best_feature_group(labels: np.ndarray, users: np.ndarray, path: Path) -> tuple[str, float]:
    """The user-feature column whose per-group oracle (leave the user out) does best."""
    with path.open(encoding="utf-8", newline="") as f:
        features = {int(r["user_id"]): r for r in csv.DictReader(f)}
    best = ("", -1.0)
    for column in next(iter(features.values())):
        if column == "user_id":
            continue
        group = np.array([features[int(u)][column] for u in users])
        scores = np.zeros(labels.shape)
        for value in np.unique(group):
            members = group == value
            scores[members] = labels[members].sum(axis=0) - labels[members]
        # ties (small groups) broken by the whole population's counts
        scores += labels.sum(axis=0) / (labels.sum() + 1.0)
        value = mean_ndcg(top10(scores), labels)
        best = max(best, (column, value), key=lambda b: b[1])
    return best[0], round(best[1], 4)


def half_split(labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    in_a = rng.random(labels.shape) < 0.5
    a, b = labels * in_a, labels * ~in_a
    known = a > 0  # a user's own half-A positives are not ranked again

    def score(s: np.ndarray) -> float:
        s = np.where(known, -np.inf, s)
        return round(mean_ndcg(top10(s), b), 4)

    out = {"popularity": score(np.tile(a.sum(axis=0), (len(a), 1)))}
    norms = np.sqrt(a.sum(axis=1)) + 1e-9
    similarity = (a @ a.T) / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    for k in NEIGHBOURS:
        kth = -np.sort(-similarity, axis=1)[:, k - 1 : k]
        out[f"user-kNN k={k}"] = score(np.where(similarity >= kth, similarity, 0.0) @ a)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    m = matrices(args.data / "kuairec-ear" / "interactions.csv")
    test, fit = m["test"], m["train"] + m["valid"]
    fit.data[:] = 1.0
    users = np.unique(test.nonzero()[0])
    videos = np.unique(test.nonzero()[1])
    labels = test[users][:, videos].toarray()
    with (args.data / "kuairec" / "item_categories.csv").open(encoding="utf-8") as f:
        tag_of = {int(r["video_id"]): frozenset(json.loads(r["feat"])) for r in csv.DictReader(f)}
    tags = [tag_of.get(int(v), frozenset()) for v in videos]

    out: dict[str, object] = {"users": len(users), "videos": len(videos)}
    rankings = {"oracle": labels.sum(axis=0)}
    rankings |= {f"prior a={a}": prior(fit, a)[videos] for a in EXPONENTS}
    for name, scores in rankings.items():
        out[name] = round(mean_ndcg(top10(scores), labels), 4)
        ruled = look_alike_rule(scores, tags)
        out[f"{name}, look-alike rule"] = round(mean_ndcg(ruled, labels), 4)
    column, value = best_feature_group(labels, users, args.data / "kuairec" / "user_features.csv")
    out[f"per group: best feature ({column})"] = value
    out["half of the test labels"] = half_split(labels)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
