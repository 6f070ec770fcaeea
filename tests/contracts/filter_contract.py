"""The behaviour every ``fyp.feed.filters.Filter`` must have.

A filter's test module subclasses :class:`FilterContract` (no ``Test`` prefix, so pytest
collects it only through subclasses) and provides a ``stage`` fixture: the filter. It
runs on the inputs of :mod:`contracts.stage_contract` (hypothesis pools and states, and
an empty pool) and checks that the filter returns what it kept and what it removed:

- kept and removed partition the candidates (together all of them, none in both, none
  removed twice); the kept rows keep their order, provenance and features;
- each removal is logged once, after what earlier stages logged, with the filter's
  ``name`` as its stage and a non-empty reason; ``removals`` and ``reasons`` agree;
- the same input gives the same result (an empty pool: empty results).
"""

from __future__ import annotations

import numpy as np

from contracts.stage_contract import PoolSpec, StageContract
from fyp.feed.filters import Filter
from fyp.feed.pool import Pool, Removed
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel

EARLIER = Removed("earlier-video", "earlier_stage", "logged before the filter ran")


def applied(
    f: Filter, model: RegionModel, state: UserState, spec: PoolSpec
) -> tuple[Pool, list[Removed]]:
    """The pool ``f`` returns and the removals it logged, on a pool built afresh whose
    log holds an earlier stage's removal."""
    pool = spec.build()
    pool.removed.add(EARLIER.stage, np.asarray([EARLIER.video_id]), EARLIER.reason)
    out = f.apply(model, state, pool)
    logged = list(out.removed)
    assert out.removed is pool.removed and logged[0] == EARLIER, "not appended to the log"
    return out, logged[1:]


class FilterContract(StageContract):
    def check(self, stage: Filter, model: RegionModel, state: UserState, spec: PoolSpec) -> None:
        out, removed = applied(stage, model, state, spec)
        kept = out.items.tolist()
        gone = [model.video_index[r.video_id] for r in removed]
        assert len(set(gone)) == len(gone), "a candidate removed twice"
        assert set(kept) | set(gone) == set(spec.items), "kept and removed are not the pool"
        assert not set(kept) & set(gone), "a candidate both kept and removed"

        rows = [spec.items.index(item) for item in kept]
        assert rows == sorted(rows), "the kept candidates changed order"
        pool = spec.build()
        assert out.origin.tolist() == pool.origin[rows].tolist()
        assert out.position.tolist() == pool.position[rows].tolist()
        assert out.features.keys() == pool.features.keys()
        for name, values in out.features.items():
            assert values.tolist() == pool.features[name][rows].tolist()

        assert stage.name and stage.name != Filter.name, "the filter has no name of its own"
        for r in removed:
            assert r.stage == stage.name and isinstance(r.reason, str) and r.reason.strip()
        items = np.asarray(spec.items, np.int64)
        found, why = stage.removals(model, state, items)
        reasons = [why] * len(found) if isinstance(why, str) else why
        by_row = dict(zip(found.tolist(), reasons, strict=True))
        assert by_row == stage.reasons(model, state, items), "removals and reasons differ"

        again, removed_again = applied(stage, model, state, spec)
        assert (again.items.tolist(), removed_again) == (kept, removed), "not deterministic"
