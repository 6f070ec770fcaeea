"""Every scorer of fyp through the scorer contract, found by walking Scorer's subclasses:
a new one is covered as it is written (one that takes arguments says how to build it
in ``BUILT``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from contracts.implementations import builders, implementations
from contracts.scorer_contract import ScorerContract
from contracts.stage_contract import NEWER, PoolSpec, RegionInputs
from fyp.feed.scoring import RankerScorer, Scorer, ValueScorer, ValueWeights
from fyp.feed.state import build_state

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


def test_a_vector_nearly_orthogonal_to_the_pool_scores_alike_in_any_order(
    stage_inputs: list[RegionInputs],
) -> None:
    """What hypothesis drew (session 29): user u58's learned vector is almost orthogonal
    to videos 0-2 (dot products ~5e-4 of sums ~1.5), and in float32 the embedding term
    moved by 7e-5 of itself when the pool listed them in another order."""
    region = next(r for r in stage_inputs if r.model.heads is not None)
    state = build_state("u58", "us", None, [], [], region.model, outside={NEWER: (-1, -1)})
    scorer = ValueScorer(ValueWeights(popularity=0.0))
    TestScorers().check(scorer, region.model, state, PoolSpec((0, 1, 2), None))
