"""Every scorer of fyp through the scorer contract, found by walking Scorer's subclasses:
a new one is covered as it is written (one that takes arguments says how to build it
in ``BUILT``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from contracts.implementations import builders, implementations
from contracts.scorer_contract import ScorerContract
from fyp.feed.scoring import RankerScorer, Scorer, ValueScorer, ValueWeights

BUILT: Mapping[type[Scorer], Mapping[str, Callable[[], Scorer]]] = {
    ValueScorer: {
        "default": ValueScorer,
        "no popularity": lambda: ValueScorer(ValueWeights(popularity=0.0)),
    },
    RankerScorer: {
        "default": RankerScorer,
        "shortlist 7": lambda: RankerScorer({"like": 1.0, "skip": -1.0}, shortlist=7),
    },
}


def test_the_walk_finds_every_scorer() -> None:
    assert {ValueScorer, RankerScorer} <= set(implementations(Scorer))


class TestScorers(ScorerContract):
    @pytest.fixture(params=builders(Scorer, BUILT))
    def stage(self, request: pytest.FixtureRequest) -> Scorer:
        found: Scorer = request.param()
        return found
