"""A recommender of your own, measured next to fyp: item-based k-nearest neighbours.

    cd examples && fyp eval kuairec-ear --data ../../shared/data --out /tmp/knn \\
        --peer itemknn_peer:ItemKNN

fyp loads ``ItemKNN`` from this file (the current directory is searched first), checks
it against the evaluation's contract (``fyp.evaluation.check_recommender``), then ranks
and simulates with it exactly as with its built-in peers; ``results.json`` and the report
name it ``itemknn``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from fyp.evaluation import Recommender


class ItemKNN(Recommender):
    """Score = sum of cosine similarities to the user's positives, over each item's ``k``
    most similar items (Sarwar et al., 2001)."""

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 10.0) -> None:
        self.k = k
        self.shrink = shrink

    def fit(self, x: sp.csr_matrix) -> ItemKNN:
        x = sp.csr_matrix(x, dtype=np.float64)
        counts = np.asarray(x.sum(axis=0)).ravel()
        co = (x.T @ x).toarray()
        np.fill_diagonal(co, 0.0)
        norms = np.sqrt(counts)
        sim = co / (np.outer(norms, norms) + self.shrink)
        if self.k < sim.shape[0]:  # keep each item's k nearest
            cut = np.argpartition(-sim, self.k - 1, axis=1)[:, self.k :]
            np.put_along_axis(sim, cut, 0.0, axis=1)
        self._x, self._sim = x, sim
        return self

    def scores(self, user: int, items: np.ndarray) -> np.ndarray:
        liked = self._x.indices[self._x.indptr[user] : self._x.indptr[user + 1]]
        return np.asarray(self._sim[np.ix_(liked, items)].sum(axis=0), np.float64).ravel()
