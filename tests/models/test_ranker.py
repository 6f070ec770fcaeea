"""The ranker's building blocks, on cases small enough to check by hand."""

from __future__ import annotations

import numpy as np

from fyp.models.ranker import category_shares, split_by_time, value
from fyp.models.ranker_training import recent_history
from fyp.models.region_model import tag_bitmasks


def test_split_by_time_holds_out_each_users_latest_fifth() -> None:
    # user 0: 10 positives at t=0..9 -> the latest 2 (t=8, 9) are targets
    # user 1: 4 positives -> fewer than 5: all history
    users = np.array([0] * 10 + [1] * 4)
    items = np.arange(14)
    ts = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 1, 2, 3])
    history, target = split_by_time(users, items, ts)
    assert set(items[target]) == {0, 1}  # the rows with t = 9 and t = 8
    assert history.sum() == 12 and not (history & target).any()


def test_recent_history_is_newest_first_and_distinct() -> None:
    users = np.array([0, 0, 0, 1])
    items = np.array([5, 6, 5, 7])
    ts = np.array([1, 2, 3, 1])
    hist = recent_history(users, items, ts, 2)
    assert hist[0].tolist() == [5, 6]  # 5 at t=3 is newest; its repeat at t=1 dropped
    assert hist[1].tolist() == [7]


def test_category_shares_with_the_no_category_slot() -> None:
    shares = category_shares(np.array([0, 1, 2]), np.array([0, 0, -1]), 2)
    assert np.allclose(shares, [2 / 3, 0.0, 1 / 3])


def test_value_model_is_the_weighted_sum_of_heads() -> None:
    preds = {"long_play": np.array([0.5, 0.1]), "skip": np.array([0.2, 0.8])}
    out = value(preds, {"long_play": 1.0, "skip": -0.5, "like": 3.0}, 2)
    assert np.allclose(out, [0.5 - 0.1, 0.1 - 0.4])


def test_tag_bitmasks() -> None:
    # video 0: tags 0 and 3; video 1: none; video 2: tag 65 (folds onto bit 1)
    bits = tag_bitmasks(np.array([0, 2, 2, 3]), np.array([0, 3, 65]))
    assert bits.tolist() == [0b1001, 0, 0b10]
