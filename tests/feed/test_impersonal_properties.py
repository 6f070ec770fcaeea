"""The feed not based on profiling, on drawn states: whatever a user's history, their
page carries no personal source or reason, and depends only on what they were shown or
acted on, what they said no to, and their region and age."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.stage_contract import RegionInputs, states
from fyp.feed.filters import Eligibility, allow_all
from fyp.feed.impersonal import (
    PERSONAL_SOURCES,
    REASONS,
    impersonal_pipeline,
    impersonal_state,
)
from fyp.feed.pipeline import RankedPage
from fyp.feed.rerank import RerankParams
from fyp.feed.state import ServedMask, UserState


def ranked(region: RegionInputs, state: UserState, seed: int) -> RankedPage:
    """As FeedService ranks a page and one ahead for an opted-out user."""
    rng = np.random.default_rng([seed, 1, len(state.seen)])
    pipeline = impersonal_pipeline(RerankParams())
    return pipeline.run(
        region.model,
        impersonal_state(state),
        10,
        rng,
        extra_filters=[Eligibility(allow_all)],
        backfill=10,
    )


def explained(page: RankedPage) -> list[tuple[int, float, str, str]]:
    pool = page.pool
    return [
        (int(pool.items[r]), float(page.scores[r]), pool.source(r), pool.reason(r).code)
        for r in page.order
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_a_non_profiled_page_reads_nothing_personal(
    stage_inputs: list[RegionInputs], data: st.DataObject, seed: int
) -> None:
    region = data.draw(st.sampled_from(stage_inputs), label="region")
    user = data.draw(states(region), label="user")
    other = data.draw(states(region), label="another history")
    # the other's history (positives, affinities, follows, latest videos, vector's id)
    # with the user's seen videos, "not interested" and age
    mixed = dataclasses.replace(
        other,
        region=user.region,
        age=user.age,
        seen=dict(user.seen),
        served=dict(user.served),
        acted=None if user.acted is None else dict(user.acted),
        not_interested_videos=user.not_interested_videos,
        not_interested_creators=user.not_interested_creators,
        not_interested_categories=user.not_interested_categories,
        served_mask=ServedMask(),
        _seen_mask=None,
        _seen_mask_for=None,
    )
    page = explained(ranked(region, user, seed))
    assert not {source for _, _, source, _ in page} & PERSONAL_SOURCES
    assert {code for _, _, _, code in page} <= REASONS
    seen = user.seen_mask(region.model)
    assert not any(seen[item] for item, _, _, _ in page)
    assert page == explained(ranked(region, mixed, seed))
