"""Every peer recommender through the recommender contract: each class found by walking
Recommender's subclasses (built with its defaults and the seed), and each ``PEERS``
entry as the evaluation builds it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import pytest

from contracts.implementations import builders, implementations
from contracts.recommender_contract import Make, RecommenderContract
from fyp.evaluation.baselines import PEERS, BPRRecommender, Recommender


def seeded(cls: type[Recommender]) -> Make:
    """Its defaults, and the seed if it takes one."""
    takes_seed = "seed" in inspect.signature(cls).parameters
    return lambda seed: cls(seed=seed) if takes_seed else cls()  # type: ignore[call-arg]


MAKERS = [
    *builders(Recommender, {}, seeded),
    *(pytest.param(make, id=f"PEERS-{name}") for name, make in PEERS.items()),
]


def test_the_walk_finds_every_peer() -> None:
    built = {type(make(0)) for make in PEERS.values()}
    assert built <= set(implementations(Recommender))


class TestRecommenders(RecommenderContract):
    row_order_dependent: ClassVar[dict[type[Recommender], str]] = {
        BPRRecommender: "stochastic gradient steps visit the rows in order",
    }

    @pytest.fixture(params=MAKERS)
    def make(self, request: pytest.FixtureRequest) -> Callable[[int], Recommender]:
        found: Make = request.param
        return found
