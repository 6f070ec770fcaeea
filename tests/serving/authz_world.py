"""A two-region world for access-control tests: a user, a video and a review job per region.

``snapshot`` fingerprints every table of every store and each region's directory files
(ledger, secrets), so a test can assert that a refused request changed nothing at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from fyp.access.keys import KeyStore
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

REGIONS = ("us", "eu")


@dataclass
class World:
    deployment: Deployment
    client: TestClient  # no default headers: every request says which key it sends
    admin: str
    jobs: dict[str, str]  # region -> an open review job there

    def key(self, *roles: str, regions: list[str] | None = None, name: str = "k") -> str:
        return KeyStore(self.deployment).create(name, roles, regions)[1]


def headers(token: str, reason: str | None = "checking access") -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}"}
    if reason is not None:
        out["X-Fyp-Reason"] = reason
    return out


def user(region: str) -> str:
    return f"u-{region}"


def creator(region: str) -> str:
    return f"c-{region}"


def video(region: str) -> str:
    return f"v-{region}"


def build_world(directory: Path) -> Iterator[World]:
    """Users ``u-us``/``u-eu``, videos ``v-us``/``v-eu`` (one region each) and ``v-both``
    by adult creators ``c-us``/``c-eu`` (so the creator rules let them reach the app),
    moderated, one blocked video with an open appeal (a review job) in each region."""
    with Deployment.init(directory, list(REGIONS)) as d:
        _, admin = KeyStore(d).create("world-admin", ["admin"])
        with TestClient(create_app(d)) as client:
            h = headers(admin)
            for r in REGIONS:
                ok(client.post("/v1/users", json={"user_id": user(r), "home_region": r}, headers=h))
                adult = {"user_id": creator(r), "home_region": r, "birth_year": 1990}
                ok(client.post("/v1/users", json=adult, headers=h))
                body = {"video_id": video(r), "duration_ms": 9000, "regions": [r]}
                ok(client.post("/v1/videos", json={**body, "creator_id": creator(r)}, headers=h))
            body = {"video_id": "v-both", "creator_id": creator("us"), "duration_ms": 9000}
            body["regions"] = list(REGIONS)
            ok(client.post("/v1/videos", json=body, headers=h))
            ok(client.post("/v1/moderation/runs", json={}, headers=h))
            jobs: dict[str, str] = {}
            for r in REGIONS:
                down = {"actor_id": "mod-1", "reason": "test", "regions": [r]}
                ok(client.post(f"/v1/moderation/videos/{video(r)}/takedown", json=down, headers=h))
                appeal = {"region": r, "appellant_id": user(r), "reason": "mine"}
                resp = client.post(
                    f"/v1/moderation/videos/{video(r)}/appeals", json=appeal, headers=h
                )
                jobs[r] = ok(resp)["job_id"]
                event = {
                    "event_id": f"e-{r}",
                    "user_id": user(r),
                    "video_id": "v-both",
                    "type": "like",
                }
                ok(client.post("/v1/events", json=event, headers=h))
            yield World(d, client, admin, jobs)


def ok(resp: object) -> dict[str, object]:
    status = getattr(resp, "status_code", 0)
    assert 200 <= status < 300, getattr(resp, "text", "")
    body: dict[str, object] = resp.json()  # type: ignore[attr-defined]
    return body


def snapshot(d: Deployment) -> dict[str, str]:
    """A digest of every table of every region store, and of every file beside them."""
    out: dict[str, str] = {}
    for r in d.regions:
        folder = d.config.region_dir(r)
        db = sqlite3.connect(folder / "store.sqlite")
        try:
            tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in sorted(tables):
                rows = db.execute(f'SELECT * FROM "{t}"').fetchall()
                out[f"{r}:{t}"] = hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()
        finally:
            db.close()
        for f in sorted(folder.rglob("*")):
            if f.is_file() and not f.name.startswith("store.sqlite"):
                out[f"{r}:{f.relative_to(folder)}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out
