"""The behaviour every ``fyp.evaluation.baselines.Recommender`` (a peer) must have.

A peer's test module subclasses :class:`RecommenderContract` (no ``Test`` prefix, so
pytest collects it only through subclasses) and provides a ``make`` fixture: seed ->
a new, unfitted recommender (what ``PEERS`` holds). The checks themselves ship in the
package (:mod:`fyp.evaluation.contract`: ``fyp eval --peer`` runs them on a researcher's
recommender before a run); this runs each on small random matrices and adds the
project's own convention:

- the constructor only stores its parameters, under their own names (scikit-learn's
  convention: a peer is rebuilt from them), the seed among them if it takes one;
- ``fit`` returns the recommender and leaves the matrix as it was;
- ``scores(user, items)``: one finite score per item, for any items in any order (none
  too), for every user, the cold one included; ``items`` left as it was;
- the same seed and data give the same scores, call for call;
- a user's scores are the same when asked again (one fit serves a whole evaluation);
- a user's scores do not depend on the order of the matrix's rows, unless the class is
  in ``row_order_dependent`` (with why).
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import pytest
import scipy.sparse as sp

from fyp.evaluation import contract
from fyp.evaluation.baselines import Recommender
from fyp.evaluation.contract import SEED, Make

MATRICES = contract.matrices()


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
        assert contract.built_problems(make) == []

    def test_fit_returns_the_recommender_and_leaves_the_matrix(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        assert contract.fit_problems(make, x) == []

    def test_one_finite_score_per_item_for_every_user(self, make: Make, x: sp.csr_matrix) -> None:
        assert contract.score_problems(make, x) == []

    def test_the_same_seed_and_data_give_the_same_scores(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        assert contract.determinism_problems(make, x) == []

    def test_a_users_scores_are_the_same_when_asked_again(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        assert contract.repeat_problems(make, x) == []

    def test_scores_do_not_depend_on_the_order_of_the_rows(
        self, make: Make, x: sp.csr_matrix
    ) -> None:
        if type(make(SEED)) in self.row_order_dependent:
            pytest.skip(self.row_order_dependent[type(make(SEED))])
        assert contract.row_order_problems(make, x) == []

    def test_the_whole_check_passes(self, make: Make) -> None:
        """What ``fyp eval --peer`` runs: no problem (warnings only where written above)."""
        report = contract.check_recommender(make)
        assert report.problems == []
        assert bool(report.warnings) == (type(make(SEED)) in self.row_order_dependent)
