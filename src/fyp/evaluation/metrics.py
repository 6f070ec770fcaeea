"""Ranking metrics, exactly as the KuaiRec-EAR protocol defines them.

- NDCG@k: gain ``g(v)`` (1 for a relevant video in the binary protocol, or a graded
  gain such as min(watch_ratio, 5) in the official KuaiRec protocol), discount
  1/log2(rank+1); normalised by the ideal DCG of the user's best min(k, |relevant|)
  gains.
- Recall@k: hits in the top k divided by min(k, |relevant|), so a perfect ranking
  scores 1 even when a user has more than k relevant videos (the protocol's rule for
  Recall@10, kept for Recall@50). Most KuaiRec-EAR test users have more than 50
  positives, so Recall@50 is mostly hits/50; ``recall@50_of_all`` divides by
  |relevant| as textbook recall does, and is reported beside it.
- coverage, intra-list category diversity and novelty describe the lists themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def dcg(gains: Sequence[float]) -> float:
    return float(sum(g / math.log2(rank + 2) for rank, g in enumerate(gains)))


def ndcg_at_k(ranked: Sequence[str], gains: Mapping[str, float], k: int) -> float:
    """NDCG@k of one ranked list; ``gains`` maps each relevant video to its gain (> 0)."""
    _unique(ranked, k)
    if not gains:
        return 0.0
    actual = dcg([gains.get(v, 0.0) for v in ranked[:k]])
    ideal = dcg(sorted(gains.values(), reverse=True)[:k])
    return actual / ideal if ideal > 0 else 0.0


def recall_at_k(
    ranked: Sequence[str],
    relevant: set[str] | Mapping[str, float],
    k: int,
    of_all: bool = False,
) -> float:
    """Hits in the top k over min(k, |relevant|), or over |relevant| with ``of_all``."""
    _unique(ranked, k)
    if not relevant:
        return 0.0
    hits = sum(1 for v in ranked[:k] if v in relevant)
    return hits / (len(relevant) if of_all else min(k, len(relevant)))


def _unique(ranked: Sequence[str], k: int) -> None:
    """A list that names a video twice would be counted twice: a caller's bug, refused."""
    if len(set(ranked[:k])) != len(ranked[:k]):
        raise ValueError(f"a ranked list names a video twice in its top {k}")


def coverage(lists: Sequence[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    shown = {v for ranked in lists for v in ranked[:k]}
    return len(shown) / catalogue_size if catalogue_size else 0.0


def intra_list_diversity(ranked: Sequence[str], category: Mapping[str, str], k: int) -> float:
    """Share of pairs in the top k whose categories differ (0: one category, 1: all differ)."""
    cats = [category.get(v, "") for v in ranked[:k]]
    n = len(cats)
    if n < 2:
        return 0.0
    same = sum(1 for i in range(n) for j in range(i + 1, n) if cats[i] == cats[j])
    return 1.0 - same / (n * (n - 1) / 2)


def novelty(ranked: Sequence[str], popularity: Mapping[str, float], n_users: int, k: int) -> float:
    """Mean self-information -log2(p(v)) of the top k, p(v) = (users who engaged) /
    (n_users + 1), smoothed so that a video nobody engaged with counts as one user."""
    if not ranked[:k] or n_users <= 0:
        return 0.0
    info = [-math.log2(max(popularity.get(v, 0.0), 1.0) / (n_users + 1)) for v in ranked[:k]]
    return float(np.mean(info))


def summarise(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0
