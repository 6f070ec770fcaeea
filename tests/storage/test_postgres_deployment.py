"""Whole deployments on PostgreSQL: the HTTP API's own tests (users, videos, events,
moderation, feeds, keys, audit) run again with every region's store in a schema of a
PostgreSQL server. Runs when ``FYP_TEST_POSTGRES_URL`` names one (CI starts one)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fyp.regions.deployment import Deployment

SERVER = os.environ.get("FYP_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")

from feed.conftest import build  # noqa: E402
from feed.test_api_feed import *  # noqa: E402, F403
from serving.test_api_events import *  # noqa: E402, F403
from serving.test_api_moderation import *  # noqa: E402, F403
from serving.test_api_ops import *  # noqa: E402, F403
from serving.test_api_users import *  # noqa: E402, F403
from serving.test_api_videos import *  # noqa: E402, F403


@pytest.fixture
def schemas() -> Iterator[str]:
    """A store URL template naming schemas of this test, dropped afterwards."""
    import psycopg

    prefix = f"d{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in SERVER else "?"
    yield f"{SERVER}{sep}schema={prefix}_{{region}}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        for region in ("us", "eu"):
            conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}_{region}" CASCADE')


@pytest.fixture
def deployment(tmp_path: Path, schemas: str) -> Iterator[Deployment]:
    """The conftest's two-region deployment (us, eu), its stores on PostgreSQL."""
    with Deployment.init(tmp_path / "dep", ["us", "eu"], store=schemas) as d:
        yield d


@pytest.fixture
def trained(tmp_path: Path, schemas: str) -> Iterator[Deployment]:
    """The feed tests' trained deployment (tests/feed/conftest.py), on PostgreSQL."""
    d = build(tmp_path / "dep", store=schemas)
    try:
        yield d
    finally:
        d.close()


def test_delete_user_erases_events(client: TestClient) -> None:
    """Replaces the API test of that name: erasure reads and rewrites SQLite files and is
    not ported yet, so on a PostgreSQL deployment it is refused before anything changes."""
    client.post("/v1/users", json={"user_id": "u1", "home_region": "us"})
    refused = client.delete("/v1/users/u1")
    assert refused.status_code == 500, refused.text
    assert refused.json()["error"]["code"] == "config_error"
    assert "not available yet" in refused.json()["error"]["message"]
    assert client.get("/v1/users/u1").status_code == 200  # nothing was erased
