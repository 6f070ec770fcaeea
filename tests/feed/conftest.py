"""A small trained two-region deployment for feed tests."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.stage_contract import RegionInputs, feed_inputs
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.feed.ahead import ranks_ahead
from fyp.models.training import train_and_publish
from fyp.moderation import Moderator
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment

N_USERS = 60
N_VIDEOS = 120
N_CREATORS = 12


def build(
    directory: Path, store: str | None = None, categories: tuple[str, ...] | None = None
) -> Deployment:
    """``store``: a store URL with {region} in it (default: a SQLite file per region);
    ``categories``: the six categories' names (default ``cat0``..``cat5``)."""
    names = categories or tuple(f"cat{k}" for k in range(6))
    d = Deployment.init(directory, ["us", "eu"], store=store)
    catalog = Catalog(d)
    for u in range(N_USERS):
        region = "us" if u % 2 == 0 else "eu"
        catalog.create_user(UserIn(user_id=f"u{u}", home_region=region, birth_year=1995))
    for v in range(N_VIDEOS):
        catalog.create_video(
            VideoIn(
                video_id=f"v{v}",
                creator_id=f"u{v % N_CREATORS}",
                duration_ms=15_000,
                regions=["us", "eu"],
                categories=[names[v % 6]],
                tags=[str(v % 5)],
            )
        )
    rng = random.Random(3)
    events = []
    for k in range(3000):
        u = rng.randrange(N_USERS)
        # users prefer videos of their own "taste" (category = u % 6) most of the time
        v = rng.randrange(N_VIDEOS)
        if rng.random() < 0.7:
            v = (v - v % 6) + u % 6
        events.append(
            {
                "event_id": f"e{k}",
                "user_id": f"u{u}",
                "video_id": f"v{v % N_VIDEOS}",
                "type": "play",
                "watch_ms": rng.choice([1_000, 20_000, 30_000]),
            }
        )
    ingestor = Ingestor(d)
    for k in range(0, len(events), 500):
        ingestor.ingest(events[k : k + 500])
    moderator = Moderator(d)  # new videos are pending until moderated
    for region in d.regions:
        moderator.run(region)
        # as `fyp train` does: every user's feed is ranked ahead with the new models
        train_and_publish(
            d.store(region),
            d.config.region_dir(region),
            augment=ranks_ahead(d, region),
            consent=ConsentPolicy(),
        )
    return d


@pytest.fixture
def trained(tmp_path: Path) -> Iterator[Deployment]:
    d = build(tmp_path / "dep")
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The same, built once for a module: its tests share it (and what they change)."""
    d = build(tmp_path_factory.mktemp("dep") / "dep")
    try:
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def stage_inputs(trained_once: Deployment) -> list[RegionInputs]:
    """Region models and users' states for the contracts of the feed's stages."""
    return feed_inputs(trained_once)
