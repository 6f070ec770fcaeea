"""Popularity: user-normalised votes, with the activity exponent."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fyp.models.training import TrainParams, user_normalised_popularity


def _matrix() -> sp.csr_matrix:
    """Video 0: one selective user (1 positive). Video 1: five heavy users (4 each)."""
    rows, cols = [0], [0]
    for user in range(1, 6):
        rows += [user] * 4
        cols += [1, 2 + user, 8 + user, 14 + user]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(6, 20))


def test_exponent_one_is_one_vote_per_user() -> None:
    x = _matrix()
    pop = user_normalised_popularity(x, x, 1.0)
    assert np.isclose(pop.sum(), 6.0)  # six users, one vote each
    assert pop[1] > pop[0]  # 5 x 1/4 > 1


def test_higher_exponent_favours_selective_users() -> None:
    x = _matrix()
    pop = user_normalised_popularity(x, x, 1.5)
    assert np.isclose(pop[0], 1.0)
    assert np.isclose(pop[1], 5 / 8)  # each heavy vote is 1 / 4 ** 1.5
    assert pop[0] > pop[1]


def test_default_exponent_is_the_validated_one() -> None:
    assert TrainParams().activity_exponent == 1.5
    x = _matrix()
    assert np.allclose(user_normalised_popularity(x, x), user_normalised_popularity(x, x, 1.0))
