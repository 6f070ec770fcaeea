"""Every filter of fyp through the filter contract, found by walking Filter's subclasses:
a new one is covered as it is written (one that takes arguments says how to build it
in ``BUILT``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import pytest

from contracts.filter_contract import FilterContract
from contracts.implementations import builders, implementations
from fyp.feed.filters import AlreadySeen, Available, Eligibility, Filter, NotInterested, allow_all
from fyp.feed.state import UserState
from fyp.moderation import ModerationEligibility
from fyp.moderation.snapshot import snapshot_for
from fyp.regions.deployment import Deployment


def fails(*args: object) -> NoReturn:
    raise RuntimeError("store unreachable")


def odd_ones(video_ids: Sequence[str], state: UserState) -> dict[str, str]:
    return {v: f"{v} is odd" for v in video_ids if int(v.removeprefix("v")) % 2}


BUILT: Mapping[type[Filter], Mapping[str, Callable[[Deployment], Filter]]] = {
    Eligibility: {
        "allow_all": lambda d: Eligibility(allow_all),
        "moderation": lambda d: Eligibility(ModerationEligibility(d)),  # looked up per item
        "custom": lambda d: Eligibility(odd_ones),
        "failing": lambda d: Eligibility(fails),
    },
    Available: {
        "live": lambda d: Available(snapshot_for(d.store("us")).live_ids),
        "failing": lambda d: Available(fails),
    },
}


def test_the_walk_finds_every_filter() -> None:
    found = set(implementations(Filter))
    assert {AlreadySeen, NotInterested, Eligibility, Available} <= found
    assert set(BUILT) <= found


class TestFilters(FilterContract):
    @pytest.fixture(params=builders(Filter, BUILT))
    def stage(self, request: pytest.FixtureRequest, trained_once: Deployment) -> Filter:
        found: Filter = request.param(trained_once)
        return found
