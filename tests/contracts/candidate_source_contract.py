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

from collections.abc import Iterator

import numpy as np
import pytest

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.feed.candidates import Candidates, CandidateSource
from fyp.feed.service import FeedService
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel
from fyp.regions.deployment import Deployment

# each user's events, one at a time, about the videos of their latest page
EVENTS = [
    ("play", {"watch_ms": 500}),  # a skip: nothing the costly sources read changes
    ("play", {"watch_ms": 40_000}),
    ("skip", {}),
    ("like", {}),
    ("share", {}),  # about the video just liked: the same positives, another weight
    ("follow", {}),
    ("not_interested", {}),
]


def user_states(d: Deployment, user_id: str) -> Iterator[tuple[RegionModel, UserState]]:
    """The user's state before and after each of ``EVENTS``."""
    service, ingestor = FeedService(d), Ingestor(d)
    model = service.model(d.home_region(user_id))
    acted: list[str] = []
    for k, (kind, extra) in enumerate([("", {}), *EVENTS]):
        if kind:
            page = service.feed(user_id, n=5, record=False, debug=True)
            video = acted[-1] if kind == "share" else page.items[0].video_id
            acted.append(video)
            event = {"event_id": f"contract-{user_id}-{k}", "user_id": user_id, "type": kind}
            ingestor.ingest([{**event, "video_id": video, **extra}])
        yield model, service.state(user_id, model)


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
        user_id = "u5"
        if request.param == "brand new":
            user_id = "contract-new"
            Catalog(trained).create_user(UserIn(user_id=user_id, home_region="us", birth_year=1990))
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
            assert all(isinstance(found.explain(r), str) for r in range(len(items)))

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
