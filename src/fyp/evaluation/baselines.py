"""Peer recommenders, run in the same process on the same data as the engine.

Every peer implements :class:`Recommender`: ``fit`` on a users x items positive
matrix, then ``scores`` for one user over a set of candidate items. Constructors only
store parameters; work happens in ``fit`` (scikit-learn's convention).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


class Recommender(ABC):
    """``scores`` depends on the fit and its arguments only, not on earlier calls: an
    evaluation asks each fitted peer for its offline ranking and again in the simulator
    (:class:`SharedFits`)."""

    name: str = "recommender"

    @abstractmethod
    def fit(self, x: sp.csr_matrix) -> Recommender:
        """Learn from a users x items matrix of positives (1.0 per positive)."""

    @abstractmethod
    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        """Scores of ``items`` for ``user`` (a row of the fitted matrix); higher is better."""


class RandomRecommender(Recommender):
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: sp.csr_matrix) -> RandomRecommender:
        self._n_items = x.shape[1]
        return self

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        # one draw per user and item: the same however often and in whatever order asked
        draws = np.random.default_rng([self.seed, user]).random(self._n_items)
        return np.asarray(draws[items])


class PopularityRecommender(Recommender):
    """Count of positives per item: the classic non-personalised baseline."""

    name = "popular"

    def fit(self, x: sp.csr_matrix) -> PopularityRecommender:
        self._counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
        return self

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        return np.asarray(self._counts[items])


class EASERecommender(Recommender):
    """EASE (Steck, 2019): closed-form item-item model B = I - P / diag(P), P = (X'X + λI)^-1.
    On KuaiRec-EAR's train->valid split (``scripts/ear_peer_grid.py``) λ from 200 to
    20,000 ties (valid NDCG@10 0.0184-0.0192; 50: 0.0179), so the default stays 500."""

    name = "ease"

    def __init__(self, l2: float = 500.0) -> None:
        self.l2 = l2

    def fit(self, x: sp.csr_matrix) -> EASERecommender:
        from scipy.linalg import lapack

        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] += self.l2
        # The Gram matrix is symmetric positive definite: invert through Cholesky.
        chol, info = lapack.spotrf(gram, lower=False, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"Cholesky failed (info={info})")
        p, info = lapack.spotri(chol, lower=False, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"inverse failed (info={info})")
        p = np.triu(p) + np.triu(p, 1).T
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices_from(b)] = 0.0
        self._b = b
        self._x = x.tocsr()
        return self

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        history = self._x.indices[self._x.indptr[user] : self._x.indptr[user + 1]]
        return np.asarray(self._b[history][:, items].sum(axis=0)).ravel()


class _ImplicitRecommender(Recommender):
    """Shared fit/score for the ``implicit`` library's factor models."""

    def __init__(self, factors: int, iterations: int, seed: int = 0) -> None:
        self.factors = factors
        self.iterations = iterations
        self.seed = seed

    @abstractmethod
    def _model(self) -> object:
        """A new, unfitted model of the library, with this recommender's parameters."""

    def fit(self, x: sp.csr_matrix) -> _ImplicitRecommender:
        # implicit loads a BLAS of its own on import: loaded first, the limit covers it
        # (entered before, it left the first fit of a process on every core)
        import implicit  # noqa: F401

        with threadpool_limits(1, "blas"):
            model = self._model()
            model.fit(x.tocsr().astype(np.float32), show_progress=False)  # type: ignore[attr-defined]
        self._users = np.asarray(model.user_factors)  # type: ignore[attr-defined]
        self._items = np.asarray(model.item_factors)  # type: ignore[attr-defined]
        return self

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        return np.asarray(self._items[items] @ self._users[user])


class ALSRecommender(_ImplicitRecommender):
    """Implicit ALS. The defaults were chosen on KuaiRec-EAR's train->valid split
    (``scripts/ear_peer_grid.py``): 4-16 factors tie (0.038) and beat 32 (0.036), 64
    (0.033) and 128 (0.028); 16 with regularisation 0.01 was best."""

    name = "als"

    def __init__(
        self, factors: int = 16, iterations: int = 15, seed: int = 0, regularization: float = 0.01
    ) -> None:
        super().__init__(factors, iterations, seed)
        self.regularization = regularization

    def _model(self) -> object:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            iterations=self.iterations,
            regularization=self.regularization,
            random_state=self.seed,
        )


class BPRRecommender(_ImplicitRecommender):
    """Implicit BPR, single-threaded (its SGD with several threads is not reproducible).
    The defaults were chosen on the same train->valid split as ALS's, averaged over 4
    seeds (one BPR fit varies by ~20 % between seeds): 8 factors, 200 iterations, learning
    rate 0.005, regularisation 0.001 (valid NDCG@10 0.0202) beat the previous default
    (64 factors, 100 iterations at 0.01, implicit's regularisation 0.01: 0.0167) and every
    other setting of ``scripts/ear_peer_grid.py``."""

    name = "bpr"

    def __init__(
        self,
        factors: int = 8,
        iterations: int = 200,
        seed: int = 0,
        learning_rate: float = 0.005,
        regularization: float = 0.001,
    ) -> None:
        super().__init__(factors, iterations, seed)
        self.learning_rate = learning_rate
        self.regularization = regularization

    def _model(self) -> object:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            iterations=self.iterations,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            random_state=self.seed,
            num_threads=1,
        )


PEERS: dict[str, Callable[[int], Recommender]] = {
    "random": RandomRecommender,
    "popular": lambda seed: PopularityRecommender(),
    "als": lambda seed: ALSRecommender(seed=seed),
    "bpr": lambda seed: BPRRecommender(seed=seed),
    "ease": lambda seed: EASERecommender(),
}
"""Peer name -> factory taking a seed: a fresh model per region and per run."""


class SharedFits:
    """Each peer fitted once per training matrix and seed, for the whole evaluation:
    the offline ranking and the simulator fit every peer on the same matrix, and a fit
    depends on nothing else (a ``Recommender``'s constructor stores parameters, ``fit``
    learns from the matrix), so a second fit only repeats the first. EASE's took 23 s
    offline and 40 s again for the simulator on this machine (session 29, 50 users).
    ``factories()`` are drop-in replacements for the ones given."""

    def __init__(self, factories: Mapping[str, Callable[[int], Recommender]]) -> None:
        self._factories = dict(factories)
        # (name, seed, id of the matrix) -> (the matrix, kept so its id stays its own; fit)
        self._fitted: dict[tuple[str, int, int], tuple[sp.csr_matrix, Recommender]] = {}

    def factories(self) -> dict[str, Callable[[int], Recommender]]:
        return {name: functools.partial(_SharedRecommender, self, name) for name in self._factories}

    def fitted(self, name: str, seed: int, x: sp.csr_matrix) -> Recommender:
        key = (name, seed, id(x))
        found = self._fitted.get(key)
        if found is None or found[0] is not x:
            found = self._fitted[key] = (x, self._factories[name](seed).fit(x))
        return found[1]


class _SharedRecommender(Recommender):
    """A recommender whose fit is :class:`SharedFits`'s model for the same matrix and seed
    (the contract suite builds it from its parameters, like any peer)."""

    def __init__(self, shared: SharedFits, name: str, seed: int) -> None:
        self.shared, self.name, self.seed = shared, name, seed

    def fit(self, x: sp.csr_matrix) -> _SharedRecommender:
        self._model = self.shared.fitted(self.name, self.seed, x)
        return self

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        return self._model.scores(user, items)
