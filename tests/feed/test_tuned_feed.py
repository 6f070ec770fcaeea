"""Feeds of a deployment that tunes its pipeline (``[feed.sources]``, ``[feed.rerank]``)
or A/B tests a tuning: what they serve, and that orders ranked ahead under other
settings are never served. Run again on PostgreSQL by
tests/storage/test_postgres_deployment.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from experiment_helpers import US_USERS, arms_of, ranked_live, with_experiment
from fyp.config import FeedConfig
from fyp.experiments.arms import RANKED_WITH, settings_record
from fyp.experiments.config import CONTROL
from fyp.feed.ahead import ranks_ahead
from fyp.feed.service import FeedService, encode_cursor
from fyp.models.schedule import retrain_reason
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment

CURSOR = encode_cursor(0, 7)  # one session: the same exploration draws for every service


def tune(d: Deployment, **feed: Any) -> None:
    """``[feed]`` of the open deployment as ``feed`` sets it (a service built afterwards,
    as a restarted server, ranks with it)."""
    d.config = replace(d.config, feed=FeedConfig.from_dict(feed))


def codes(service: FeedService, users: list[str], pages: int = 3) -> list[str]:
    """The reason codes of ``pages`` pages of each user, ranked live (``debug``)."""
    return [
        item.why.code
        for user in users
        for p in range(pages)
        for item in service.feed(
            user, n=10, cursor=encode_cursor(p, 7), record=False, debug=True
        ).items
    ]


def test_a_source_turned_off_never_reaches_a_page(trained: Deployment) -> None:
    """``fresh = 0``: no page says ``new_on_fyp``, while with the defaults some do."""
    assert codes(FeedService(trained), US_USERS).count("new_on_fyp") > 0
    tune(trained, sources={"fresh": 0})
    service = FeedService(trained)
    assert "fresh" not in [s.name for s in service.pipeline.sources]
    shown = codes(service, US_USERS)
    assert len(shown) == 3 * 10 * len(US_USERS)  # full pages all the same
    assert "new_on_fyp" not in shown
    # the orders ranked ahead under the defaults would have some: not served either
    stored = [i.why.code for u in US_USERS for i in service.feed(u, n=10, record=False).items]
    assert "new_on_fyp" not in stored


def test_a_quota_changes_what_the_source_proposes(trained: Deployment) -> None:
    def proposed(service: FeedService, user: str) -> dict[str, int]:
        model = service.model("us")
        state = service.state(user, model)
        ranked = service.pipeline.run(model, state, 10, np.random.default_rng(0))
        return {c.source: len(c.items) for c in ranked.pool.candidates}

    before = proposed(FeedService(trained), "u0")
    assert before["trending"] == 120  # the whole catalogue (quota 300)
    tune(trained, sources={"trending": 7, "following": 0, "embedding": 12})
    after = proposed(FeedService(trained), "u0")
    assert after["trending"] == 7 and after["embedding"] == 12 and "following" not in after
    assert after["co_engagement"] == before["co_engagement"]  # untouched


def test_the_rerank_settings_are_the_services(trained: Deployment) -> None:
    """``[feed.rerank]``: one exploration share for every user's pipeline, the feed not
    based on profiling's too; with look-alikes allowed (this catalogue has five tags,
    so the rule leaves exploration slots empty) a larger share shows more fresh videos."""
    tune(trained, rerank={"tag_window": 0, "exploration_share": 0.0})
    none = FeedService(trained)
    assert none._impersonal.rerank is none.pipeline.rerank
    tune(trained, rerank={"tag_window": 0, "exploration_share": 0.5})
    half = FeedService(trained)
    assert half.pipeline.rerank.exploration_share == half._impersonal.rerank.exploration_share
    fresh = (
        codes(none, US_USERS, 1).count("new_on_fyp"),
        codes(half, US_USERS, 1).count("new_on_fyp"),
    )
    assert fresh[1] >= fresh[0] + 3 * len(US_USERS)  # ~5 slots a page: the second half's


def test_a_variant_tunes_its_own_pipeline(trained: Deployment) -> None:
    """A variant with its own quotas and exploration share: its users' pages are ranked
    with them (more fresh videos, none of the trending quota past 20), control's exactly
    as without the experiment; the two share the proposal cache, never a proposal."""
    tune(trained, rerank={"tag_window": 0, "exploration_share": 0.0})
    without = FeedService(trained)
    overrides = {"sources": {"trending": 20}, "rerank": {"exploration_share": 0.5}}
    with_experiment(trained, {"share": 0.5, **overrides}, ["us"])
    service = FeedService(trained)
    arms = arms_of(trained)
    control, variant = arms[CONTROL][:6], arms["heads"][:6]
    assert len(control) == len(variant) == 6
    for user in control:
        page = service.feed(user, n=10, cursor=CURSOR, record=False, debug=True).to_dict()
        plain = without.feed(user, n=10, cursor=CURSOR, record=False, debug=True).to_dict()
        assert page.pop("experiment") == {"name": "exp", "variant": CONTROL}
        assert page == plain
    arm = service.arm(variant[0], "us")
    assert arm is not None and arm.variant == "heads"
    assert arm.pipeline.sources is not service.pipeline.sources
    assert [(s.name, s.quota) for s in arm.pipeline.sources if s.name == "trending"] == [
        ("trending", 20)
    ]
    assert arm.pipeline.rerank.exploration_share == 0.5 and arm.pipeline.rerank.tag_window == 0
    assert arm.pipeline._proposals is service.pipeline._proposals
    fresh = {"variant": 0, "plain": 0}
    for user in variant:
        page = service.feed(user, n=10, cursor=CURSOR, record=False, debug=True)
        plain = without.feed(user, n=10, cursor=CURSOR, record=False, debug=True)
        assert [i.video_id for i in page.items] != [i.video_id for i in plain.items]
        fresh["variant"] += sum(i.why.code == "new_on_fyp" for i in page.items)
        fresh["plain"] += sum(i.why.code == "new_on_fyp" for i in plain.items)
    assert fresh["variant"] >= fresh["plain"] + 3 * len(variant), fresh


def test_the_proposal_cache_never_hands_one_arms_proposals_to_another(
    trained: Deployment,
) -> None:
    with_experiment(trained, {"share": 0.5, "sources": {"trending": 9}}, ["us"])
    service = FeedService(trained)
    user = arms_of(trained)["heads"][0]
    arm = service.arm(user, "us")
    assert arm is not None
    model = service.model("us")
    state = service.state(user, model)
    cache = service.pipeline._proposals

    def trending(sources: Any) -> int:
        found = cache.get(state, model, sources)
        return next(len(c.items) for c in found if c.source == "trending")

    # the same user and state, asked with control's sources, then the variant's, then
    # control's again: each set gets its own proposals
    assert trending(service.pipeline.sources) == 120
    assert trending(arm.pipeline.sources) == 9
    assert trending(service.pipeline.sources) == 120


def test_orders_ranked_under_other_settings_are_not_served(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The artifact's orders were ranked with the defaults: after a restart with other
    quotas no user is served from them (each page runs the pipeline) and ``--if-changed``
    retrains; once it has, the new orders serve again. Back to the defaults: the same."""
    store, region_dir = trained.store("us"), trained.config.region_dir("us")

    def reason() -> str | None:
        settings = settings_record(trained.config.ranking, trained.config.feed)
        return retrain_reason(store, region_dir, None, None, settings)

    assert ranked_live(FeedService(trained), US_USERS, monkeypatch) == set()
    assert reason() is None
    tune(trained, sources={"trending": 40})
    assert ranked_live(FeedService(trained), US_USERS, monkeypatch) == set(US_USERS)
    why = reason()
    assert why is not None and "[feed.sources]" in why
    train_and_publish(
        store, region_dir, augment=ranks_ahead(trained, "us"), consent=ConsentPolicy()
    )
    service = FeedService(trained)
    recorded = service.model("us").manifest.lineage[RANKED_WITH]
    assert recorded["sources"]["trending"] == 40
    assert reason() is None
    assert ranked_live(service, US_USERS, monkeypatch) == set()
    tune(trained, rerank={"creator_decay": 0.3})  # the re-ranker counts as much
    assert ranked_live(FeedService(trained), US_USERS, monkeypatch) == set(US_USERS)
    assert reason() is not None


def test_a_model_from_before_the_record_counts_as_ranked_with_the_defaults(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = FeedService(trained)
    model = service.model("us")
    del model.manifest.lineage[RANKED_WITH]  # as an artifact trained before this session
    assert ranked_live(service, US_USERS, monkeypatch) == set()
    tune(trained, sources={"category_interest": 10})
    tuned = FeedService(trained)
    tuned._live._models["us"], tuned._live._checked["us"] = model, float("inf")
    assert ranked_live(tuned, US_USERS, monkeypatch) == set(US_USERS)
