"""Feeds of an experiment's users: a variant is ranked with its own weights, control
exactly as without the experiment, and the page says which arm ranked it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from experiment_helpers import US_USERS, arms_of, ranked_live, with_experiment
from fyp.access.keys import KeyStore
from fyp.catalog.service import Catalog
from fyp.config import RankingConfig
from fyp.events.ingest import Ingestor
from fyp.experiments.assignment import variant_of
from fyp.experiments.config import CONTROL
from fyp.feed.ahead import ranks_ahead
from fyp.feed.scoring import RankerScorer
from fyp.feed.service import FeedService, encode_cursor
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment
from fyp.serving import responses
from fyp.serving.app import create_app

INVERTED = {"long_play": -5.0, "like": 0.0, "share": 0.0, "follow": 0.0, "skip": 5.0}


@pytest.fixture
def heads(trained: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """The us model with learned heads (the fixture is tiny), every user ranked ahead
    with it, and [ranking] scorer = multi_objective."""
    import fyp.models.ranker as ranker

    monkeypatch.setattr(ranker, "MIN_POSITIVES", 5)
    trained.config = replace(trained.config, ranking=RankingConfig(scorer="multi_objective"))
    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    train_and_publish(
        store, region_dir, augment=ranks_ahead(trained, "us"), consent=ConsentPolicy()
    )
    return trained


def test_a_variant_is_ranked_with_its_weights_and_control_as_without_it(
    heads: Deployment,
) -> None:
    without = FeedService(heads)
    with_experiment(heads, {"share": 0.5, "objective_weights": INVERTED}, ["us"])
    service = FeedService(heads)
    arms = arms_of(heads)
    assert len(arms[CONTROL]) >= 5 and len(arms["heads"]) >= 5
    assert service.model("us").heads is not None
    cursor = encode_cursor(0, 7)  # the same session: the same exploration draws
    for user in arms[CONTROL][:5]:
        plain = without.feed(user, n=10, cursor=cursor, record=False).to_dict()
        page = service.feed(user, n=10, cursor=cursor, record=False).to_dict()
        assert page.pop("experiment") == {"name": "exp", "variant": CONTROL}
        assert page == plain
        debug = service.feed(user, n=5, cursor=cursor, record=False, debug=True).to_dict()
        plain_debug = without.feed(user, n=5, cursor=cursor, record=False, debug=True).to_dict()
        assert {**debug, "experiment": None} == {**plain_debug, "experiment": None}
    differs = 0
    for user in arms["heads"][:5]:
        # debug: both ranked live, with the same draws; only the weights differ
        plain = without.feed(user, n=10, cursor=cursor, record=False, debug=True)
        page = service.feed(user, n=10, cursor=cursor, record=False, debug=True)
        assert page.to_dict()["experiment"] == {"name": "exp", "variant": "heads"}
        assert len(page.items) == 10
        differs += [i.video_id for i in page.items] != [i.video_id for i in plain.items]
    assert differs == 5  # every variant user's page is ranked with the inverted weights
    variant = service.arm(arms["heads"][0], "us")
    assert variant is not None and isinstance(variant.pipeline.scorer, RankerScorer)
    assert variant.pipeline.scorer.objective_weights == INVERTED
    assert variant.pipeline._proposals is service.pipeline._proposals  # one cache


def test_stored_orders_serve_the_users_whose_arm_they_were_ranked_for(
    heads: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order ranked ahead before the experiment fits control's users only; after a
    training run with it, every user's; after a share changes, the users whose arm did
    not. The rest are ranked live, and `fyp train --if-changed` retrains."""
    from fyp.experiments.arms import RANKED_FOR, region_record
    from fyp.models.schedule import retrain_reason

    with_experiment(heads, {"share": 0.5, "objective_weights": INVERTED}, ["us"])
    arms = arms_of(heads)
    service = FeedService(heads)
    model = service.model("us")
    assert RANKED_FOR not in model.manifest.lineage  # trained before the experiment
    assert ranked_live(service, US_USERS, monkeypatch) == set(arms["heads"])
    user = arms["heads"][0]
    page = FeedService(heads).feed(user, n=5, record=False)
    order = model.ahead.get(user) if model.ahead is not None else None
    assert order is not None  # control's order: not what the variant ranks
    assert [i.video_id for i in page.items] != model.video_ids[order.items[:5]].tolist()
    store, region_dir = heads.store("us"), heads.config.region_dir("us")
    record = region_record(heads.config, "us")
    assert retrain_reason(store, region_dir, record) is not None  # the experiment started

    pipelines: dict[str, Any] = {}
    real_ahead = FeedService.rank_ahead

    def spy(self: FeedService, model: Any, state: Any, *rest: Any, **named: Any) -> Any:
        pipelines[state.user_id] = rest[3] if len(rest) > 3 else None
        return real_ahead(self, model, state, *rest, **named)

    monkeypatch.setattr(FeedService, "rank_ahead", spy)
    train_and_publish(store, region_dir, augment=ranks_ahead(heads, "us"), consent=ConsentPolicy())
    monkeypatch.setattr(FeedService, "rank_ahead", real_ahead)
    experiment = heads.config.experiments[0]
    for ranked, pipeline in pipelines.items():  # each with their arm's pipeline
        in_variant = variant_of(experiment, ranked) == "heads"
        weights = getattr(pipeline.scorer, "objective_weights", None) if pipeline else None
        assert (weights == INVERTED) == in_variant, ranked
    assert set(arms["heads"]) <= set(pipelines)
    assert retrain_reason(store, region_dir, record) is None
    service = FeedService(heads)
    assert service.model("us").manifest.lineage[RANKED_FOR] == record
    assert ranked_live(service, US_USERS, monkeypatch) == set()  # each ranked for its arm
    retrained = service.model("us")
    stored = retrained.ahead.get(user) if retrained.ahead is not None else None
    assert stored is not None  # ranked with the variant's weights: served as it is
    served = FeedService(heads).feed(user, n=5, record=False)
    assert [i.video_id for i in served.items] == retrained.video_ids[stored.items[:5]].tolist()

    with_experiment(heads, {"share": 0.25, "objective_weights": INVERTED}, ["us"])
    moved = set(arms["heads"]) - set(arms_of(heads)["heads"])  # variant then, control now
    assert moved
    assert ranked_live(FeedService(heads), US_USERS, monkeypatch) == moved
    assert retrain_reason(store, region_dir, region_record(heads.config, "us")) is not None


def test_read_your_writes_holds_for_a_variant_user(trained: Deployment) -> None:
    with_experiment(trained, {"share": 0.5, "exploration_share": 0.3}, ["us", "eu"])
    user = arms_of(trained)["heads"][0]
    service = FeedService(trained)
    first = service.feed(user, n=10)
    assert first.experiment is not None and first.experiment.variant == "heads"
    video = first.items[0].video_id
    creator = Catalog(trained).get_video(video).creator_id
    Ingestor(trained).ingest(
        [{"event_id": "exp-ni", "user_id": user, "video_id": video, "type": "not_interested"}]
    )
    shown = {i.video_id for i in first.items}
    cursor = first.cursor
    for _ in range(3):
        page = service.feed(user, n=10, cursor=cursor)
        assert not shown & {i.video_id for i in page.items}  # never served twice
        catalog = Catalog(trained)
        assert all(catalog.get_video(i.video_id).creator_id != creator for i in page.items)
        shown |= {i.video_id for i in page.items}
        cursor = page.cursor


def test_no_experiment_no_field_and_nothing_built(trained: Deployment) -> None:
    service = FeedService(trained)
    assert service._arms is None and service.arm("u2", "us") is None
    assert "experiment" not in service.feed("u2", n=3, record=False).to_dict()
    with_experiment(trained, {"share": 1.0, "exploration_share": 0.0}, ["us"])
    service = FeedService(trained)
    assert "experiment" not in service.feed("u1", n=3, record=False).to_dict()  # eu: none
    assert service.feed("u2", n=3, record=False).to_dict()["experiment"]["variant"] == "heads"


def test_the_api_answers_with_the_arm(trained: Deployment) -> None:
    with_experiment(trained, {"share": 0.5, "exploration_share": 0.2}, ["us"])
    arms = arms_of(trained)
    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(trained), headers=headers) as client:
        for user, variant in ((arms["heads"][0], "heads"), (arms[CONTROL][0], CONTROL)):
            for params in ({"n": 5}, {"n": 5, "debug": "true"}):  # the fast path, the route
                body = client.get(f"/v1/users/{user}/feed", params=params).json()
                assert body["experiment"] == {"name": "exp", "variant": variant}
                parsed = responses.FeedPage.model_validate(body)  # as documented
                assert parsed.model_dump(mode="json", exclude_unset=True) == body
        assert "experiment" not in client.get("/v1/users/u1/feed").json()
