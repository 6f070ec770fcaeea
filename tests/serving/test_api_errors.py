"""Every error response has the body {"error": {"code", "message", "status", "details"}}."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fyp.errors import StorageError
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from storage.locking import locked

JSON = {"content-type": "application/json"}
EVENT = {"event_id": "e1", "user_id": "u1", "video_id": "v1", "type": "play", "watch_ms": 1}


@pytest.fixture
def api(client: TestClient) -> TestClient:
    assert client.post("/v1/users", json={"user_id": "u1", "home_region": "us"}).status_code == 201
    resp = client.post(
        "/v1/videos", json={"video_id": "v1", "duration_ms": 1_000, "regions": ["us"]}
    )
    assert resp.status_code == 201
    return client


def assert_error_shape(resp: Any, status: int | None = None, code: str | None = None) -> None:
    if status is not None:
        assert resp.status_code == status, resp.text
    assert resp.status_code >= 400
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "status", "details"}, error
    assert error["status"] == resp.status_code
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code


# (method, path, request kwargs, expected status, expected code)
BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("get", "/nope", {}, 404, "not_found"),
    ("get", "/", {}, 404, "not_found"),
    ("get", "/v1/users/u1/nope", {}, 404, "not_found"),
    ("put", "/v1/users/u1", {"json": {}}, 405, "method_not_allowed"),
    ("get", "/v1/users", {}, 405, "method_not_allowed"),
    ("delete", "/v1/events", {}, 405, "method_not_allowed"),
    ("post", "/healthz", {}, 405, "method_not_allowed"),
    ("post", "/v1/users", {"content": b"{bad", "headers": JSON}, 400, "invalid_request"),
    ("post", "/v1/users", {"content": b"\xff\xfe", "headers": JSON}, 400, "invalid_request"),
    ("patch", "/v1/users/u1", {"content": b"{bad", "headers": JSON}, 400, "invalid_request"),
    ("post", "/v1/videos", {"content": b"{bad", "headers": JSON}, 400, "invalid_request"),
    ("patch", "/v1/videos/v1", {"content": b"{bad", "headers": JSON}, 400, "invalid_request"),
    ("post", "/v1/events", {"content": b"{bad", "headers": JSON}, 400, "invalid_request"),
    ("post", "/v1/events/batch", {"content": b"{bad", "headers": JSON}, 400, "invalid_request"),
    ("post", "/v1/users", {"json": {}}, 422, "validation_failed"),
    ("post", "/v1/users", {"json": []}, 422, "validation_failed"),
    (
        "post",
        "/v1/users",
        {"json": {"user_id": "u2", "home_region": "us", "x": 1}},
        422,
        "validation_failed",
    ),
    ("patch", "/v1/users/u1", {"json": {"home_region": "eu"}}, 422, "validation_failed"),
    ("get", "/v1/users/u1/events", {"params": {"limit": "0"}}, 422, "validation_failed"),
    ("get", "/v1/users/u1/events", {"params": {"limit": "x"}}, 422, "validation_failed"),
    (
        "post",
        "/v1/videos",
        {"json": {"video_id": "v2", "duration_ms": 0, "regions": ["us"]}},
        422,
        "validation_failed",
    ),
    ("post", "/v1/events", {"json": {**EVENT, "type": "dance"}}, 422, "validation_failed"),
    ("post", "/v1/events", {"json": {**EVENT, "watch_ms": -1}}, 422, "validation_failed"),
    ("post", "/v1/events/batch", {"json": {"events": 1}}, 422, "validation_failed"),
    ("get", "/v1/users/ghost", {}, 404, "unknown_user"),
    ("delete", "/v1/users/ghost", {}, 404, "unknown_user"),
    ("get", "/v1/users/ghost/events", {}, 404, "unknown_user"),
    ("get", "/v1/videos/ghost", {}, 404, "unknown_video"),
    ("delete", "/v1/videos/ghost", {}, 404, "unknown_video"),
    ("post", "/v1/events", {"json": {**EVENT, "user_id": "ghost"}}, 404, "unknown_user"),
    ("post", "/v1/events", {"json": {**EVENT, "video_id": "ghost"}}, 404, "unknown_video"),
    ("get", "/v1/videos/v1", {"params": {"region": "mars"}}, 422, "validation_failed"),
    (
        "post",
        "/v1/users",
        {"json": {"user_id": "u9", "home_region": "mars"}},
        422,
        "validation_failed",
    ),
    ("get", "/v1/moderation/audit/mars/verify", {}, 404, "unknown_region"),
    (
        "post",
        "/v1/users",
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("post", "/v1/events", {"content": b"", "headers": JSON}, 400, "invalid_request"),
    ("post", "/v1/users", {"json": {"user_id": "u1", "home_region": "eu"}}, 409, "already_exists"),
    (
        "post",
        "/v1/videos",
        {"json": {"video_id": "v1", "duration_ms": 5, "regions": ["us"]}},
        409,
        "already_exists",
    ),
    (
        "post",
        "/v1/events",
        {"json": EVENT, "headers": {"X-Fyp-Region": "eu"}},
        403,
        "residency_violation",
    ),
    ("post", "/v1/events", {"json": {**EVENT, "region": "eu"}}, 403, "residency_violation"),
    ("post", "/v1/events/batch", {"json": {"events": [EVENT] * 1_001}}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    BAD_REQUESTS,
    ids=[f"{m.upper()} {p} {s}" for m, p, _, s, _ in BAD_REQUESTS],
)
def test_every_error_has_the_one_json_shape(
    api: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    resp = api.request(method.upper(), path, **kwargs)
    assert_error_shape(resp, status, code)


def test_validation_errors_list_their_problems(api: TestClient) -> None:
    resp = api.post("/v1/users", json={"user_id": "bad id", "home_region": "US"})
    assert_error_shape(resp, 422, "validation_failed")
    problems = resp.json()["error"]["details"]["problems"]
    assert {p["field"] for p in problems} == {"body.user_id", "body.home_region"}
    assert all(isinstance(p["problem"], str) and p["problem"] for p in problems)


def test_405_says_which_methods_are_allowed(api: TestClient) -> None:
    resp = api.get("/v1/users")
    assert_error_shape(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST"
    # every route of the path, not only the first one (Starlette's said "GET"; found by
    # fuzzing the API)
    resp = api.request("OPTIONS", "/v1/users/u1")
    assert resp.headers["allow"] == "DELETE, GET, HEAD, PATCH", resp.text
    assert resp.json()["error"]["details"] == {"allowed": ["DELETE", "GET", "HEAD", "PATCH"]}
    assert api.put("/v1/videos/v1").headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert api.post("/v1/users/u1/feed").headers["allow"] == "GET"  # no HEAD: routers/feed.py


@pytest.fixture
def lenient(deployment: Deployment, admin_headers: dict[str, str]) -> Iterator[TestClient]:
    """A client that returns 500 responses instead of re-raising server exceptions."""
    app = create_app(deployment)
    with TestClient(app, raise_server_exceptions=False, headers=admin_headers) as c:
        yield c


def test_unexpected_exception_is_500_without_leaking(
    lenient: TestClient, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> int:
        raise RuntimeError("password=hunter2 at /srv/secret/store.sqlite")

    monkeypatch.setattr(deployment.store("us"), "count_users", boom)
    resp = lenient.get("/v1/regions")
    assert_error_shape(resp, 500, "internal_error")
    assert resp.json()["error"] == {
        "code": "internal_error",
        "message": "internal server error",
        "status": 500,
        "details": {},
    }
    assert "hunter2" not in resp.text and "secret" not in resp.text


def test_server_errors_keep_their_status(
    lenient: TestClient, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable() -> int:
        raise StorageError("store is unavailable", region="us")

    monkeypatch.setattr(deployment.store("us"), "count_users", unavailable)
    resp = lenient.get("/v1/regions")
    assert_error_shape(resp, 503, "storage_error")
    assert resp.json()["error"]["details"] == {"region": "us"}


def test_a_store_locked_past_the_busy_timeout_is_a_503_storage_error(
    api: TestClient, lenient: TestClient, deployment: Deployment
) -> None:
    """Another process holding the store's write lock past the busy timeout made SQLite
    say 'database is locked': a 500 internal_error with a traceback (chaos report #5)."""
    user = {"user_id": "u2", "home_region": "us"}
    with locked(deployment, "us"):
        answers = [lenient.post("/v1/users", json=user), lenient.post("/v1/events", json=EVENT)]
    for resp in answers:
        assert_error_shape(resp, 503, "storage_error")
        assert "retry" in resp.json()["error"]["message"]
    assert lenient.post("/v1/users", json=user).status_code == 201  # the retry is stored


# -- property: no request body makes the API answer 5xx or break the error shape ------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.sampled_from(["us", "eu", "u1", "v1", "play", "like", "2024-01-01T00:00:00Z", "#x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
KEYS = [
    "user_id", "home_region", "birth_year", "country", "consents", "attributes", "video_id",
    "creator_id", "caption", "hashtags", "duration_ms", "regions", "event_id", "type",
    "watch_ms", "ts", "region", "events",
]  # fmt: skip
ROUTES = [
    ("POST", "/v1/users"),
    ("POST", "/v1/videos"),
    ("POST", "/v1/events"),
    ("POST", "/v1/events/batch"),
    ("PATCH", "/v1/users/u1"),
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), values),
)
def test_random_bodies_never_break_the_error_shape(
    api: TestClient, route: tuple[str, str], body: Any
) -> None:
    method, path = route
    resp = api.request(method, path, content=json.dumps(body).encode(), headers=JSON)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert_error_shape(resp)


def test_a_body_over_the_limit_is_413_unread(client: TestClient) -> None:
    from serving.errors import assert_error

    big = json.dumps({"user_id": "u1", "home_region": "us", "attributes": {"x": "y" * 1_100_000}})
    error = assert_error(
        client.post("/v1/users", content=big, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert error["details"]["limit"] == 1024 * 1024
    assert client.get("/v1/users/u1").status_code == 404

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        for part in range(0, len(big), 65_536):
            yield big[part : part + 65_536].encode()

    resp = client.post("/v1/users", content=chunks(), headers={"content-type": "application/json"})
    assert_error(resp, 413, "payload_too_large")
    assert client.get("/v1/users/u1").status_code == 404
    event = {"event_id": "e-big", "user_id": "nobody", "video_id": "v", "type": "like"}
    padded = json.dumps({**event, "pad": "x" * 1_100_000})
    resp = client.post("/v1/events", content=padded, headers={"content-type": "application/json"})
    assert_error(resp, 413, "payload_too_large")  # the hot route too


def test_an_unreadable_body_is_invalid_request_on_every_route(client: TestClient) -> None:
    from serving.errors import assert_error

    for path in ("/v1/users", "/v1/events"):
        resp = client.post(path, content=b"\xff\xfe{", headers={"content-type": "application/json"})
        assert_error(resp, 400, "invalid_request")


NUL_REQUESTS: list[tuple[str, str, dict[str, Any], set[str]]] = [
    ("get", "/v1/users/u%001", {}, {"path.user_id"}),
    ("get", "/v1/users/u%001/feed", {}, {"path.user_id"}),  # the fast path
    ("get", "/v1/users/u%001/feed", {"params": {"debug": "true"}}, {"path.user_id"}),
    ("delete", "/v1/users/u%001", {}, {"path.user_id"}),
    ("get", "/v1/videos/v%001", {}, {"path.video_id"}),
    ("get", "/v1/moderation/jobs/us-%001", {}, {"path.job_id"}),
    (
        "post",
        "/v1/users",
        {"json": {"user_id": "u2", "home_region": "us", "country": "P\0"}},
        {"body.country"},
    ),
    (
        "patch",
        "/v1/users/u1",
        {"json": {"attributes": {"k\0": ["\0"]}}},
        {"body.attributes.k\\u0000", "body.attributes.k\\u0000.0"},
    ),
    (
        "post",
        "/v1/videos",
        {"json": {"video_id": "v2", "duration_ms": 9, "regions": ["us"], "caption": "\0"}},
        {"body.caption"},
    ),
    ("post", "/v1/moderation/jobs/claim", {"json": {"reviewer_id": "r\0"}}, {"body.reviewer_id"}),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "fields"),
    NUL_REQUESTS,
    ids=[f"{m.upper()} {p} {sorted(f)[0]}" for m, p, _, f in NUL_REQUESTS],
)
def test_text_with_a_nul_character_is_a_422_naming_it(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], fields: set[str]
) -> None:
    """No store keeps a NUL (PostgreSQL cannot even look one up: each of these was a 500
    there, found by fuzzing the API), so every backend refuses it alike."""
    resp = client.request(method.upper(), path, **kwargs)
    assert_error_shape(resp, 422, "validation_failed")
    problems = resp.json()["error"]["details"]["problems"]
    assert {p["field"] for p in problems} == fields
    assert all("NUL" in p["problem"] for p in problems)


def test_a_nul_escaped_as_text_and_in_an_event_are_not_refused_as_nul(client: TestClient) -> None:
    """``"\\\\u0000"`` is six characters of text; an event's ids take no NUL by their
    patterns, so a batch rejects that event alone."""
    api = client  # the fixture ``api`` is another module's in the PostgreSQL rerun
    assert api.post("/v1/users", json={"user_id": "u1", "home_region": "us"}).status_code == 201
    video = {"video_id": "v1", "duration_ms": 1_000, "regions": ["us"]}
    assert api.post("/v1/videos", json=video).status_code == 201
    resp = api.patch("/v1/users/u1", json={"country": "\\u0000"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["country"] == "\\u0000"
    batch = {"events": [{**EVENT, "event_id": "e\0"}, {**EVENT, "event_id": "e2"}]}
    resp = api.post("/v1/events/batch", json=batch)
    assert resp.status_code == 200, resp.text
    assert [r["status"] for r in resp.json()["results"]] == ["rejected", "stored"]


def test_a_region_in_the_path_that_does_not_exist_is_404(api: TestClient) -> None:
    assert_error_shape(api.get("/v1/moderation/audit/zz/verify"), 404, "unknown_region")


def test_a_scoped_key_gets_the_same_422_for_an_undeclared_region(
    api: TestClient, make_key: Any
) -> None:
    """(``tests/serving/test_api_bodies.py`` has every place a region can be named.)"""
    us_only = {"Authorization": f"Bearer {make_key('ingest', regions=['us'])}"}
    resp = api.post("/v1/users", json={"user_id": "u9", "home_region": "zz"}, headers=us_only)
    assert_error_shape(resp, 422, "validation_failed")
    assert resp.json()["error"]["details"]["regions"] == ["eu", "us"]
    resp = api.post("/v1/users", json={"user_id": "u9", "home_region": "eu"}, headers=us_only)
    assert_error_shape(resp, 403, "forbidden")


def test_the_hot_route_takes_the_configured_body_limit(
    deployment: Deployment, admin_headers: dict[str, str]
) -> None:
    """The fast path capped a single event at 1 MiB whatever [limits] max_body_bytes said,
    so with the limit raised it answered 413 where the route answered otherwise."""
    from serving.errors import assert_error

    app = create_app(deployment)
    app.max_body_bytes = 2 * 1024 * 1024  # what [limits] max_body_bytes = 2 MiB sets
    event = {"event_id": "e-big", "user_id": "nobody", "video_id": "v", "type": "like"}
    padded = json.dumps({**event, "pad": "x" * 1_500_000})
    with TestClient(app, headers=admin_headers) as c:
        resp = c.post("/v1/events", content=padded, headers={"content-type": "application/json"})
        assert resp.status_code != 413
        assert_error(resp, 422, "validation_failed")  # "pad" is not a field: as the route says
