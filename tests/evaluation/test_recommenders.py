"""Every peer recommender through the recommender contract: each class found by walking
Recommender's subclasses (built with its defaults and the seed), and each ``PEERS``
entry as the evaluation builds it."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Callable
from typing import ClassVar

import pytest

from contracts.implementations import builders, implementations
from contracts.recommender_contract import Make, RecommenderContract
from fyp.evaluation.baselines import (
    PEERS,
    BPRRecommender,
    RandomRecommender,
    Recommender,
    SharedFits,
    _SharedRecommender,
)


def seeded(cls: type[Recommender]) -> Make:
    """Its defaults, and the seed if it takes one."""
    takes_seed = "seed" in inspect.signature(cls).parameters
    return lambda seed: cls(seed=seed) if takes_seed else cls()  # type: ignore[call-arg]


SHARED = SharedFits(PEERS).factories()  # each peer as an evaluation builds it

MAKERS = [
    *builders(
        Recommender,
        {_SharedRecommender: {name: SHARED[name] for name in ("popular", "ease")}},
        seeded,
    ),
    *(pytest.param(make, id=f"PEERS-{name}") for name, make in PEERS.items()),
]


def test_the_walk_finds_every_peer() -> None:
    built = {type(make(0)) for make in PEERS.values()}
    assert built <= set(implementations(Recommender))


def test_the_first_implicit_fit_of_a_process_runs_on_one_blas_thread() -> None:
    """implicit loads a BLAS of its own on import, and warns when a fit may use several
    threads: the fit's limit must cover that BLAS too (it did not, in a fresh process)."""
    script = (
        "import scipy.sparse as sp\n"
        "from fyp.evaluation.baselines import ALSRecommender\n"
        "ALSRecommender(iterations=1).fit(sp.random(5, 5, density=0.5, format='csr'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "2"},  # several, even on one core
        check=False,
    )
    assert done.returncode == 0, done.stderr


class TestRecommenders(RecommenderContract):
    row_order_dependent: ClassVar[dict[type[Recommender], str]] = {
        BPRRecommender: "stochastic gradient steps visit the rows in order",
        RandomRecommender: "each row's draws are seeded by its number",
    }

    @pytest.fixture(params=MAKERS)
    def make(self, request: pytest.FixtureRequest) -> Callable[[int], Recommender]:
        found: Make = request.param
        return found
