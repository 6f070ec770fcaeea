"""Intervals and paired comparisons, checked against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.evaluation.uncertainty import (
    compare,
    compare_ratio,
    figures,
    interval,
    ratio_interval,
)


def test_the_paired_t_test_matches_a_hand_computed_case() -> None:
    # differences 1, 0, 1, 2: mean 1, sample sd sqrt(2/3), se sqrt(2/3)/2, t = sqrt(6)
    out = compare([1, 2, 3, 4], [0, 2, 2, 2], seed=0)
    assert out["diff"] == 1.0
    t = math.sqrt(6)
    # two-sided p of Student's t with 3 degrees of freedom, by its closed form:
    # P(|T| > t) = 1 - (2/pi) (atan(t/sqrt3) + sqrt3 t / (3 + t^2))
    p = 1 - (2 / math.pi) * (math.atan(t / math.sqrt(3)) + math.sqrt(3) * t / (3 + t * t))
    assert out["p"] == pytest.approx(p, rel=1e-3)  # 0.0917
    low, high = out["ci95"]
    assert 0.0 <= low <= 1.0 <= high <= 2.0  # within the differences' own range


def test_an_interval_is_as_wide_as_the_normal_approximation_says_on_a_large_sample() -> None:
    rng = np.random.default_rng(7)
    x = (rng.random(4_000) < 0.3).astype(float)
    out = interval(x, seed=1)
    assert out["mean"] == pytest.approx(x.mean(), abs=1e-4)
    half = 1.96 * math.sqrt(x.var(ddof=1) / len(x))  # ~0.0142
    low, high = out["ci95"]
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert low < out["mean"] < high


def test_a_ratio_of_sums_is_resampled_by_session() -> None:
    out = ratio_interval([1, 2, 0, 3], [5, 5, 5, 5], seed=0)
    assert out["mean"] == 0.3  # 6 / 20, not the mean of the per-session ratios
    low, high = out["ci95"]
    assert 0.0 <= low <= 0.3 <= high <= 0.6  # a session's ratio is at most 3/5
    same = compare_ratio(([1, 2, 0, 3], [5, 5, 5, 5]), ([1, 2, 0, 3], [5, 5, 5, 5]), seed=0)
    assert same == {"diff": 0.0, "ci95": [0.0, 0.0], "p": None}


def test_no_spread_gives_a_point_interval_and_a_certain_p() -> None:
    assert interval([0.5] * 10, seed=0) == {"mean": 0.5, "ci95": [0.5, 0.5]}
    assert compare([1.0, 1.0], [0.0, 0.0], seed=0)["p"] == 0.0
    assert compare([1.0, 2.0], [1.0, 2.0], seed=0)["p"] == 1.0
    assert interval([], seed=0) == {"mean": 0.0, "ci95": [0.0, 0.0]}
    with pytest.raises(ValueError, match="different lengths"):
        compare([1.0, 2.0], [1.0], seed=0)


def test_the_same_seed_gives_the_same_interval() -> None:
    x = np.random.default_rng(3).random(300)
    assert interval(x, seed=5) == interval(x, seed=5)


def test_figures_compare_the_engine_with_every_peer_on_each_figure() -> None:
    per_user = {
        "fyp": {"reward": [3.0, 1.0, 2.0], "length": [10.0, 5.0, 8.0]},
        "popular": {"reward": [1.0, 0.0, 1.0], "length": [4.0, 3.0, 6.0]},
    }
    out = figures(per_user, seed=0, ratios={"reward_per_step": ("reward", "length")})
    assert set(out["intervals"]["fyp"]) == {"reward", "length", "reward_per_step"}
    assert out["intervals"]["fyp"]["reward_per_step"]["mean"] == round(6 / 23, 4)
    versus = out["fyp_vs"]["popular"]
    assert versus["reward"]["diff"] == round((6 - 2) / 3, 4)
    assert versus["reward_per_step"]["diff"] == round(6 / 23 - 2 / 13, 4)
    assert list(out["fyp_vs"]) == ["popular"]
    assert figures({"popular": per_user["popular"]}, seed=0)["fyp_vs"] == {}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=60), st.integers(0, 9))
def test_an_interval_lies_within_the_values_and_holds_their_mean(
    values: list[float], seed: int
) -> None:
    out = interval(values, seed)
    low, high = out["ci95"]
    assert min(values) - 1e-4 <= low <= high <= max(values) + 1e-4
    assert low - 1e-4 <= out["mean"] <= high + 1e-4
