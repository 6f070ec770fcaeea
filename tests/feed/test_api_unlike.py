"""Through the HTTP API: a new user's few likes move their feed at once, and taking them
back (``unlike``) moves it back: their next page is exactly that of a user who only saw
the same videos. On SQLite and PostgreSQL stores."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feed.conftest import build
from fyp.access.keys import KeyStore
from fyp.feed.service import encode_cursor
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from consent_helpers import BACKENDS, on_backend

COLD = {"trending", "fresh"}  # a user without positives gets these sources only


@pytest.fixture(params=BACKENDS)
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    with on_backend(request.param, monkeypatch):
        d = build(tmp_path / "dep")
        try:
            yield d
        finally:
            d.close()


def send(client: TestClient, user: str, kind: str, videos: list[str]) -> None:
    body = {
        "events": [
            {"event_id": uuid.uuid4().hex, "user_id": user, "video_id": v, "type": kind}
            for v in videos
        ]
    }
    r = client.post("/v1/events/batch", json=body)
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["stored"] * len(videos), r.text


def page(client: TestClient, user: str, cursor: str) -> dict[str, Any]:
    r = client.get(f"/v1/users/{user}/feed", params={"n": 10, "cursor": cursor})
    assert r.status_code == 200, r.text
    return dict(r.json())


def categories(client: TestClient, body: dict[str, Any]) -> list[str]:
    return [
        client.get(f"/v1/videos/{i['video_id']}").json()["categories"][0] for i in body["items"]
    ]


def test_likes_move_a_new_users_feed_and_unlikes_move_it_back(deployment: Deployment) -> None:
    _, key = KeyStore(deployment).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(deployment), headers=headers) as client:
        for user in ("newbie", "twin"):
            r = client.post("/v1/users", json={"user_id": user, "home_region": "eu"})
            assert r.status_code == 201, r.text
        first = encode_cursor(0, 12345)  # one session for both: the same exploration draws
        cold = page(client, "newbie", first)
        assert {i["source"] for i in cold["items"]} <= COLD
        assert page(client, "twin", first)["items"] == cold["items"], "new users alike"
        cold_cats = categories(client, cold)
        rare = min((f"cat{c}" for c in range(6)), key=lambda c: (cold_cats.count(c), c))
        shown = {i["video_id"] for i in cold["items"]}
        liked = [f"v{k}" for k in range(120) if k % 6 == int(rare[3:]) and f"v{k}" not in shown]
        liked = liked[:3]

        send(client, "newbie", "like", liked)
        warm = page(client, "newbie", cold["next_cursor"])
        warm_cats = categories(client, warm)
        assert {i["source"] for i in warm["items"]} - COLD, "the likes personalise at once"
        assert warm_cats.count(rare) > cold_cats.count(rare), (cold_cats, warm_cats)

        send(client, "newbie", "unlike", liked)
        back = page(client, "newbie", warm["next_cursor"])
        assert {i["source"] for i in back["items"]} <= COLD, "nothing personal is left"
        assert not {i["video_id"] for i in back["items"]} & set(liked), "still seen"
        assert categories(client, back).count(rare) < warm_cats.count(rare)

        # the twin saw the same pages and the same three videos, but never liked them
        warm_ids = [i["video_id"] for i in warm["items"]]
        deployment.served_log("eu").record_served("twin", warm_ids, time.time_ns() // 1_000_000)
        send(client, "twin", "impression", liked)
        assert page(client, "twin", warm["next_cursor"])["items"] == back["items"]
