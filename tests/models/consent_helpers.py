"""A small region whose users' consents to model training the tests set: every user
plays and likes a few videos; ``objector`` is the only one to engage with ``v_only``."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.feed.ahead import ranks_ahead
from fyp.models.artifacts import Manifest, current_version, read_arrays, read_manifest
from fyp.models.training import TrainParams, train_and_publish
from fyp.moderation import Moderator
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from postgres_server import SERVER, deployments_on_postgres

USERS = [f"u{n}" for n in range(40)]
OBJECTOR = "objector"
ONLY = "v_only"  # nobody but the objector engages with it
VIDEOS = [f"v{n}" for n in range(300)] + [ONLY]
FAST = TrainParams(als_iterations=3, factors=8)
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set"),
    ),
]


@contextmanager
def on_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Deployments made meanwhile keep their stores on ``backend``."""
    with deployments_on_postgres(monkeypatch) if backend == "postgresql" else nullcontext():
        yield


def events(with_objector: bool = True) -> list[dict[str, Any]]:
    """The same events every time (times too), the objector's among them or not."""
    rng = random.Random(11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    for k in range(3000):
        user = USERS[rng.randrange(len(USERS))]
        video = VIDEOS[min(int(rng.expovariate(1 / 25)), len(VIDEOS) - 2)]  # a few popular
        kind = rng.choice(["play", "play", "like", "skip", "share"])
        out.append(
            {
                "event_id": f"e{k}",
                "user_id": user,
                "video_id": video,
                "type": kind,
                **({"watch_ms": rng.choice([1_000, 30_000])} if kind == "play" else {}),
                "ts": (start + timedelta(minutes=k)).isoformat(),
            }
        )
        if k % 40 == 0 and with_objector:  # the objector's events, among everyone's
            mine = ONLY if k % 80 == 0 else video
            for n, (kind, extra) in enumerate(
                [("play", {"watch_ms": 30_000}), ("like", {}), ("share", {})]
            ):
                out.append(
                    {
                        "event_id": f"o{k}-{n}",
                        "user_id": OBJECTOR,
                        "video_id": mine,
                        "type": kind,
                        **extra,
                        "ts": (start + timedelta(minutes=k, seconds=n + 1)).isoformat(),
                    }
                )
    return out


def build(
    root: Path,
    consents: dict[str, dict[str, bool]] | None = None,
    with_objector: bool = True,
    policy: str = "",
) -> Deployment:
    """The region ``us``: users (with ``consents``), videos, events, moderated.
    ``policy``: TOML lines for ``[regions.us.policy.consent]``."""
    d = Deployment.init(root, ["us"])
    if policy:
        d.close()
        toml = root / "fyp.toml"
        toml.write_text(
            toml.read_text("utf-8") + f"\n[regions.us.policy.consent]\n{policy}\n", "utf-8"
        )
        d = Deployment.open(root)
    catalog = Catalog(d)
    for user in [*USERS, OBJECTOR]:
        given = (consents or {}).get(user)
        catalog.create_user(UserIn(user_id=user, home_region="us", birth_year=1990, consents=given))
    for n, video in enumerate(VIDEOS):
        catalog.create_video(
            VideoIn(
                video_id=video,
                creator_id=USERS[n % 3],
                duration_ms=20_000,
                regions=["us"],
                categories=[f"c{n % 4}"],
                tags=[f"t{n % 5}"],
            )
        )
    given = events(with_objector)
    for start in range(0, len(given), 1000):
        Ingestor(d).ingest(given[start : start + 1000])
    Moderator(d).run("us")
    return d


def train(d: Deployment) -> Manifest:
    return train_and_publish(
        d.store("us"),
        d.config.region_dir("us"),
        FAST,
        augment=ranks_ahead(d, "us"),
        consent=consent_policy(d.config, "us"),
    )


def live(d: Deployment) -> tuple[Manifest, dict[str, np.ndarray]]:
    region_dir = d.config.region_dir("us")
    version = current_version(region_dir)
    assert version is not None
    return read_manifest(region_dir, version), read_arrays(region_dir, version)
