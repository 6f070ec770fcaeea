"""A small trained two-region deployment and planting tools for erasure and lineage tests."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.models.artifacts import (
    current_version,
    hash_ids,
    new_version,
    read_arrays,
    read_manifest,
    write_artifact,
)
from fyp.models.training import TrainParams, train_and_publish
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

FAST = TrainParams(factors=8, als_iterations=2, neighbours=10, ranker=False)
N_USERS = 24
N_VIDEOS = 30


def user_region(u: int) -> str:
    return "us" if u % 2 == 0 else "eu"


def build(directory: Path, ana: str = "ana-erase-me") -> Deployment:
    """Users u0..u23 (even in us, odd in eu) plus ``ana`` (us), who uploads v0 and v1,
    has events, and is learned by the us model."""
    d = Deployment.init(directory, ["us", "eu"])
    catalog = Catalog(d)
    for u in range(N_USERS):
        catalog.create_user(UserIn(user_id=f"u{u}", home_region=user_region(u), birth_year=1990))
    catalog.create_user(UserIn(user_id=ana, home_region="us", birth_year=1999, country="PT"))
    for v in range(N_VIDEOS):
        catalog.create_video(
            VideoIn(
                video_id=f"v{v}",
                creator_id=ana if v < 2 else f"u{v % N_USERS}",
                caption=f"clip {v}",
                duration_ms=15_000,
                regions=["us", "eu"],
                categories=[f"c{v % 3}"],
            )
        )
    rng = random.Random(5)
    users = [f"u{u}" for u in range(N_USERS)] + [ana] * 4
    events = [
        {
            "event_id": f"e{k}",
            "user_id": rng.choice(users),
            "video_id": f"v{rng.randrange(N_VIDEOS)}",
            "type": rng.choice(["play", "like"]),
            "watch_ms": 20_000,
        }
        for k in range(600)
    ]
    events += [
        {"event_id": f"a{k}", "user_id": ana, "video_id": f"v{k}", "type": "like"} for k in range(5)
    ]
    Ingestor(d).ingest(events)
    for region in d.regions:
        train(d, region)
    return d


def api_headers(d: Deployment) -> dict[str, str]:
    """An all-regions admin key when the deployment has API keys (fyp.access)."""
    try:
        from fyp.access.keys import KeyStore
    except ImportError:  # pragma: no cover - before API keys existed
        return {}
    token = KeyStore(d).create("erasure-tests", ["admin"])[1]
    return {"Authorization": f"Bearer {token}", "X-Fyp-Reason": "tests"}


def api_client(d: Deployment) -> TestClient:
    return TestClient(create_app(d), headers=api_headers(d))


def train(d: Deployment, region: str) -> str:
    return train_and_publish(
        d.store(region), d.config.region_dir(region), FAST, consent=consent_policy(d.config, region)
    ).version


def plant_artifact(
    d: Deployment,
    region: str,
    add_users: list[str],
    manifest_region: str | None = None,
    users_hash: str | None = None,
    make_current: bool = False,
) -> str:
    """A copy of the current artifact that also holds ``add_users`` (with vectors)."""
    region_dir = d.config.region_dir(region)
    version = current_version(region_dir)
    assert version is not None
    manifest = read_manifest(region_dir, version)
    arrays = read_arrays(region_dir, version)
    arrays["user_ids"] = np.concatenate([arrays["user_ids"], np.asarray(add_users)])
    arrays["lineage_user_ids"] = np.concatenate([arrays["lineage_user_ids"], np.asarray(add_users)])
    extra = np.ones((len(add_users), arrays["user_factors"].shape[1]), np.float32)
    arrays["user_factors"] = np.concatenate([arrays["user_factors"], extra])
    manifest.version = new_version()
    manifest.region = manifest_region or manifest.region
    manifest.snapshot = type(manifest.snapshot)(
        **{
            **manifest.snapshot.__dict__,
            "users_sha256": users_hash or hash_ids(str(u) for u in arrays["lineage_user_ids"]),
        }
    )
    write_artifact(region_dir, manifest, arrays, make_current=make_current)
    return manifest.version


def plant_event(d: Deployment, region: str, user_id: str) -> None:
    """An event row for ``user_id`` written behind the store's back (no foreign keys)."""
    path = d.store(region).path  # type: ignore[attr-defined]
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "INSERT INTO events (event_id, user_id, video_id, type, ts_ms) VALUES (?,?,?,?,?)",
            ("planted", user_id, "v1", "like", 1),
        )
        conn.commit()
    finally:
        conn.close()
