"""The OpenAPI document says what the server does: every ``$ref`` resolves, each route
documents the errors it answers with the one error body, who needs a key and a reason,
and real answers match the schemas documented for their status, field for field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from feed.conftest import build
from fyp.access.keys import KeyStore
from fyp.access.routes import RouteIndex
from fyp.catalog.models import User, Video
from fyp.regions.deployment import Deployment
from fyp.serving import responses
from fyp.serving.app import create_app

MODELS: dict[str, type[BaseModel]] = {
    name: cls
    for name, cls in vars(responses).items()
    if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel
} | {"User": User, "Video": Video}
WHY = {"X-Fyp-Reason": "openapi tests"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Deployment]]:
    """A trained deployment (feeds answer) and an admin client."""
    d = build(Path(tmp_path_factory.mktemp("openapi")) / "dep")
    _, key = KeyStore(d).create("openapi", ["admin"])
    try:
        with TestClient(create_app(d), headers={"Authorization": f"Bearer {key}", **WHY}) as c:
            yield c, d
    finally:
        d.close()


@pytest.fixture(scope="module")
def spec(world: tuple[TestClient, Deployment]) -> dict[str, Any]:
    resp = world[0].get("/openapi.json", headers={"Authorization": ""})
    assert resp.status_code == 200
    document: dict[str, Any] = resp.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer (RFC 6901), or a KeyError."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_ref_resolves(spec: dict[str, Any]) -> None:
    found = list(refs(spec))
    assert len(found) > 50
    for ref in found:
        try:
            resolve(spec, ref)
        except KeyError:
            pytest.fail(f"$ref {ref} does not resolve")
    assert "$defs" not in json.dumps(spec)


def test_the_error_body_replaces_fastapis_422(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ErrorBody"]["properties"]) == {"error"}
    assert set(schemas["Error"]["required"]) == {"code", "message", "status", "details"}
    for method, path, op in operations(spec):
        for status, answer in op["responses"].items():
            if int(status) >= 400 and path != "/readyz":  # its 503 is a readiness report
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


def test_each_route_documents_the_errors_it_can_answer(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        statuses = {int(s) for s in op["responses"]}
        if path == "/healthz":
            assert statuses == {200}
            continue
        if path == "/readyz":
            assert statuses == {200, 503}
            continue
        assert {400, 401, 403, 422} <= statuses, (method, path)
        assert op["responses"]["401"]["headers"]["WWW-Authenticate"]
        if "requestBody" in op:
            assert {413, 415} <= statuses, (method, path)
        if "{" in path or path == "/v1/events":  # names an object (events: their user)
            assert 404 in statuses, (method, path)
    assert 409 in {int(s) for s in spec["paths"]["/v1/users"]["post"]["responses"]}
    assert 409 in {int(s) for s in spec["paths"]["/v1/videos"]["post"]["responses"]}
    assert 409 in {int(s) for s in spec["paths"]["/v1/events"]["post"]["responses"]}


def test_only_healthz_and_readyz_are_open(spec: dict[str, Any]) -> None:
    assert spec["security"] == [{"bearer": []}, {"apiKey": []}]
    opened = {(m, p) for m, p, op in operations(spec) if op.get("security") == []}
    assert opened == {(m, p) for m in ("GET", "HEAD") for p in ("/healthz", "/readyz")}
    assert all("security" not in op for m, p, op in operations(spec) if (m, p) not in opened)


def test_x_fyp_reason_is_documented_where_an_operator_read_needs_it(
    spec: dict[str, Any], world: tuple[TestClient, Deployment]
) -> None:
    documented = {
        (m, p)
        for m, p, op in operations(spec)
        for param in op.get("parameters", [])
        if param["name"] == "X-Fyp-Reason"
    }
    assert documented == {
        ("GET", "/v1/users/{user_id}"),
        ("PATCH", "/v1/users/{user_id}"),
        ("GET", "/v1/users/{user_id}/events"),
        ("GET", "/v1/users/{user_id}/export"),
        ("GET", "/v1/users/{user_id}/feed"),
        ("GET", "/v1/users/{user_id}/following"),
        ("GET", "/v1/users/{user_id}/blocked"),
        ("GET", "/v1/users/{user_id}/following/feed"),
        # an operator following, unfollowing, blocking or unblocking for the user
        *(
            (m, f"/v1/users/{{user_id}}/{what}")
            for m in ("PUT", "DELETE")
            for what in ("following/{creator_id}", "blocked/{creator_id}", "following/feed")
        ),
        ("POST", "/v1/users/{user_id}/move"),  # always: kept in both regions' audit logs
    }
    param = next(
        p
        for p in spec["paths"]["/v1/users/{user_id}"]["get"]["parameters"]
        if p["name"] == "X-Fyp-Reason"
    )
    assert param["in"] == "header" and param["required"] is False
    resp = world[0].get("/v1/users/u2", headers={"X-Fyp-Reason": ""})
    assert resp.status_code == 400  # as documented: an admin's read needs it


def check(spec: dict[str, Any], template: str, resp: Any) -> None:
    """The answer is documented for its status, and is exactly what the schema says."""
    op = spec["paths"][template][resp.request.method.lower()]
    answer = op["responses"].get(str(resp.status_code))
    assert answer is not None, f"{resp.status_code} not documented for {template}: {resp.text}"
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    model = MODELS[ref.rsplit("/", 1)[1]]
    body = resp.json()
    parsed = model.model_validate(body)  # raises on a missing or mistyped field
    # ... and nothing undocumented: every field of the answer survives the round trip
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == body


def test_real_answers_match_their_documented_schemas(
    spec: dict[str, Any], world: tuple[TestClient, Deployment], make_key: Any
) -> None:
    c, _ = world
    feed = "/v1/users/{user_id}/feed"
    check(spec, feed, c.get("/v1/users/u2/feed", params={"n": 5}))  # the fast path
    check(spec, feed, c.get("/v1/users/u4/feed", params={"n": 3, "debug": "true"}))
    check(spec, feed, c.get("/v1/users/ghost/feed"))
    check(spec, feed, c.get("/v1/users/u2/feed", params={"n": 0}))
    check(spec, feed, c.get("/v1/users/u2/feed", headers={"Authorization": "Bearer x"}))

    check(spec, "/v1/users", c.post("/v1/users", json={"user_id": "oa", "home_region": "us"}))
    check(spec, "/v1/users", c.post("/v1/users", json={"user_id": "oa", "home_region": "us"}))
    check(spec, "/v1/users", c.post("/v1/users", content=b"x", headers={"content-type": "a/b"}))
    check(spec, "/v1/users", c.post("/v1/users", json={"user_id": "ob", "home_region": "zz"}))
    one = "/v1/users/{user_id}"
    check(spec, one, c.get("/v1/users/oa"))
    check(spec, one, c.patch("/v1/users/oa", json={"country": "PT"}))
    check(spec, one, c.get("/v1/users/ghost"))

    video = {"video_id": "ov", "duration_ms": 9_000, "regions": ["us", "eu"], "creator_id": "oa"}
    check(spec, "/v1/videos", c.post("/v1/videos", json=video))
    check(spec, "/v1/videos/{video_id}", c.get("/v1/videos/ov"))
    check(spec, "/v1/videos/{video_id}", c.patch("/v1/videos/ov", json={"caption": "hi"}))

    event = {"event_id": "oe1", "user_id": "oa", "video_id": "ov", "type": "like"}
    check(spec, "/v1/events", c.post("/v1/events", json=event))  # 201
    check(spec, "/v1/events", c.post("/v1/events", json=event))  # 200 duplicate
    check(spec, "/v1/events", c.post("/v1/events", json={**event, "user_id": "ghost"}))
    check(spec, "/v1/events", c.post("/v1/events", content=b"", headers={}))
    batch = {"events": [{**event, "event_id": "oe2"}, {**event, "event_id": "oe3", "ts": "x"}]}
    check(spec, "/v1/events/batch", c.post("/v1/events/batch", json=batch))
    us_only = {"Authorization": f"Bearer {make_key('ingest', regions=['us'])}"}
    eu_event = {**event, "event_id": "oe4", "user_id": "u1"}
    check(spec, "/v1/events", c.post("/v1/events", json=eu_event, headers=us_only))

    tab = "/v1/users/{user_id}/following/feed"
    assert c.put("/v1/users/u2/following/u7").is_success
    page = c.get("/v1/users/u2/following/feed", params={"n": 2, "include": "video"})
    assert len(page.json()["items"]) == 2 and page.json()["next_cursor"] is not None
    check(spec, tab, page)
    check(spec, tab, c.get("/v1/users/u2/following/feed", params={"n": 100, "lang": "zh-Hant"}))
    check(spec, tab, c.get("/v1/users/ghost/following/feed"))
    check(spec, tab, c.get("/v1/users/u2/following/feed", params={"cursor": "@@"}))
    check(spec, tab, c.get("/v1/users/u2/following/feed", params={"n": 0}))

    guest = "/v1/regions/{region}/feed"
    page = c.get("/v1/regions/us/feed", params={"n": 3, "include": "video", "lang": "zh-Hans"})
    assert len(page.json()["items"]) == 3
    check(spec, guest, page)
    check(spec, guest, c.get("/v1/regions/eu/feed", params={"cursor": page.json()["next_cursor"]}))
    check(spec, guest, c.get("/v1/regions/zz/feed"))
    check(spec, guest, c.get("/v1/regions/us/feed", params={"n": 101}))

    check(spec, "/v1/users/{user_id}/events", c.get("/v1/users/oa/events"))
    check(spec, "/v1/users/{user_id}/events", c.get("/v1/users/u2/events", params={"limit": 3}))
    check(spec, "/v1/users/{user_id}/export", c.get("/v1/users/u2/export"))
    check(spec, "/v1/users/{user_id}/export", c.get("/v1/users/oa/export"))
    check(spec, "/v1/regions", c.get("/v1/regions"))
    check(spec, "/healthz", c.get("/healthz", headers={"Authorization": ""}))
    check(spec, "/v1/videos/{video_id}", c.delete("/v1/videos/ov"))
    check(spec, "/v1/users/{user_id}", c.delete("/v1/users/oa"))
    check(spec, "/v1/users/{user_id}", c.delete("/v1/users/oa"))


REFUSALS = [
    # (route, the request's method and path, params or body, what the description names)
    ("/v1/users/{user_id}/feed", "GET", "/v1/users/u2/feed", {"lang": "xx"}, "`lang`"),
    ("/v1/users/{user_id}/feed", "GET", "/v1/users/u2/feed", {"cursor": "@@"}, "`cursor`"),
    ("/v1/regions/{region}/feed", "GET", "/v1/regions/us/feed", {"lang": "xx"}, "`lang`"),
    ("/v1/regions/{region}/feed", "GET", "/v1/regions/us/feed", {"cursor": "@@"}, "`cursor`"),
    (TAB := "/v1/users/{user_id}/following/feed", "GET", "/v1/users/u2/following/feed",
     {"lang": "xx"}, "`lang`"),
    (TAB, "GET", "/v1/users/u2/following/feed", {"cursor": "@@"}, "`cursor`"),
    ("/v1/users/{user_id}/following", "GET", "/v1/users/u2/following", {"cursor": "@@"},
     "`cursor`"),
    ("/v1/users/{user_id}/blocked", "GET", "/v1/users/u2/blocked", {"cursor": "@@"}, "`cursor`"),
    ("/v1/events", "POST", "/v1/events",
     {"event_id": "ow", "user_id": "u2", "video_id": "v2", "type": "play",
      "watch_ms": 10**10}, "`watch_ms`"),
    ("/v1/moderation/videos/{video_id}/replay", "GET", "/v1/moderation/videos/orp/replay",
     {"region": "us"}, "no automated verdict"),
]  # fmt: skip


@pytest.mark.parametrize(("template", "method", "path", "sent", "named"), REFUSALS)
def test_each_refusal_is_documented_for_its_route(
    spec: dict[str, Any],
    world: tuple[TestClient, Deployment],
    template: str,
    method: str,
    path: str,
    sent: dict[str, Any],
    named: str,
) -> None:
    """An unsupported ``lang``, a cursor the API did not give, a ``watch_ms`` over the
    deployment's limit, a replay with nothing to replay: the route's document lists the
    status they get, and its description says so (it named none of them)."""
    c, _ = world
    unchecked = {"video_id": "orp", "creator_id": "u2", "duration_ms": 9_000, "regions": ["us"]}
    assert c.post("/v1/videos", json=unchecked).status_code in (201, 409)  # not moderated
    resp = c.get(path, params=sent) if method == "GET" else c.post(path, json=sent)
    assert 400 <= resp.status_code < 500, resp.text
    check(spec, template, resp)
    answer = spec["paths"][template][method.lower()]["responses"][str(resp.status_code)]
    assert named in answer["description"], (template, resp.status_code, answer)
    assert resp.json()["error"]["code"] in answer["description"]


def test_the_documented_models_are_the_ones_checked(spec: dict[str, Any]) -> None:
    """``check`` validates with the class a $ref names: it must be that class's schema."""
    schemas = spec["components"]["schemas"]
    for name, model in MODELS.items():
        assert name in schemas, f"{name} is not in the document"
        documented = set(schemas[name].get("properties", {}))
        assert documented == {f.alias or n for n, f in model.model_fields.items()}, name


def marked(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema the document marks as a region name."""
    if isinstance(node, dict):
        if node.get("x-fyp-region") is True:
            yield node
        for value in node.values():
            yield from marked(value)
    elif isinstance(node, list):
        for value in node:
            yield from marked(value)


def test_every_region_a_request_names_is_one_of_the_deployments(spec: dict[str, Any]) -> None:
    """The API answers 422 for an undeclared region: the document lists the declared
    ones (a fuzzer's schema-valid regions were all refused before)."""
    regions = list(marked(spec))
    assert len(regions) >= 12
    assert all(r["enum"] == ["us", "eu"] for r in regions), regions
    schemas = spec["components"]["schemas"]
    assert schemas["UserIn"]["properties"]["home_region"]["enum"] == ["us", "eu"]
    assert schemas["MoveIn"]["properties"]["to"]["enum"] == ["us", "eu"]
    assert schemas["VideoIn"]["properties"]["regions"]["items"]["enum"] == ["us", "eu"]
    for path, name in [
        ("/v1/moderation/jobs", "region"),
        ("/v1/moderation/videos/{video_id}/replay", "region"),
        ("/v1/events", "X-Fyp-Region"),
    ]:
        method = "post" if path == "/v1/events" else "get"
        params = spec["paths"][path][method]["parameters"]
        assert next(p for p in params if p["name"] == name)["schema"]["enum"] == ["us", "eu"]


def test_request_schemas_are_no_laxer_than_their_validation(
    spec: dict[str, Any], world: tuple[TestClient, Deployment]
) -> None:
    """What the fuzzer found documented but refused: a video patch's null, a blank
    reviewer or reason, an expected audit head that is not SEQ:HASH."""
    schemas = spec["components"]["schemas"]
    for name, field in schemas["VideoPatch"]["properties"].items():
        assert "null" not in json.dumps(field), name
    assert schemas["DecisionIn"]["properties"]["reason"]["pattern"] == r"\S"
    assert schemas["ClaimIn"]["properties"]["reviewer_id"]["pattern"] == r"\S"
    verify = spec["paths"]["/v1/moderation/audit/{region}/verify"]["get"]["parameters"]
    head = next(p for p in verify if p["name"] == "expect_head")
    assert head["schema"]["anyOf"][0]["pattern"] == "^[0-9]+:[0-9a-f]{64}$"
    c, _ = world
    resp = c.get("/v1/moderation/audit/us/verify", params={"expect_head": "x"})
    assert resp.status_code == 422, resp.text
    resp = c.get("/v1/moderation/jobs", params={"region": "A!"})
    assert resp.status_code == 422, resp.text


GHOSTS = {"user_id": "ghost", "video_id": "ghost", "creator_id": "ghost", "region": "us"}
"""Path values that name nothing (a region must be one, or the access check refuses it
before routing); no route's literal segment is one of them."""


def instance(template: str) -> str:
    """A concrete URL of ``template``, with :data:`GHOSTS` (a job id of none)."""
    return re.sub(r"\{(\w+)\}", lambda m: GHOSTS.get(m.group(1), "us-999999"), template)


def strict_match(paths: Iterable[str], url: str) -> str:
    """The declared path a strict OpenAPI validator takes ``url`` for: of those matching it
    segment by segment, the most concrete (OpenAPI matches concrete paths before templated
    ones), which must be the only one that concrete."""
    found: list[tuple[int, str]] = []
    for path in paths:
        mine, theirs = path.split("/"), url.split("/")
        if len(mine) != len(theirs):
            continue
        pairs = zip(mine, theirs, strict=True)
        if all(a == b or (a.startswith("{") and a.endswith("}")) for a, b in pairs):
            found.append((sum(not a.startswith("{") for a in mine), path))
    assert found, url
    found.sort(reverse=True)
    assert len(found) == 1 or found[0][0] > found[1][0], (url, found)
    return found[0][1]


def test_a_strict_validator_finds_every_method_the_server_serves(
    spec: dict[str, Any], world: tuple[TestClient, Deployment]
) -> None:
    """For each concrete path, the path item a strict validator picks declares exactly the
    methods the server routes there (``HEAD`` aside: every GET route but the For You feed
    answers it, and the document lists it for the probes only). ``PUT`` and ``DELETE``
    of ``.../following/feed`` follow and unfollow the creator ``feed``: the document
    declared only the Following tab's GET there."""
    served = RouteIndex(world[0].app)  # type: ignore[arg-type]
    for path in spec["paths"]:
        url = instance(path)
        assert strict_match(spec["paths"], url) == path, url  # no path item hides another
        declared = {m.upper() for m in spec["paths"][path]} - {"HEAD"}
        assert declared == set(served.allowed(url)) - {"HEAD"}, url
    literal = spec["paths"]["/v1/users/{user_id}/following/feed"]
    assert set(literal) == {"get", "put", "delete"}
    # an operator's needs a reason, as the general operation's does
    assert [p["name"] for p in literal["put"]["parameters"]] == ["user_id", "X-Fyp-Reason"]
    general = spec["paths"]["/v1/users/{user_id}/following/{creator_id}"]
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids))
    for method in ("put", "delete"):  # the same operation, creator_id fixed
        assert literal[method]["responses"] == general[method]["responses"]
        assert literal[method].get("security") == general[method].get("security")


def test_every_declared_operation_reaches_a_handler(
    spec: dict[str, Any], world: tuple[TestClient, Deployment]
) -> None:
    """A client generated from the document can call each operation: the request is
    routed to a handler (it answers for the values sent: no such user, a missing body),
    never the router's 404 or a 405."""
    c, _ = world
    for method, path, _ in operations(spec):
        resp = c.request(method, instance(path))
        what = f"{method} {path}: {resp.status_code} {resp.text[:200]}"
        assert resp.status_code not in (405, 500), what
        if resp.status_code == 404 and method != "HEAD":
            assert resp.json()["error"]["code"] != "not_found", what
    resp = c.put("/v1/users/u2/following/feed")  # the creator feed has no video: 404
    assert resp.json()["error"]["code"] == "unknown_creator", resp.text


def tampered(cursor: str) -> str:
    """``cursor`` with its first character changed: a cursor no route gave."""
    return ("B" if cursor[0] == "A" else "A") + cursor[1:]


PAGED = [
    ("/v1/users/{user_id}/feed", "/v1/users/u40/feed", {"n": 2}),  # the fast path
    ("/v1/users/{user_id}/feed", "/v1/users/u40/feed", {"n": 2, "include": "video"}),
    ("/v1/regions/{region}/feed", "/v1/regions/us/feed", {"n": 2}),
    ("/v1/users/{user_id}/following/feed", "/v1/users/u40/following/feed", {"n": 1}),
    ("/v1/users/{user_id}/following", "/v1/users/u40/following", {"limit": 1}),
    ("/v1/users/{user_id}/blocked", "/v1/users/u40/blocked", {"limit": 1}),
]
"""Every route that pages with a ``cursor`` (the For You feed through the fast path and
the router), a URL with a next page, and the parameters that give one."""


def test_the_paged_routes_are_every_route_with_a_cursor(spec: dict[str, Any]) -> None:
    with_cursor = {
        path
        for _, path, op in operations(spec)
        if any(p["name"] == "cursor" and p["in"] == "query" for p in op.get("parameters", []))
    }
    assert with_cursor == {template for template, _, _ in PAGED}


@pytest.mark.parametrize(("template", "url", "params"), PAGED, ids=[p[1] for p in PAGED])
def test_a_bad_cursor_gets_the_same_body_on_every_paged_route(
    world: tuple[TestClient, Deployment], template: str, url: str, params: dict[str, Any]
) -> None:
    """Malformed or tampered, a cursor the route did not give is the same 400 on every
    route: ``details`` names the field as the error tree's field errors do (the feeds'
    said ``{"cursor": <the value>}``, the lists' and the tab's ``{"field": "cursor"}``)."""
    c, _ = world
    for creator in ("u1", "u3"):
        assert c.put(f"/v1/users/u40/following/{creator}").is_success
    for creator in ("u5", "u9"):
        assert c.put(f"/v1/users/u40/blocked/{creator}").is_success
    first = c.get(url, params=params)
    assert first.status_code == 200, first.text
    real = first.json()["next_cursor"]
    assert real, first.text
    assert c.get(url, params={**params, "cursor": real}).status_code == 200
    expected = {
        "error": {
            "code": "invalid_request",
            "message": "cursor is not a next_cursor this route gave",
            "status": 400,
            "details": {"field": "cursor"},
        }
    }
    for bad in ("@@", "not a cursor", tampered(real)):
        resp = c.get(url, params={**params, "cursor": bad})
        assert (resp.status_code, resp.json()) == (400, expected), (template, bad)
