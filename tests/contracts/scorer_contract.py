"""The behaviour every ``fyp.feed.scoring.Scorer`` must have.

A scorer's test module subclasses :class:`ScorerContract` (no ``Test`` prefix, so pytest
collects it only through subclasses) and provides a ``stage`` fixture: the scorer. It
runs on the inputs of :mod:`contracts.stage_contract` (a region model with the
multi-objective heads and one without; hypothesis pools and states, and an empty pool)
and checks:

- one finite score per pool item (none for an empty pool), aligned with the items: the
  same pool in another order gets the same scores in that order;
- the same input gives the same scores (scorers have no seed: none may draw);
- the pool, the state and the model are left as they were (a state's memos aside).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from contracts.stage_contract import PoolSpec, StageContract
from fyp.feed.pool import Pool
from fyp.feed.scoring import Scorer
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel


def contents(obj: Any) -> dict[str, Any]:
    """A copy of what a pool, a state or a model holds, to compare before and after (a
    state's memos and served mask left out: working them out is not a change)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name.startswith("_") or f.name == "served_mask":
            continue
        if isinstance(value, np.ndarray):
            value = (value.dtype, value.tolist())
        elif isinstance(value, dict):
            value = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in value.items()}
        elif isinstance(value, list | set):
            value = type(value)(value)
        out[f.name] = value
    return out


def scored(scorer: Scorer, model: RegionModel, state: UserState, pool: Pool) -> np.ndarray:
    scores = scorer.score(model, state, pool)
    assert isinstance(scores, np.ndarray) and scores.shape == (len(pool),)
    assert scores.dtype.kind == "f" and np.isfinite(scores).all()
    return scores


class ScorerContract(StageContract):
    def check(self, stage: Scorer, model: RegionModel, state: UserState, spec: PoolSpec) -> None:
        pool = spec.build()
        before = [contents(pool), contents(state), contents(model)]
        scores = scored(stage, model, state, pool)
        assert [contents(pool), contents(state), contents(model)] == before, "changed"
        assert len(pool.removed) == 0, "a scorer removed candidates"

        assert scored(stage, model, state, pool).tolist() == scores.tolist()
        assert scored(stage, model, state, spec.build()).tolist() == scores.tolist()

        order = np.random.default_rng(len(spec.items)).permutation(len(spec.items))
        co = spec.co_engagement
        permuted = PoolSpec(
            tuple(spec.items[k] for k in order),
            None if co is None else tuple(co[k] for k in order),
        )
        again = scored(stage, model, state, permuted.build())
        # a product may round otherwise at another row: ~1e-7 of a float32 term (features
        # such as the ranker's), ~1e-13 of the value model's float64 embedding term
        np.testing.assert_allclose(again, scores[order], rtol=1e-5, atol=1e-6)
