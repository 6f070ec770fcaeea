"""Metric code checked against cases computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyp.evaluation.metrics import (
    coverage,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    recall_at_k,
)


def test_ndcg_binary_hand_computed() -> None:
    # relevant {a, c}; ranking a b c: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
    # ideal: two hits at ranks 1, 2: 1 + 1/log2(3) = 1.6309297535714575
    assert ndcg_at_k(["a", "b", "c"], {"a": 1.0, "c": 1.0}, 3) == pytest.approx(
        1.5 / (1 + 1 / math.log2(3))
    )
    assert ndcg_at_k(["a", "b", "c"], {"a": 1.0, "c": 1.0}, 3) == pytest.approx(0.9197207891481876)


def test_ndcg_cuts_at_k_and_ideal_uses_min_k_relevant() -> None:
    # 3 relevant, k = 2, ranking x a: DCG = 1/log2(3) = 0.6309; IDCG(2) = 1 + 0.6309
    assert ndcg_at_k(["x", "a", "b"], {"a": 1, "b": 1, "c": 1}, 2) == pytest.approx(
        0.6309297535714575 / 1.6309297535714575
    )


def test_ndcg_graded_gain() -> None:
    # gains a=5, b=2; ranking b a: DCG = 2 + 5/log2(3) = 5.154648767857287
    # ideal a b: 5 + 2/log2(3) = 6.261859507142915
    assert ndcg_at_k(["b", "a"], {"a": 5.0, "b": 2.0}, 10) == pytest.approx(
        5.154648767857287 / 6.261859507142915
    )


def test_ndcg_edge_cases() -> None:
    assert ndcg_at_k(["a"], {}, 10) == 0.0
    assert ndcg_at_k([], {"a": 1.0}, 10) == 0.0
    assert ndcg_at_k(["a", "b"], {"a": 1.0, "b": 1.0}, 10) == pytest.approx(1.0)


def test_recall_divides_by_min_k_relevant() -> None:
    # 12 relevant, top 10 holds 7 of them -> 7 / min(10, 12) = 0.7
    relevant = {f"r{i}" for i in range(12)}
    ranked = [f"r{i}" for i in range(7)] + ["x", "y", "z"]
    assert recall_at_k(ranked, relevant, 10) == pytest.approx(0.7)
    # 2 relevant, one hit in the top 10 -> 1 / 2
    assert recall_at_k(["a", "x"], {"a", "b"}, 10) == pytest.approx(0.5)
    assert recall_at_k(["a"], set(), 10) == 0.0


def test_recall_of_all_divides_by_every_relevant_video() -> None:
    # 60 relevant, 30 of them in the top 50: 30 / min(50, 60) = 0.6, 30 / 60 = 0.5
    relevant = {f"r{i}" for i in range(60)}
    ranked = [f"r{i}" for i in range(30)] + [f"x{i}" for i in range(20)]
    assert recall_at_k(ranked, relevant, 50) == pytest.approx(0.6)
    assert recall_at_k(ranked, relevant, 50, of_all=True) == pytest.approx(0.5)
    # fewer relevant than k: both are hits / |relevant|
    assert recall_at_k(["a", "x"], {"a", "b"}, 50, of_all=True) == pytest.approx(0.5)


def test_a_list_naming_a_video_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        ndcg_at_k(["a", "a"], {"a": 1.0}, 10)  # would score 1.63 otherwise
    with pytest.raises(ValueError, match="twice"):
        recall_at_k(["a", "b", "a"], {"a"}, 10)
    assert ndcg_at_k(["a", "b", "a"], {"a": 1.0}, 2) == 1.0  # beyond k is not scored


def test_coverage_diversity_novelty_hand_computed() -> None:
    assert coverage([["a", "b"], ["b", "c"]], 10, 2) == pytest.approx(0.3)
    cats = {"a": "x", "b": "x", "c": "y"}
    # pairs (a,b) same, (a,c) and (b,c) differ -> 2/3
    assert intra_list_diversity(["a", "b", "c"], cats, 3) == pytest.approx(2 / 3)
    assert intra_list_diversity(["a"], cats, 3) == 0.0
    # 3 users; a engaged by 3 -> -log2(3/4); b by none -> -log2(1/4) = 2
    expected = (-math.log2(3 / 4) + 2.0) / 2
    assert novelty(["a", "b"], {"a": 3.0}, 3, 2) == pytest.approx(expected)


@given(
    st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=30, unique=True),
    st.sets(st.text(min_size=1, max_size=3), max_size=20),
    st.integers(min_value=1, max_value=30),
)
def test_metrics_are_bounded(ranked: list[str], relevant: set[str], k: int) -> None:
    gains = dict.fromkeys(relevant, 1.0)
    assert 0.0 <= ndcg_at_k(ranked, gains, k) <= 1.0 + 1e-12
    assert 0.0 <= recall_at_k(ranked, relevant, k) <= 1.0
    assert recall_at_k(ranked, relevant, k, of_all=True) <= recall_at_k(ranked, relevant, k)


@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=20, unique=True))
def test_perfect_ranking_scores_one(relevant: list[str]) -> None:
    gains = dict.fromkeys(relevant, 1.0)
    assert ndcg_at_k(relevant, gains, 10) == pytest.approx(1.0)
    assert recall_at_k(relevant, set(relevant), 10) == pytest.approx(1.0)
