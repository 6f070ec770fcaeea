"""Helpers for the move tests: a copy of the small deployment whose us policy allows
moves to eu, and a user with every kind of data to move."""

from __future__ import annotations

import time
from pathlib import Path

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.models.training import train_and_publish
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment

MOVER = "mona-moves"
CLASH = "clash-1"


def allow_moves(root: Path, source: str = "us", to: str = "eu") -> None:
    with (root / "fyp.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[regions.{source}.policy.moves]\nallow_to = ["{to}"]\n')


def plant_mover(root: Path, user: str = MOVER, region: str = "us", train: bool = True) -> None:
    """A user of ``region`` with events (a follow and a not-interested among them),
    held-out labels, an invitation in their attributes, and pages served to them."""
    with Deployment.open(root) as d:
        Catalog(d).create_user(
            UserIn(
                user_id=user,
                home_region=region,
                birth_year=1995,
                country="US",
                attributes={"invited_by": "u0" if region == "us" else "u1"},
            )
        )
        events = [
            {
                "event_id": f"{user}-{k}",
                "user_id": user,
                "video_id": f"v{k}",
                "type": "play",
                "watch_ms": 20_000,
            }
            for k in range(6)
        ]
        events += [
            {"event_id": f"{user}-f", "user_id": user, "video_id": "v7", "type": "follow"},
            {"event_id": f"{user}-n", "user_id": user, "video_id": "v8", "type": "not_interested"},
            # an id a user of the other region holds too (ids are unique per region only)
            {"event_id": CLASH, "user_id": user, "video_id": "v9", "type": "like"},
        ]
        other = "u1" if region == "us" else "u0"
        results = Ingestor(d).ingest(events).results
        results += (
            Ingestor(d)
            .ingest([{"event_id": CLASH, "user_id": other, "video_id": "v3", "type": "like"}])
            .results
        )
        assert all(r.status == "stored" for r in results), [r.to_dict() for r in results]
        d.store(region).insert_label_sets("kuairec", "test", {user: ["v20", "v21"]})
        log = d.served_log(region)
        now = time.time_ns() // 1_000_000
        log.record_served(user, ["v30", "v31"], now - 60_000)
        log.record_served(user, ["v32"], now - 1_000)
        log.flush_served()
        if train:  # the region's model learns from them (an artifact to scrub at the move)
            train_and_publish(
                d.store(region),
                d.config.region_dir(region),
                consent=consent_policy(d.config, region),
            )
