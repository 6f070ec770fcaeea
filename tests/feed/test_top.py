"""The narrowed top-k selects exactly what argpartition over all scores selects.

``_top(..., narrow=True)`` (the embedding source) looks for the k best among the scores
above a sampled threshold; which of several scores tied at the cut make it in is
argpartition's choice over the whole array, so the narrowed selection must either
find that very set or give way to it. Feeds ranked with either are byte for byte the
same only if this holds for every input: ties at and around the cut, NaN, a sorted
catalogue, too few scores above the threshold.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.feed.candidates import SAMPLE_EVERY, _narrowed_top, _top


def plain_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The selection before narrowing existed."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def scores_of(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        return rng.standard_normal(n).astype(np.float32)
    if kind == "few values":  # ties everywhere, the cut among them
        return rng.integers(0, 5, n).astype(np.float32)
    if kind == "mostly zero":
        return np.where(rng.random(n) < 0.95, 0.0, rng.random(n)).astype(np.float32)
    if kind == "nan":
        s = rng.standard_normal(n)
        s[rng.random(n) < 0.02] = np.nan
        return s.astype(np.float32)
    if kind == "rounded":
        return np.round(rng.standard_normal(n), 2)
    ascending = np.sort(rng.standard_normal(n)).astype(np.float32)
    return ascending if kind == "ascending" else ascending[::-1].copy()


KINDS = ["continuous", "few values", "mostly zero", "nan", "rounded", "ascending", "descending"]


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    n=st.integers(1, 20_000),
    k=st.integers(0, 700),
    seed=st.integers(0, 2**32 - 1),
)
def test_narrowed_top_is_argpartitions_selection(kind: str, n: int, k: int, seed: int) -> None:
    scores = scores_of(kind, n, seed)
    assert np.array_equal(_top(scores, k, narrow=True), plain_top(scores, k))


def test_narrowing_is_used_on_a_catalogue_of_continuous_scores() -> None:
    """Not a path that never runs: 200 of 10,000 dot products are found narrowed."""
    scores = scores_of("continuous", 10_000, 7)
    found = _narrowed_top(scores, 200)
    assert found is not None
    assert set(found.tolist()) == set(plain_top(scores, 200).tolist())


def test_a_tie_across_the_cut_is_left_to_argpartition() -> None:
    scores = np.zeros(SAMPLE_EVERY * 300, np.float32)
    scores[:150] = 1.0  # the 200 best: 150 ones and 50 of the zeros
    assert _narrowed_top(scores, 200) is None
    assert np.array_equal(_top(scores, 200, narrow=True), plain_top(scores, 200))
