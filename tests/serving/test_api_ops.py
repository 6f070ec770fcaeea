"""HTTP API: /healthz and /v1/regions."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

import fyp
import fyp.storage.sqlite_served_log as served_log_module
from fyp.catalog.models import User
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app


def test_healthz(client: TestClient, deployment: Deployment) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["version"] == fyp.__version__
    assert list(body["regions"]) == ["us", "eu"]
    for region, info in body["regions"].items():
        assert info == {"schema": deployment.store(region).schema_version()}
        assert info["schema"] >= 1


def test_health_and_readiness_answer_head_probes(client: TestClient) -> None:
    """Monitors and load balancers probe with HEAD: the GET's status, no body."""
    for path in ("/healthz", "/readyz"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code  # /readyz: 503 here (no model trained)
        assert head.content == b"" and head.headers["content-type"] == "application/json"
    assert client.head("/healthz").status_code == 200
    # other routes keep HEAD out: a HEAD of a feed must not record a page as shown
    assert client.head("/v1/users/a/feed").status_code == 405


def test_regions_counts(client: TestClient) -> None:
    empty = client.get("/v1/regions")
    assert empty.status_code == 200
    assert empty.json() == {
        "regions": {
            "us": {"users": 0, "videos": 0, "events": 0},
            "eu": {"users": 0, "videos": 0, "events": 0},
        }
    }
    client.post("/v1/users", json={"user_id": "a", "home_region": "us"})
    client.post("/v1/users", json={"user_id": "b", "home_region": "eu"})
    client.post("/v1/users", json={"user_id": "c", "home_region": "eu"})
    client.post("/v1/videos", json={"video_id": "v", "duration_ms": 9_000, "regions": ["us", "eu"]})
    event = {"event_id": "e1", "user_id": "b", "video_id": "v", "type": "like"}
    assert client.post("/v1/events", json=event).status_code == 201
    assert client.get("/v1/regions").json() == {
        "regions": {
            "us": {"users": 1, "videos": 1, "events": 0},
            "eu": {"users": 2, "videos": 1, "events": 1},
        }
    }


def test_create_app_from_a_directory(deployment: Deployment, admin_headers: dict[str, str]) -> None:
    with TestClient(create_app(deployment.config.root), headers=admin_headers) as c:
        assert c.get("/healthz").json()["regions"].keys() == {"us", "eu"}
        assert c.post("/v1/users", json={"user_id": "x", "home_region": "eu"}).status_code == 201
    assert deployment.store("eu").get_user("x") is not None


def test_openapi_is_published(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    for path in ("/v1/users", "/v1/videos", "/v1/events", "/v1/events/batch", "/healthz"):
        assert path in paths


def test_a_server_forgets_served_pages_older_than_the_seen_window(
    deployment: Deployment, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(served_log_module, "SERVED_FORGET_S", 0.05)
    store = deployment.store("us")
    store.insert_user(User(user_id="old", home_region="us", created_at_ms=1, updated_at_ms=1))
    now = time.time_ns() // 1_000_000
    window = deployment.config.feed.seen_window_ms
    store.record_served("old", ["v-before"], now - window - 60_000)
    store.record_served("old", ["v-within"], now - window + 60_000)
    with TestClient(create_app(deployment.config.root), headers=admin_headers):
        deadline = time.monotonic() + 5
        while len(store.served_since("old", 0)) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert store.served_since("old", 0) == ["v-within"]
