from __future__ import annotations

from fastapi.testclient import TestClient

from fyp.access.keys import KeyStore
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app


def test_feed_route(trained: Deployment) -> None:
    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(trained), headers=headers) as client:
        r = client.get("/v1/users/u2/feed", params={"n": 5})
        assert r.status_code == 200
        body = r.json()
        assert body["region"] == "us" and len(body["items"]) == 5
        assert set(body["items"][0]) == {"video_id", "position", "score", "source", "reason"}
        nxt = client.get("/v1/users/u2/feed", params={"n": 5, "cursor": body["next_cursor"]})
        assert not {i["video_id"] for i in nxt.json()["items"]} & {
            i["video_id"] for i in body["items"]
        }
        debug = client.get("/v1/users/u2/feed", params={"n": 5, "debug": True}).json()
        assert any(r["stage"] == "already_seen" for r in debug["removed"])
        assert client.get("/v1/users/nobody/feed").json()["error"]["code"] == "unknown_user"
        assert client.get("/v1/users/u2/feed", params={"n": 0}).status_code == 422
        bad = client.get("/v1/users/u2/feed", params={"cursor": "@@"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
