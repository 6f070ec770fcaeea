"""Fixtures: a two-region deployment with different moderation policies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moderation_helpers import POLICIES, with_policies

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.moderation import Moderator, Reviews
from fyp.regions.deployment import Deployment


@pytest.fixture
def policed(tmp_path: Path) -> Iterator[Deployment]:
    """Regions us and eu with different policies; adult creator a1 (us), minor m1 (eu),
    x1 (eu) without a birth year."""
    with with_policies(tmp_path / "dep", POLICIES) as d:
        catalog = Catalog(d)
        catalog.create_user(UserIn(user_id="a1", home_region="us", birth_year=1990))
        catalog.create_user(UserIn(user_id="m1", home_region="eu", birth_year=2015))
        catalog.create_user(UserIn(user_id="x1", home_region="eu"))
        yield d


@pytest.fixture
def moderator(policed: Deployment) -> Moderator:
    return Moderator(policed)


@pytest.fixture
def reviews(moderator: Moderator) -> Reviews:
    return Reviews(moderator)
