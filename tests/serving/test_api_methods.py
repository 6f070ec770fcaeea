"""Every route answers every method as HTTP says (``fyp.serving.methods``): the methods a
path declares are served, HEAD wherever GET is (the same status and headers, no body)
but on the For You feed, and any other method is a 405 with ``Allow`` and the one error
body, on the fast path (``fyp.serving.fastpath``) as through the router."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fyp.access.routes import ANY_ID, _endpoints, _within, app_routes
from fyp.audit.log import AuditLog
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.serving.fastpath import HotRoutes
from serving import fuzzing
from serving.errors import assert_error
from serving.servers import Server

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HEAD_REFUSED = {"/v1/users/{user_id}/feed"}
"""GET routes whose HEAD is a 405: serving the feed records the page (routers/feed.py)."""
VOLATILE = {"/metrics", "/v1/regions/{region}/feed"}
"""Bodies that change from one request to the next (the metrics count the request
itself; a guest feed's first page starts a session of its own, whose exploration and
cursor differ): their GET and HEAD differ in Content-Length."""
REAL = {"user_id": "u0", "video_id": "v2", "region": "us", "creator_id": "u45"}
"""Path values naming what the world holds (``job_id``: its first review job)."""
GHOST = {"user_id": "ghost", "video_id": "ghost", "region": "us", "creator_id": "ghost"}
"""Path values for the declared methods that change things: nothing is there to change."""
HOT = {("GET", "/v1/users/{user_id}/feed"), ("POST", "/v1/events")}


@pytest.fixture(scope="module")
def methods_world(tmp_path_factory: pytest.TempPathFactory) -> fuzzing.FuzzWorld:
    """A trained two-region deployment with review jobs and keys, closed (a server opens it)."""
    return fuzzing.build_world(tmp_path_factory.mktemp("methods") / "dep")


@pytest.fixture(scope="module")
def api(methods_world: fuzzing.FuzzWorld) -> Iterator[TestClient]:
    with Deployment.open(methods_world.directory) as d:
        app = create_app(d)
        with TestClient(app, headers=fuzzing.headers(methods_world.admin)) as c:
            yield c


Answered = set[tuple[str, str]]
"""The requests (method, path) the fast path answered: none when it is off."""


@pytest.fixture(params=[True, False], ids=["fast path", "router"])
def either(
    api: TestClient, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, Answered]]:
    """The client with the fast path on, then off; and what the fast path answered."""
    answered: Answered = set()
    real = HotRoutes.__call__

    async def spy(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        done = bool(request.param) and await real(self, scope, receive, send)
        if done:
            answered.add((scope["method"], scope["path"]))
        return done

    with pytest.MonkeyPatch.context() as m:
        m.setattr(HotRoutes, "__call__", spy)
        api.app.state.fast_path_on = request.param  # type: ignore[attr-defined]
        yield api, answered


def fast_path_on(c: TestClient) -> bool:
    return bool(c.app.state.fast_path_on)  # type: ignore[attr-defined]


def declared(app: Any) -> dict[str, set[str]]:
    """Path template -> the methods the app's routes declare for it."""
    out: dict[str, set[str]] = defaultdict(set)
    for method, path in app_routes(app):
        out[path].add(method)
    return dict(out)


def concrete(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def allow(methods: set[str], template: str) -> str:
    """The ``Allow`` of a path: its methods, and HEAD wherever GET is (but the feed's)."""
    if "GET" in methods and template not in HEAD_REFUSED:
        methods = methods | {"HEAD"}
    return ", ".join(sorted(methods))


def assert_405(resp: httpx.Response, allowed: str, what: str) -> None:
    assert resp.status_code == 405, (what, resp.status_code, resp.text)
    assert resp.headers["allow"] == allowed, what
    assert resp.headers["content-type"] == "application/json", what
    if resp.request.method == "HEAD":
        assert resp.content == b"", what
        return
    error = assert_error(resp, 405, "method_not_allowed")
    assert error["details"] == {"allowed": allowed.split(", ")}, what


def test_every_route_answers_every_method(
    either: tuple[TestClient, Answered], methods_world: fuzzing.FuzzWorld
) -> None:
    c, answered = either
    real = {**REAL, "job_id": methods_world.jobs[0]}
    ghost = {**GHOST, "job_id": f"{methods_world.jobs[0]}999"}
    routes = declared(c.app)
    assert len(routes) >= 30 and routes.keys() >= HEAD_REFUSED
    for (literal, general), decided in LITERAL_OVER_PARAMETER.items():
        if decided == "id":  # the parameter's methods serve the literal's path too
            routes[literal] = routes[literal] | routes[general]
    compared = 0
    for template, methods in sorted(routes.items()):
        path = concrete(template, real)
        for method in METHODS:
            what = f"{method} {template}"
            if method in methods and method not in ("GET", "HEAD"):
                resp = c.request(method, concrete(template, ghost))  # no body: 4xx
                assert resp.status_code != 405 and resp.status_code < 500, (what, resp.text)
            elif method == "HEAD" and "GET" in methods and template not in HEAD_REFUSED:
                head, get = c.head(path), c.get(path)
                assert head.status_code == get.status_code, what
                assert get.status_code < 500, (what, get.text)
                assert head.content == b"", what
                expected = dict(get.headers)
                if template in VOLATILE:
                    expected["content-length"] = head.headers["content-length"]
                elif "content-length" in expected:
                    assert int(expected["content-length"]) == len(get.content), what
                assert dict(head.headers) == expected, what
                compared += 1
            elif method in methods:  # GET
                resp = c.request(method, path)
                assert resp.status_code != 405 and resp.status_code < 500, (what, resp.text)
            else:
                assert_405(c.request(method, path), allow(methods, template), what)
    assert compared >= 20
    hot = {(m, concrete(t, real)) for m, t in HOT}
    assert answered == (hot if fast_path_on(c) else set()), answered


def test_a_literal_segment_is_not_a_parameter_of_another_method(api: TestClient) -> None:
    """``/v1/moderation/jobs/claim`` is not the job ``claim`` (it was a 404 naming it):
    job ids are the server's (``us-12``)."""
    assert_405(api.get("/v1/moderation/jobs/claim"), "POST", "GET claim")
    assert_405(api.head("/v1/moderation/jobs/claim"), "POST", "HEAD claim")
    # the parameter still takes every other value
    assert api.get("/v1/moderation/jobs/claimed").json()["error"]["code"] == "unknown_job"


def test_a_creator_id_is_never_taken_by_a_literal(api: TestClient) -> None:
    """A creator id is the client's (a user id): ``feed`` is one like any other, so a PUT
    or DELETE of ``.../following/feed`` is a follow or unfollow (here of a creator
    ``feed`` with no video in the region: 404, and a 204), not a 405 (as it was from session 22:
    a creator ``feed`` could only be followed by events). Its GET is the Following tab;
    the path's other methods are 405s naming all four."""
    assert_error(api.put("/v1/users/u0/following/feed"), 404, "unknown_creator")
    assert api.delete("/v1/users/u0/following/feed").status_code == 204
    assert_error(api.put("/v1/users/u0/following/feeds"), 404, "unknown_creator")
    assert api.get("/v1/users/u0/following/feed").json()["user_id"] == "u0"  # the tab
    for method in ("POST", "PATCH", "OPTIONS"):
        resp = api.request(method, "/v1/users/u0/following/feed")
        assert_405(resp, "DELETE, GET, HEAD, PUT", f"{method} following/feed")


LITERAL_OVER_PARAMETER = {
    ("/v1/moderation/jobs/claim", "/v1/moderation/jobs/{job_id}"): "405",
    ("/v1/users/{user_id}/following/feed", "/v1/users/{user_id}/following/{creator_id}"): "id",
}
"""Each path whose literal segment a parameter of another route could take, and the
decision: a 405 (the parameter never takes it) or an id like any other (``any_id``)."""


def test_each_literal_under_a_parameter_is_decided(api: TestClient) -> None:
    """A new route whose literal segment lies in another's parameter must be added above,
    with its decision; a route taking any id shares no method with the literal's route
    (else the path would mean two things)."""
    routes = declared(api.app)
    found: dict[tuple[str, str], str] = {}
    for concrete_path, general in itertools.permutations(routes, 2):
        if _within(concrete_path, general):
            endpoints = [e for m, p, e in _endpoints(api.app) if p == general and m != "HEAD"]
            takes_any = {bool(getattr(e, ANY_ID, False)) for e in endpoints}
            assert len(takes_any) == 1, general  # every method of the path, or none
            found[concrete_path, general] = "id" if takes_any.pop() else "405"
            if found[concrete_path, general] == "id":
                assert not routes[concrete_path] & routes[general], (concrete_path, general)
    assert found == LITERAL_OVER_PARAMETER


def test_a_key_is_checked_before_any_405(api: TestClient, methods_world: fuzzing.FuzzWorld) -> None:
    """A 405 names no data, but only a valid key learns it (as a 404): a key of another
    region gets it too, where the job ``claim`` of its region check was a 403."""
    for sent in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        assert_error(api.get("/v1/moderation/jobs/claim", headers=sent), 401, "unauthenticated")
    narrow = fuzzing.headers(methods_world.regional["eu"])
    assert_405(api.get("/v1/moderation/jobs/claim", headers=narrow), "POST", "eu key")


def test_head_is_checked_as_the_get(api: TestClient, methods_world: fuzzing.FuzzWorld) -> None:
    """The same answer to every caller: no key, a key without the role, a key for the
    other region, an operator without a reason."""
    callers = [
        {"Authorization": ""},
        fuzzing.headers(methods_world.narrow["feed"]),
        fuzzing.headers(methods_world.regional["eu"]),
        {"X-Fyp-Reason": ""},
    ]
    statuses = set()
    for path in ("/v1/users/u0", "/v1/users/u0/events", "/v1/moderation/jobs", "/v1/regions"):
        for sent in callers:
            get, head = api.get(path, headers=sent), api.head(path, headers=sent)
            statuses.add(get.status_code)
            assert (head.status_code, head.headers) == (get.status_code, get.headers), path
            assert head.content == b""
    assert statuses == {200, 400, 401, 403, 422}


def test_an_operators_head_of_a_user_is_audited_as_a_read(
    api: TestClient, methods_world: fuzzing.FuzzWorld
) -> None:
    auditor = fuzzing.headers(methods_world.narrow["auditor"])
    assert api.head("/v1/users/u0", headers={**auditor, "X-Fyp-Reason": "ticket 7"}).is_success
    d: Deployment = api.app.state.fyp.deployment  # type: ignore[attr-defined]
    last = list(AuditLog(d.store("us")).entries(action="user_data.read"))[-1]
    assert (last.details["route"], last.details["reason"]) == (
        "HEAD /v1/users/{user_id}",
        "ticket 7",
    )


def test_head_of_the_feed_serves_and_records_no_page(
    either: tuple[TestClient, Answered],
) -> None:
    c, answered = either
    store = c.app.state.fyp.deployment.store("us")  # type: ignore[attr-defined]
    store.flush_served()
    before = store.served_since("u2", 0)
    assert_405(c.head("/v1/users/u2/feed"), "GET", "HEAD feed")
    assert_405(c.head("/v1/users/u2/feed?n=3&debug=true"), "GET", "HEAD feed")
    store.flush_served()
    assert store.served_since("u2", 0) == before and not answered
    assert c.get("/v1/users/u2/feed").status_code == 200
    assert answered == ({("GET", "/v1/users/u2/feed")} if fast_path_on(c) else set())
    store.flush_served()
    assert len(store.served_since("u2", 0)) > len(before)  # what a GET does


@pytest.mark.slow
def test_a_real_server_answers_head_as_its_get(
    methods_world: fuzzing.FuzzWorld, tmp_path: Path
) -> None:
    """Over HTTP, to ``fyp serve`` (uvicorn frames a HEAD itself): the GET's headers,
    ``Content-Length`` included, no body, and nothing the server complains about."""
    server = Server(methods_world.directory, tmp_path / "server.log").start().wait()
    try:
        h = fuzzing.headers(methods_world.admin)
        with httpx.Client(base_url=server.url, headers=h, timeout=30) as http:
            for path in ("/v1/users/u0", "/v1/users/u0/export", "/v1/videos/v2", "/readyz"):
                get, head = http.get(path), http.head(path)
                assert get.status_code == head.status_code == 200, (path, get.text)
                same = {k: v for k, v in get.headers.items() if k not in ("date",)}
                if "content-length" not in get.headers:  # streamed: chunked for a GET only
                    same.pop("transfer-encoding")
                assert {k: v for k, v in head.headers.items() if k != "date"} == same, path
                assert head.content == b""
            assert_405(http.head("/v1/users/u0/feed"), "GET", "HEAD feed")
            assert_405(http.get("/v1/moderation/jobs/claim"), "POST", "GET claim")
            assert http.get("/v1/users/u0/feed").status_code == 200  # the connection lives on
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.stop()
