"""HTTP API: /v1/users."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.regions.deployment import Deployment
from serving.errors import assert_error


def create_user(client: TestClient, user_id: str, region: str = "us", **kw: Any) -> Any:
    resp = client.post("/v1/users", json={"user_id": user_id, "home_region": region, **kw})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_create_and_get_user(client: TestClient, deployment: Deployment) -> None:
    resp = client.post(
        "/v1/users",
        json={"user_id": "u1", "home_region": "eu", "birth_year": 1990, "country": "FR"},
    )
    assert resp.status_code == 201
    created = resp.json()
    assert created["user_id"] == "u1"
    assert created["home_region"] == "eu"
    assert created["birth_year"] == 1990
    assert created["consents"] == {} and created["attributes"] == {}
    assert created["created_at_ms"] == created["updated_at_ms"] > 0
    got = client.get("/v1/users/u1")
    assert got.status_code == 200
    assert got.json() == created
    # Written to the home region only.
    assert deployment.store("eu").get_user("u1") is not None
    assert deployment.store("us").get_user("u1") is None


def test_get_unknown_user(client: TestClient) -> None:
    error = assert_error(client.get("/v1/users/nobody"), 404, "unknown_user")
    assert error["details"] == {"user_id": "nobody"}


@pytest.mark.parametrize("region", ["us", "eu"])
def test_duplicate_user_is_409_in_any_region(client: TestClient, region: str) -> None:
    create_user(client, "u1", "us")
    assert_error(
        client.post("/v1/users", json={"user_id": "u1", "home_region": region}),
        409,
        "already_exists",
    )


def test_unknown_home_region(client: TestClient) -> None:
    error = assert_error(
        client.post("/v1/users", json={"user_id": "u1", "home_region": "mars"}),
        422,
        "validation_failed",
    )
    assert error["details"]["regions"] == ["eu", "us"]
    assert [p["field"] for p in error["details"]["problems"]] == ["body.home_region"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"home_region": "us"}, "body.user_id"),
        ({"user_id": "u 1", "home_region": "us"}, "body.user_id"),
        ({"user_id": "u1", "home_region": "US"}, "body.home_region"),
        ({"user_id": "u1", "home_region": "us", "birth_year": 1066}, "body.birth_year"),
        ({"user_id": "u1", "home_region": "us", "birth_year": "old"}, "body.birth_year"),
        ({"user_id": "u1", "home_region": "us", "nickname": "x"}, "body.nickname"),
    ],
)
def test_invalid_user_is_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    error = assert_error(client.post("/v1/users", json=body), 422, "validation_failed")
    assert field in [p["field"] for p in error["details"]["problems"]]
    assert field in error["message"]


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"a": node}
    return node


@pytest.mark.parametrize(
    ("attributes", "why"),
    [
        (_nested(300), "deeper than 16 levels"),  # was a 500 from the JSON encoder
        ({"x": "y" * 70_000}, "over 65,536"),  # was stored
    ],
)
def test_unbounded_attributes_are_422(client: TestClient, attributes: Any, why: str) -> None:
    body = {"user_id": "u1", "home_region": "us", "attributes": attributes}
    error = assert_error(client.post("/v1/users", json=body), 422, "validation_failed")
    assert why in error["message"]
    create_user(client, "u2", attributes=_nested(16))  # within bounds
    error = assert_error(
        client.patch("/v1/users/u2", json={"attributes": attributes}), 422, "validation_failed"
    )
    assert why in error["message"]


def test_a_non_finite_attribute_is_422_not_null(client: TestClient) -> None:
    raw = b'{"user_id": "u1", "home_region": "us", "attributes": {"score": Infinity}}'
    resp = client.post("/v1/users", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code in (400, 422), resp.text
    assert client.get("/v1/users/u1").status_code == 404


def test_malformed_json_is_400(client: TestClient) -> None:
    resp = client.post("/v1/users", content=b"{bad", headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_request")


def test_a_misspelt_consent_or_a_word_for_a_boolean_is_refused(client: TestClient) -> None:
    """`personalized_feed` (US spelling) was stored, 201, and honoured by nothing: the
    feed stayed personalised; "no" was read as false. Both are 422 now, and nothing is
    written; an app's own key is still kept."""
    body = {"user_id": "u9", "home_region": "us", "consents": {"personalized_feed": False}}
    resp = client.post("/v1/users", json=body)
    assert_error(resp, 422, "validation_failed")
    assert "did you mean 'personalised_feed'?" in resp.json()["error"]["message"]
    assert client.get("/v1/users/u9").status_code == 404
    create_user(client, "u9", "us")
    for consents in ({"model_trainng": False}, {"personalised_feed": "no"}, {"ads": 0}):
        resp = client.patch("/v1/users/u9", json={"consents": consents})
        assert_error(resp, 422, "validation_failed")
    assert client.get("/v1/users/u9").json()["consents"] == {}
    resp = client.patch("/v1/users/u9", json={"consents": {"personalised_feed": False}})
    assert resp.status_code == 200 and resp.json()["consents"] == {"personalised_feed": False}


def test_patch_user(client: TestClient) -> None:
    created = create_user(client, "u1", "eu", country="FR")
    resp = client.patch("/v1/users/u1", json={"language": "fr", "consents": {"ads": False}})
    assert resp.status_code == 200
    patched = resp.json()
    assert patched["language"] == "fr"
    assert patched["consents"] == {"ads": False}
    assert patched["country"] == "FR"
    assert patched["home_region"] == "eu"
    assert patched["created_at_ms"] == created["created_at_ms"]
    assert patched["updated_at_ms"] >= created["updated_at_ms"]
    assert client.get("/v1/users/u1").json() == patched


def test_home_region_cannot_be_patched(client: TestClient, deployment: Deployment) -> None:
    create_user(client, "u1", "us")
    error = assert_error(
        client.patch("/v1/users/u1", json={"home_region": "eu"}), 422, "validation_failed"
    )
    assert "body.home_region" in [p["field"] for p in error["details"]["problems"]]
    assert client.get("/v1/users/u1").json()["home_region"] == "us"
    assert deployment.store("eu").get_user("u1") is None


def test_patch_unknown_user(client: TestClient) -> None:
    assert_error(client.patch("/v1/users/nobody", json={"country": "US"}), 404, "unknown_user")


def test_patch_response_is_what_is_stored(client: TestClient) -> None:
    create_user(client, "u1", "us", consents={"ads": True})
    patched = client.patch("/v1/users/u1", json={"consents": None})
    assert patched.status_code == 200
    assert client.get("/v1/users/u1").json() == patched.json()


def test_delete_user_erases_events(client: TestClient) -> None:
    create_user(client, "u1", "us")
    create_user(client, "u2", "us")
    client.post("/v1/videos", json={"video_id": "v1", "duration_ms": 10_000, "regions": ["us"]})
    for i, uid in enumerate(["u1", "u1", "u2"]):
        resp = client.post(
            "/v1/events",
            json={"event_id": f"e{i}", "user_id": uid, "video_id": "v1", "type": "like"},
        )
        assert resp.status_code == 201, resp.text
    resp = client.delete("/v1/users/u1")
    assert resp.status_code == 200
    body = resp.json()
    assert body["deleted"] == {"users": 1, "events": 2, "labels": 0, "served": 0}
    assert body["user_id"] == "u1" and body["receipt"]["region"] == "us"
    assert_error(client.get("/v1/users/u1"), 404, "unknown_user")
    assert_error(client.get("/v1/users/u1/events"), 404, "unknown_user")
    assert_error(client.delete("/v1/users/u1"), 404, "unknown_user")
    assert [e["event_id"] for e in client.get("/v1/users/u2/events").json()["events"]] == ["e2"]


def test_user_events_newest_first(client: TestClient) -> None:
    create_user(client, "u1", "eu")
    client.post("/v1/videos", json={"video_id": "v1", "duration_ms": 10_000, "regions": ["eu"]})
    for i in range(4):
        event = {
            "event_id": f"e{i}",
            "user_id": "u1",
            "video_id": "v1",
            "type": "play",
            "watch_ms": 1_000 * (i + 1),
            "ts": f"2024-01-01T00:00:0{i}Z",
        }
        assert client.post("/v1/events", json=event).status_code == 201
    resp = client.get("/v1/users/u1/events")
    assert resp.status_code == 200
    body = resp.json()
    assert body["user_id"] == "u1" and body["region"] == "eu"
    assert [e["event_id"] for e in body["events"]] == ["e3", "e2", "e1", "e0"]
    first = body["events"][0]
    assert first["watch_ms"] == 4_000
    assert first["watch_ratio"] == pytest.approx(0.4)
    assert first["short_play"] is False
    limited = client.get("/v1/users/u1/events", params={"limit": 2}).json()
    assert [e["event_id"] for e in limited["events"]] == ["e3", "e2"]


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
def test_user_events_limit_is_validated(client: TestClient, limit: str) -> None:
    create_user(client, "u1")
    error = assert_error(
        client.get("/v1/users/u1/events", params={"limit": limit}), 422, "validation_failed"
    )
    assert "query.limit" in [p["field"] for p in error["details"]["problems"]]
