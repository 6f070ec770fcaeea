"""What the contracts of the feed's stages share: their inputs, and how they draw them.

A stage's contract (``filter_contract``, ``scorer_contract``) subclasses
:class:`StageContract` and says in ``check`` what must hold for one input: a region
model, a user's state and a candidate pool. Its test module provides a ``stage``
fixture (the filter or scorer); ``stage_inputs`` (``tests/feed/conftest.py``) is
:func:`feed_inputs` of the small trained deployment of ``tests/feed``. ``check`` runs on

- hypothesis examples: a region model, one of its real states or one :func:`states`
  draws, and a pool :func:`pools` draws;
- an empty pool, for every real state.

The inputs:

- :func:`user_states`: a user's states through a series of their own events, read by a
  real ``FeedService`` (what a stage gets in serving; the candidate source contract
  runs on them too);
- :func:`feed_inputs`: ``us``'s model with the multi-objective heads, ``eu``'s without,
  each with such states of a user of its region, a few videos withdrawn after training;
- :func:`states`: states folded by ``build_state`` from drawn events (known videos and
  one newer than the model, learned and fresh), served videos, ages, known and unknown
  users;
- :func:`pools`: any catalogue items in any order, with or without a co-engagement
  feature (:class:`PoolSpec`: a stage writes to its pool's log, so each call gets a
  pool built afresh).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fyp.models.ranker as ranker
from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.events.schema import EVENT_TYPES, StoredEvent, play_labels
from fyp.feed.candidates import Candidates
from fyp.feed.pool import Pool
from fyp.feed.service import FeedService
from fyp.feed.state import UserState, build_state
from fyp.models.region_model import RegionModel
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy
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
NEW_USER = "contract-new"
NEWER = "newer-than-model"  # a video id the model has not learned


def contract_user(d: Deployment, with_history: bool) -> str:
    """``u5`` (eu), who has a history, or a brand-new user of us (created here)."""
    if with_history:
        return "u5"
    Catalog(d).create_user(UserIn(user_id=NEW_USER, home_region="us", birth_year=1990))
    return NEW_USER


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


class RegionInputs:
    """A region's model, and states of a user of the region (by the model: the service's).
    Not a dataclass: hypothesis would print the model's arrays with every failure."""

    def __init__(self, model: RegionModel, states: list[UserState]) -> None:
        self.model, self.states = model, states

    def __repr__(self) -> str:
        region = self.model.manifest.region
        return f"RegionInputs({region}, heads={self.model.heads is not None})"


def feed_inputs(d: Deployment) -> list[RegionInputs]:
    """Each region's model with the states of a user of its region (changes ``d``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ranker, "MIN_POSITIVES", 5)  # the fixture is tiny
        train_and_publish(d.store("us"), d.config.region_dir("us"), consent=ConsentPolicy())
    out = []
    for with_history in (True, False):
        found = list(user_states(d, contract_user(d, with_history)))
        out.append(RegionInputs(found[0][0], [state for _, state in found]))
    for region in d.regions:  # withdrawn after training: still in the models
        for k in range(3, 120, 17):
            d.store(region).delete_video(f"v{k}")
    assert {r.model.heads is None for r in out} == {True, False}
    return out


@st.composite
def states(draw: st.DrawFn, region: RegionInputs) -> UserState:
    """One of the region's real states, or one folded from drawn events."""
    if draw(st.booleans()):
        return region.states[draw(st.integers(0, len(region.states) - 1))]
    model = region.model
    # a third of the catalogue, so that events, served videos and pools meet
    videos = st.sampled_from([*model.video_ids.tolist()[:40], NEWER])
    drawn = draw(st.lists(st.tuples(st.sampled_from(EVENT_TYPES), videos, st.integers(0, 30_000))))
    fresh = draw(st.integers(0, len(drawn)))  # the newest ``fresh`` are newer than the model
    learned = model.manifest.snapshot.max_seq
    events = []
    for k, (kind, video, watch_ms) in enumerate(drawn):
        labels = play_labels(watch_ms if kind == "play" else None, 15_000)
        seq = learned + len(drawn) - k if k < fresh else learned - k
        row = (seq, f"e{k}", "", video, kind, seq, watch_ms, *astuple(labels))
        events.append(StoredEvent(*row))
    codes = st.tuples(st.integers(-1, len(model.creator_ids) - 1), st.integers(-1, 5))
    return build_state(
        draw(st.sampled_from(["not-in-model", *list(model.user_index)[:2]])),
        model.manifest.region,
        draw(st.sampled_from([None, 15, 30])),
        events,
        draw(st.lists(videos, max_size=30)),
        model,
        outside={NEWER: draw(codes)},
    )


@dataclass(frozen=True)
class PoolSpec:
    """A pool of ``items`` in that order (a source's, not ``merge``'s sorted one), from
    one source, with a co-engagement feature or none."""

    items: tuple[int, ...]
    co_engagement: tuple[float, ...] | None

    def build(self) -> Pool:
        items = np.asarray(self.items, np.int64)
        found = Candidates("contract", items, np.ones(len(items), np.float32), str)
        features = {}
        if self.co_engagement is not None:
            features["co_engagement"] = np.asarray(self.co_engagement, np.float32)
        n = len(items)
        return Pool(items, np.zeros(n, np.int64), np.arange(n), [found], features)


@st.composite
def pools(draw: st.DrawFn, model: RegionModel) -> PoolSpec:
    size = draw(st.integers(0, model.n_items))  # from none to the whole catalogue
    items = draw(st.permutations(range(model.n_items)))[:size]
    co = st.floats(0, 10, width=32)  # a source's score, or 0 where it proposed nothing
    feature = draw(st.none() | st.lists(co, min_size=len(items), max_size=len(items)))
    return PoolSpec(tuple(items), None if feature is None else tuple(feature))


class StageContract:
    @pytest.fixture
    def stage(self) -> object:
        raise NotImplementedError

    def check(self, stage: Any, model: RegionModel, state: UserState, spec: PoolSpec) -> None:
        """What must hold for ``stage`` on this input."""
        raise NotImplementedError

    # the stage fixture is not built again for each example: stages hold no state
    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(data=st.data())
    def test_drawn_inputs(
        self, stage: object, stage_inputs: list[RegionInputs], data: st.DataObject
    ) -> None:
        region = data.draw(st.sampled_from(stage_inputs), label="region")
        state = data.draw(states(region), label="state")
        self.check(stage, region.model, state, data.draw(pools(region.model), label="pool"))

    def test_an_empty_pool(self, stage: object, stage_inputs: list[RegionInputs]) -> None:
        for region in stage_inputs:
            for state in region.states:
                self.check(stage, region.model, state, PoolSpec((), None))
