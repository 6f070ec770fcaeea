"""Every JSON route reads its body alike: media type (415), empty body (400), and the
paths of invalid fields (``body.…``, ``query.…``, ``header.…``), an undeclared region
among them (422, not 404), on the fast path too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.errors import assert_error

EVENT = {"event_id": "e1", "user_id": "u1", "video_id": "v1", "type": "like"}
# (method, path template, a path for it): every route that takes a JSON body
JSON_ROUTES = [
    ("POST", "/v1/users", "/v1/users"),
    ("PATCH", "/v1/users/{user_id}", "/v1/users/u1"),
    ("POST", "/v1/users/{user_id}/move", "/v1/users/u1/move"),
    ("POST", "/v1/videos", "/v1/videos"),
    ("PATCH", "/v1/videos/{video_id}", "/v1/videos/v1"),
    ("POST", "/v1/events", "/v1/events"),
    ("POST", "/v1/events/batch", "/v1/events/batch"),
    ("POST", "/v1/moderation/runs", "/v1/moderation/runs"),
    ("POST", "/v1/moderation/jobs/claim", "/v1/moderation/jobs/claim"),
    ("POST", "/v1/moderation/jobs/{job_id}/decision", "/v1/moderation/jobs/us-1/decision"),
    ("POST", "/v1/moderation/videos/{video_id}/takedown", "/v1/moderation/videos/v1/takedown"),
    ("POST", "/v1/moderation/videos/{video_id}/appeals", "/v1/moderation/videos/v1/appeals"),
]
ROUTE_IDS = [f"{m} {t}" for m, t, _ in JSON_ROUTES]
NOT_JSON = [
    "application/x-www-form-urlencoded",  # curl -d without -H
    "text/plain",
    "text/plain; charset=utf-8",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/json; charset=latin-1",
    "application/jsonx",
    "json",
]
JSON = ["application/json", "application/json; charset=UTF-8", "Application/JSON", None]
JSON += ["application/merge-patch+json", 'application/vnd.fyp+json; charset="utf-8"']


@pytest.fixture
def api(client: TestClient) -> TestClient:
    assert client.post("/v1/users", json={"user_id": "u1", "home_region": "us"}).status_code == 201
    video = {"video_id": "v1", "duration_ms": 9_000, "regions": ["us"]}
    assert client.post("/v1/videos", json=video).status_code == 201
    return client


@pytest.fixture(params=[True, False], ids=["fast path", "router"])
def either_path(api: TestClient, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The client, with the hot routes' fast path on, then off."""
    from fyp.serving.fastpath import HotRoutes

    if request.param:
        yield api
        return

    async def router_only(self: HotRoutes, *_: object) -> bool:
        return False

    with pytest.MonkeyPatch.context() as m:
        m.setattr(HotRoutes, "__call__", router_only)
        yield api


def test_the_list_holds_every_route_with_a_body(api: TestClient) -> None:
    spec = api.app.openapi()  # type: ignore[attr-defined]
    with_body = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    }
    assert with_body == {(m, t) for m, t, _ in JSON_ROUTES}


@pytest.mark.parametrize(("method", "template", "path"), JSON_ROUTES, ids=ROUTE_IDS)
def test_a_body_not_declared_as_json_is_415(
    either_path: TestClient, method: str, template: str, path: str
) -> None:
    for content_type in NOT_JSON:
        resp = either_path.request(
            method, path, content=b'{"a": 1}', headers={"content-type": content_type}
        )
        error = assert_error(resp, 415, "unsupported_media_type")
        assert error["details"]["accepted"] == ["application/json", "application/*+json"]


@pytest.mark.parametrize(("method", "template", "path"), JSON_ROUTES, ids=ROUTE_IDS)
def test_an_empty_body_is_400_on_every_json_route(
    either_path: TestClient, method: str, template: str, path: str
) -> None:
    for headers in ({"content-type": "application/json"}, {}):
        resp = either_path.request(method, path, content=b"", headers=headers)
        error = assert_error(resp, 400, "invalid_request")
        assert "empty" in error["message"]


def test_json_types_with_a_utf8_charset_or_none_at_all_are_read_as_json(
    either_path: TestClient,
) -> None:
    import json

    for i, content_type in enumerate(JSON):
        headers = {} if content_type is None else {"content-type": content_type}
        user = json.dumps({"user_id": f"ct{i}", "home_region": "eu"})
        resp = either_path.post("/v1/users", content=user, headers=headers)
        assert resp.status_code in (201, 409), (content_type, resp.text)
        event = json.dumps({**EVENT, "event_id": f"ct{i}"})
        resp = either_path.post("/v1/events", content=event, headers=headers)
        assert resp.status_code in (200, 201), (content_type, resp.text)


def fields(resp: Any) -> set[str]:
    return {p["field"] for p in resp.json()["error"]["details"]["problems"]}


# (method, path, request kwargs, the fields the 422 names)
FIELD_CASES: list[tuple[str, str, dict[str, Any], set[str]]] = [
    ("POST", "/v1/users", {"json": {"user_id": "bad id", "home_region": "US"}},
     {"body.user_id", "body.home_region"}),
    ("POST", "/v1/users", {"json": {"user_id": "u2"}}, {"body.home_region"}),
    ("POST", "/v1/users", {"json": [1]}, {"body"}),
    ("PATCH", "/v1/users/u1", {"json": {"attributes": "x"}}, {"body.attributes"}),
    ("POST", "/v1/videos", {"json": {"video_id": "v2", "duration_ms": 1, "regions": [1]}},
     {"body.regions.0"}),
    ("POST", "/v1/events", {"json": {**EVENT, "ts": "x"}}, {"body.ts"}),
    ("POST", "/v1/events", {"json": {**EVENT, "ts": "2999-01-01T00:00:00Z"}}, {"body.ts"}),
    ("POST", "/v1/events", {"json": {**EVENT, "type": "play"}}, {"body.watch_ms"}),
    ("POST", "/v1/events", {"json": {**EVENT, "extra": 1}}, {"body.extra"}),
    ("POST", "/v1/events", {"json": [EVENT]}, {"body"}),
    ("POST", "/v1/events/batch", {"json": {"events": 1}}, {"body.events"}),
    ("POST", "/v1/events/batch", {"json": {"events": [], "x": 1}}, {"body.x"}),
    ("GET", "/v1/users/u1/feed", {"params": {"n": "0"}}, {"query.n"}),
    ("GET", "/v1/users/u1/events", {"params": {"limit": "x"}}, {"query.limit"}),
    ("GET", "/v1/moderation/jobs", {}, {"query.region"}),
    # a region the deployment does not declare, named outside the URL's path: a bad value
    # (422), not a missing resource (404)
    ("POST", "/v1/users", {"json": {"user_id": "u9", "home_region": "zz"}}, {"body.home_region"}),
    ("POST", "/v1/videos", {"json": {"video_id": "v9", "duration_ms": 5, "regions": ["us", "zz"]}},
     {"body.regions.1"}),
    ("PATCH", "/v1/videos/v1", {"json": {"regions": ["zz"]}}, {"body.regions.0"}),
    ("GET", "/v1/videos/v1", {"params": {"region": "zz"}}, {"query.region"}),
    ("POST", "/v1/events", {"json": EVENT, "headers": {"X-Fyp-Region": "ZZ"}},
     {"header.x-fyp-region"}),
    ("POST", "/v1/events/batch", {"json": {"events": [EVENT]}, "headers": {"X-Fyp-Region": "zz"}},
     {"header.x-fyp-region"}),
    ("POST", "/v1/moderation/runs", {"json": {"region": "zz"}}, {"body.region"}),
    ("POST", "/v1/moderation/jobs/claim", {"json": {"reviewer_id": "r", "region": "zz"}},
     {"body.region"}),
    ("GET", "/v1/moderation/jobs", {"params": {"region": "zz"}}, {"query.region"}),
    ("GET", "/v1/moderation/videos/v1/replay", {"params": {"region": "zz"}}, {"query.region"}),
    ("POST", "/v1/moderation/videos/v1/takedown",
     {"json": {"actor_id": "a", "reason": "r", "regions": ["zz"]}}, {"body.regions.0"}),
    ("POST", "/v1/moderation/videos/v1/appeals",
     {"json": {"region": "zz", "appellant_id": "u1", "reason": "r"}}, {"body.region"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "expected"),
    FIELD_CASES,
    ids=[f"{m} {p} {sorted(e)}" for m, p, _, e in FIELD_CASES],
)
def test_every_field_path_starts_at_the_request_root(
    either_path: TestClient, method: str, path: str, kwargs: dict[str, Any], expected: set[str]
) -> None:
    resp = either_path.request(method, path, **kwargs)
    assert_error(resp, 422, "validation_failed")
    assert fields(resp) == expected


def test_a_batch_names_each_rejected_events_fields_by_its_index(api: TestClient) -> None:
    events = [
        {**EVENT, "event_id": "b0"},
        {**EVENT, "event_id": "b1", "ts": "x"},
        {**EVENT, "event_id": "b2", "type": "play"},
        {**EVENT, "event_id": "b3", "ts": "2999-01-01T00:00:00Z"},
    ]
    resp = api.post("/v1/events/batch", json={"events": events})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert results[0]["status"] == "stored"
    named = [{p["field"] for p in r["error"]["details"]["problems"]} for r in results[1:]]
    assert named == [{"body.events.1.ts"}, {"body.events.2.watch_ms"}, {"body.events.3.ts"}]
