"""The behaviour every ``fyp.feed.candidates.CandidateSource`` must have.

A source's test module subclasses :class:`CandidateSourceContract` (no ``Test`` prefix,
so pytest collects it only through subclasses) and provides a ``source`` fixture; the
contract runs it on the small trained deployment of ``tests/feed`` (the ``trained``
fixture) for a user with a history and for a brand-new one, through a series of their
own events, and checks:

- what it proposes: at most ``quota`` distinct catalogue items, a score each, and a
  reason for every row;
- ``inputs``: hashable, and two states of one user with equal inputs get equal
  proposals, which is what ``fyp.feed.pipeline.ProposalCache`` relies on to reuse them.
"""

from __future__ import annotations

import numpy as np
import pytest

from contracts.stage_contract import contract_user, user_states
from fyp.feed.candidates import Candidates, CandidateSource
from fyp.feed.reasons import LANGS, Reason
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel
from fyp.regions.deployment import Deployment


def same(a: Candidates, b: Candidates) -> bool:
    rows = range(len(a.items))
    return (
        a.source == b.source
        and a.items.tolist() == b.items.tolist()
        and a.scores.tolist() == b.scores.tolist()
        and [a.explain(r) for r in rows] == [b.explain(r) for r in rows]
    )


class CandidateSourceContract:
    @pytest.fixture
    def source(self) -> CandidateSource:
        raise NotImplementedError

    @pytest.fixture(params=["with history", "brand new"])
    def states(
        self, request: pytest.FixtureRequest, trained: Deployment
    ) -> list[tuple[RegionModel, UserState]]:
        user_id = contract_user(trained, with_history=request.param == "with history")
        return list(user_states(trained, user_id))

    def test_proposes_distinct_catalogue_items_each_with_a_score_and_a_reason(
        self, source: CandidateSource, states: list[tuple[RegionModel, UserState]]
    ) -> None:
        for model, state in states:
            found = source.fetch(model, state)
            items = np.asarray(found.items)
            assert items.dtype == np.int64 and len(items) <= source.quota
            assert len(set(items.tolist())) == len(items)
            assert ((items >= 0) & (items < model.n_items)).all()
            assert len(found.scores) == len(items) and np.isfinite(found.scores).all()
            reasons = [found.explain(r) for r in range(len(items))]
            assert all(isinstance(r, Reason) for r in reasons)
            assert all(r.text(lang) for r in reasons for lang in LANGS)  # in every language

    def test_equal_inputs_give_equal_proposals(
        self, source: CandidateSource, states: list[tuple[RegionModel, UserState]]
    ) -> None:
        seen: dict[object, Candidates] = {}
        for model, state in states:
            key = source.inputs(state)
            if key is None:
                continue  # fetched every time: nothing to keep equal
            hash(key)
            found = source.fetch(model, state)
            if key in seen:
                assert same(seen[key], found), f"{source.name}: equal inputs, other proposals"
            seen[key] = found
