"""The behaviour every ``fyp.evaluation.baselines.Recommender`` (a peer) must have.

A peer's test module subclasses :class:`RecommenderContract` (no ``Test`` prefix, so
pytest collects it only through subclasses) and provides a ``make`` fixture: seed ->
a new, unfitted recommender (what ``PEERS`` holds). The contract fits it on small random
users x items matrices of positives (a cold user, with no positives, in each; fits take
milliseconds) and checks:

- the constructor only stores its parameters, under their own names (scikit-learn's
  convention: a peer is rebuilt from them), the seed among them if it takes one;
- ``fit`` returns the recommender and leaves the matrix as it was;
- ``scores(user, items)``: one finite score per item, for any items in any order (none
  too), for every user, the cold one included; ``items`` left as it was;
- the same seed and data give the same scores, call for call;
- a user's scores do not depend on the order of the matrix's rows, unless the class is
  in ``row_order_dependent`` (with why).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from fyp.evaluation.baselines import Recommender

Make = Callable[[int], Recommender]
SEED = 7


def matrix(seed: int, users: int = 30, items: int = 40) -> sp.csr_matrix:
    """Positives at ~15 % density (1.0 each); user 0 has none, nor has the last item."""
    x = sp.random(users, items, density=0.15, random_state=seed, format="lil")
    x[0, :] = 0
    x[:, items - 1] = 0
    out = sp.csr_matrix(x)
    out.data[:] = 1.0
    out.eliminate_zeros()
    return out


MATRICES = [matrix(0), matrix(1, users=12, items=25)]


def all_scores(r: Recommender, x: sp.csr_matrix, users: list[int]) -> np.ndarray:
    items = np.arange(x.shape[1])
    return np.stack([r.scores(u, items) for u in users])


class RecommenderContract:
    # class -> why a user's scores depend on the order of the other users' rows
    row_order_dependent: ClassVar[dict[type[Recommender], str]] = {}

    @pytest.fixture
    def make(self) -> Make:
        raise NotImplementedError

    @pytest.fixture(params=range(len(MATRICES)), ids=lambda k: f"matrix{k}")
    def x(self, request: pytest.FixtureRequest) -> sp.csr_matrix:
        return MATRICES[request.param].copy()

    def test_the_constructor_only_stores_its_parameters(self, make: Make) -> None:
        r = make(SEED)
        params = inspect.signature(type(r)).parameters
        assert set(vars(r)) <= set(params), "attributes that are not parameters"
        assert set(vars(type(r)(**vars(r)))) == set(vars(r)), "not rebuilt from them"
        assert vars(type(r)(**vars(r))) == vars(r)
        if "seed" in params:
            assert vars(r)["seed"] == SEED, "the seed is not passed on"
        assert r.name and r.name != Recommender.name

    def test_fit_returns_the_recommender_and_leaves_the_matrix(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        before = x.copy()
        r = make(SEED)
        assert r.fit(x) is r
        assert (x != before).nnz == 0 and x.dtype == before.dtype and x.format == "csr"

    def test_one_finite_score_per_item_for_every_user(self, make: Make, x: sp.csr_matrix) -> None:
        r = make(SEED).fit(x)
        n_users, n_items = x.shape
        rng = np.random.default_rng(0)
        asked = [
            np.arange(n_items),
            rng.permutation(n_items)[: n_items // 3],  # some, in any order
            np.asarray([n_items - 1, 0, n_items - 1]),  # an item nobody liked, and again
            np.zeros(0, np.int64),
        ]
        for user in range(n_users):  # user 0: cold
            for items in asked:
                kept = items.copy()
                scores = np.asarray(r.scores(user, items))
                assert scores.shape == items.shape and scores.dtype.kind == "f"
                assert np.isfinite(scores).all(), f"user {user}: {scores}"
                assert (items == kept).all()

    def test_the_same_seed_and_data_give_the_same_scores(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        users = list(range(x.shape[0]))
        first = all_scores(make(SEED).fit(x), x, users)
        again = all_scores(make(SEED).fit(x.copy()), x, users)
        assert first.tolist() == again.tolist()

    def test_scores_do_not_depend_on_the_order_of_the_rows(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        """Row ``j`` of the shuffled matrix is user ``order[j]`` of the original."""
        r = make(SEED)
        if type(r) in self.row_order_dependent:
            pytest.skip(self.row_order_dependent[type(r)])
        order = np.random.default_rng(1).permutation(x.shape[0])
        before = all_scores(make(SEED).fit(x), x, order.tolist())
        after = all_scores(r.fit(sp.csr_matrix(x[order])), x, list(range(x.shape[0])))
        # iterative fits start each row from its own random draw: equal to ~1e-4 of scale
        scale = max(1.0, float(np.abs(before).max()))
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-3 * scale)
