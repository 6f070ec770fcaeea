"""HTTP API: /v1/videos."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.catalog.models import Video
from fyp.regions.deployment import Deployment
from serving.errors import assert_error


def video(video_id: str = "v1", regions: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {"video_id": video_id, "duration_ms": 12_000, "regions": regions or ["us"], **kw}


def holders(d: Deployment, video_id: str) -> list[str]:
    return [r for r, s in d.stores.items() if s.get_video(video_id) is not None]


def test_create_and_get_video(client: TestClient, deployment: Deployment) -> None:
    resp = client.post("/v1/videos", json=video("v1", ["us", "eu"], caption="hello", tags=["t"]))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["video_id"] == "v1"
    assert created["regions"] == ["us", "eu"]
    assert created["caption"] == "hello"
    assert created["created_at_ms"] == created["updated_at_ms"] > 0
    got = client.get("/v1/videos/v1")
    assert got.status_code == 200
    assert got.json() == created
    for region in ("us", "eu"):
        resp = client.get("/v1/videos/v1", params={"region": region})
        assert resp.status_code == 200 and resp.json() == created
    assert holders(deployment, "v1") == ["us", "eu"]


def test_video_is_only_where_it_is_published(client: TestClient) -> None:
    assert client.post("/v1/videos", json=video("v1", ["eu"])).status_code == 201
    error = assert_error(client.get("/v1/videos/v1", params={"region": "us"}), 404, "unknown_video")
    assert error["details"] == {"video_id": "v1"}
    assert client.get("/v1/videos/v1", params={"region": "eu"}).status_code == 200


def test_get_unknown_video(client: TestClient) -> None:
    assert_error(client.get("/v1/videos/nope"), 404, "unknown_video")
    error = assert_error(
        client.get("/v1/videos/nope", params={"region": "mars"}), 422, "validation_failed"
    )
    assert error["details"]["problems"][0]["field"] == "query.region"


def test_duplicate_video_is_409(client: TestClient) -> None:
    assert client.post("/v1/videos", json=video("v1", ["us"])).status_code == 201
    assert_error(client.post("/v1/videos", json=video("v1", ["eu"])), 409, "already_exists")


def test_an_undeclared_region_is_a_validation_error(
    client: TestClient, deployment: Deployment
) -> None:
    """A bad value in the body, not a missing resource: 422 naming the item."""
    resp = client.post("/v1/videos", json=video("v1", ["us", "mars"]))
    error = assert_error(resp, 422, "validation_failed")
    assert error["details"]["problems"] == [
        {"field": "body.regions.1", "problem": "region 'mars' is not declared in this deployment"}
    ]
    assert error["details"]["regions"] == ["eu", "us"]
    assert holders(deployment, "v1") == []


def test_creator_must_exist(client: TestClient) -> None:
    error = assert_error(
        client.post("/v1/videos", json=video("v1", creator_id="ghost")), 404, "unknown_user"
    )
    assert error["details"] == {"user_id": "ghost"}
    client.post("/v1/users", json={"user_id": "maker", "home_region": "eu"})
    resp = client.post("/v1/videos", json=video("v1", ["us"], creator_id="maker"))
    assert resp.status_code == 201
    assert resp.json()["creator_id"] == "maker"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"duration_ms": 0}, "body.duration_ms"),
        ({"duration_ms": "long"}, "body.duration_ms"),
        ({"regions": []}, "body.regions"),
        ({"video_id": "a/b"}, "body.video_id"),
        ({"caption": "x" * 4001}, "body.caption"),
        ({"likes": 3}, "body.likes"),
    ],
)
def test_invalid_video_is_422(client: TestClient, patch: dict[str, Any], field: str) -> None:
    error = assert_error(
        client.post("/v1/videos", json={**video(), **patch}), 422, "validation_failed"
    )
    assert field in [p["field"] for p in error["details"]["problems"]]


def test_hashtags_and_caption_are_normalised(client: TestClient) -> None:
    resp = client.post(
        "/v1/videos",
        json=video("v1", hashtags=["#搞笑", "＃搞笑", "搞笑", "#fun"], caption="Cafe\u0301"),
    )
    assert resp.status_code == 201
    body = client.get("/v1/videos/v1").json()
    assert body["hashtags"] == ["搞笑", "fun"]
    assert body["caption"] == "Caf\u00e9"


def test_patch_video(client: TestClient, deployment: Deployment) -> None:
    created = client.post("/v1/videos", json=video("v1", ["us", "eu"])).json()
    resp = client.patch("/v1/videos/v1", json={"caption": "new", "hashtags": ["#a", "a"]})
    assert resp.status_code == 200
    patched = resp.json()
    assert patched["caption"] == "new"
    assert patched["hashtags"] == ["a"]
    assert patched["duration_ms"] == created["duration_ms"]
    assert patched["created_at_ms"] == created["created_at_ms"]
    for region in ("us", "eu"):
        assert client.get("/v1/videos/v1", params={"region": region}).json() == patched


def test_patch_regions_moves_the_video(client: TestClient, deployment: Deployment) -> None:
    client.post("/v1/videos", json=video("v1", ["us", "eu"]))
    resp = client.patch("/v1/videos/v1", json={"regions": ["eu"]})
    assert resp.status_code == 200
    assert resp.json()["regions"] == ["eu"]
    assert holders(deployment, "v1") == ["eu"]
    assert_error(client.get("/v1/videos/v1", params={"region": "us"}), 404, "unknown_video")


def test_patch_errors(client: TestClient) -> None:
    assert_error(client.patch("/v1/videos/nope", json={"caption": "x"}), 404, "unknown_video")
    client.post("/v1/videos", json=video("v1"))
    resp = client.patch("/v1/videos/v1", json={"regions": ["mars"]})
    assert_error(resp, 422, "validation_failed")
    assert_error(client.patch("/v1/videos/v1", json={"video_id": "v2"}), 422, "validation_failed")


@pytest.mark.parametrize("field", ["caption", "hashtags", "attributes", "duration_ms", "regions"])
def test_patch_with_null_never_breaks_the_video(
    deployment: Deployment, admin_headers: dict[str, str], field: str
) -> None:
    from fyp.serving.app import create_app

    app = create_app(deployment)
    with TestClient(app, raise_server_exceptions=False, headers=admin_headers) as client:
        client.post("/v1/videos", json=video("v1", hashtags=["x"]))
        resp = client.patch("/v1/videos/v1", json={field: None})
        assert resp.status_code < 500, resp.text
        Video.model_validate(client.get("/v1/videos/v1").json())


def test_delete_video(client: TestClient, deployment: Deployment) -> None:
    client.post("/v1/videos", json=video("v1", ["us", "eu"]))
    resp = client.delete("/v1/videos/v1")
    assert resp.status_code == 200
    assert resp.json() == {"video_id": "v1", "deleted_from": ["us", "eu"]}
    assert holders(deployment, "v1") == []
    assert_error(client.get("/v1/videos/v1"), 404, "unknown_video")
    assert_error(client.delete("/v1/videos/v1"), 404, "unknown_video")
