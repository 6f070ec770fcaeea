"""One fit per peer, region and seed serves a whole evaluation (offline and simulator)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
from test_eval_cli import tiny_sample

from fyp.evaluation import contract
from fyp.evaluation.baselines import (
    PEERS,
    PopularityRecommender,
    RandomRecommender,
    Recommender,
    SharedFits,
)
from fyp.evaluation.run import EvalConfig, run_evaluation


class Counted(PopularityRecommender):
    name = "counted"
    fits: ClassVar[list[tuple[int, int]]] = []  # (seed, id of the matrix), per fit

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: sp.csr_matrix) -> Counted:
        Counted.fits.append((self.seed, id(x)))
        return super().fit(x)


@pytest.fixture(autouse=True)
def _no_fits_yet() -> None:
    Counted.fits = []


def test_a_peer_is_fitted_once_per_matrix_and_seed() -> None:
    shared = SharedFits({"counted": Counted}).factories()["counted"]
    x, y = contract.matrix(0), contract.matrix(1)
    first = shared(3).fit(x)
    again = shared(3).fit(x)
    assert Counted.fits == [(3, id(x))]
    items = np.arange(x.shape[1])
    for user in range(x.shape[0]):
        assert first.scores(user, items).tolist() == again.scores(user, items).tolist()
    shared(4).fit(x)  # another seed
    shared(3).fit(y)  # another matrix
    assert Counted.fits == [(3, id(x)), (4, id(x)), (3, id(y))]


def test_a_matrix_made_where_a_freed_one_was_is_fitted_afresh() -> None:
    """The cache keys on the matrix's id and keeps the matrix: an id is never reused
    while its entry lives, and an entry whose matrix is another is not a hit."""
    fits = SharedFits({"counted": Counted})
    x = contract.matrix(0)
    fits.fitted("counted", 0, x)
    fits.fitted("counted", 0, x.copy())
    assert len(Counted.fits) == 2


def test_shared_peers_pass_the_contract_and_score_as_a_fit_of_their_own() -> None:
    fits = SharedFits(PEERS)
    x = contract.matrix(0)
    items = np.arange(x.shape[1])
    for name, make in fits.factories().items():
        assert contract.check_recommender(make).problems == [], name
        own: Recommender = PEERS[name](5).fit(x)
        shared = make(5).fit(x)
        for user in range(x.shape[0]):
            assert shared.scores(user, items).tolist() == own.scores(user, items).tolist(), name


def test_random_scores_one_draw_per_user_and_item_in_any_order() -> None:
    x = contract.matrix(0)
    r = RandomRecommender(seed=2).fit(x)
    items = np.arange(x.shape[1])
    full = r.scores(4, items)
    assert r.scores(4, items[::-1]).tolist() == full[::-1].tolist()
    assert r.scores(4, items[5:9]).tolist() == full[5:9].tolist()
    assert r.scores(5, items).tolist() != full.tolist()
    assert RandomRecommender(seed=3).fit(x).scores(4, items).tolist() != full.tolist()


def test_an_evaluation_fits_each_peer_once_per_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline ranks with the fit the simulator then uses: two regions, one fit each."""
    fitted: list[tuple[str, int]] = []
    for cls in {type(make(0)) for make in PEERS.values()}:
        monkeypatch.setattr(cls, "fit", _counting(cls.fit, cls.name, fitted))
    config = EvalConfig(
        "kuairec-ear", tiny_sample(tmp_path / "data"), tmp_path / "out", ("us", "eu"), users=10
    )
    outcome = run_evaluation(config, log=lambda _m: None)
    assert set(outcome.results["interactive"]) >= set(PEERS)
    # each peer's region matrices (the popularity ablation shares popular's fits)
    assert sorted(fitted) == sorted((name, n) for name in PEERS for n in range(2))


def _counting(fit, name, fitted):  # type: ignore[no-untyped-def]
    seen: dict[int, int] = {}

    def counted(self, x):  # type: ignore[no-untyped-def]
        fitted.append((name, seen.setdefault(id(x), len(seen))))
        return fit(self, x)

    return counted
