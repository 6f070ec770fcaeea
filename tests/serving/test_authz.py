"""Access control over HTTP: keys, the role matrix, scoped ingestion, audited operator reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from authz_world import World, build_world, creator, headers, snapshot, user, video
from errors import assert_error

from fyp.access.keys import ROLES, KeyStore
from fyp.access.policy import ADMIN_ONLY, PERMISSIONS, rule_for
from fyp.access.routes import app_routes
from fyp.audit.log import AuditLog
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment
from fyp.sovereignty import user_pseudonym


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build_world(Path(tmp_path_factory.mktemp("authz")) / "dep")


def test_every_route_has_an_explicit_entry_and_every_entry_a_route(world: World) -> None:
    routes = {(m, p) for m, p in app_routes(world.client.app) if m != "HEAD"}  # type: ignore[arg-type]
    missing = sorted(routes - PERMISSIONS.keys())
    assert not missing, f"add these to fyp.access.policy.PERMISSIONS: {missing}"
    assert not sorted(PERMISSIONS.keys() - routes), "entries for routes that do not exist"
    assert rule_for("GET", "/v1/not-a-route") is ADMIN_ONLY
    assert rule_for("HEAD", "/v1/users/{user_id}") is PERMISSIONS[("GET", "/v1/users/{user_id}")]


def test_missing_malformed_unknown_and_revoked_keys_are_401(world: World) -> None:
    c = world.client
    key, token = KeyStore(world.deployment).create("soon revoked", ["feed"])
    for sent in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        resp = c.get("/v1/videos/v-both", headers=sent)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthenticated"
    assert c.get("/v1/videos/v-both", headers={"X-Api-Key": token}).status_code == 200
    assert c.get("/v1/videos/v-both", headers=headers(token)).status_code == 200
    world.client.app.state.access.keys.revoke(key.key_id)  # type: ignore[attr-defined]
    resp = c.get("/v1/videos/v-both", headers=headers(token))
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]["message"]
    # public: health, the spec and the docs; the spec says how to send a key
    assert c.get("/healthz").status_code == 200 and c.get("/docs").status_code == 200
    spec = c.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    # an unknown route: 401 without a valid key, else 404 (405 for a known path with
    # another method) whatever the key's roles and regions: it names no data
    assert c.get("/v1/nowhere", headers=headers(token)).status_code == 401
    assert c.options("/v1/users/u-us/feed").status_code == 401
    narrow = world.key("feed", regions=["eu"])
    for key in (world.key("feed"), narrow, world.key("auditor"), world.admin):
        assert_error(c.get("/v1/nope", headers=headers(key)), 404, "not_found")
        assert_error(c.get("/v1/users/u-us/nope", headers=headers(key)), 404, "not_found")
        resp = c.options("/v1/users/u-us/feed", headers=headers(key))
        assert_error(resp, 405, "method_not_allowed")
        assert resp.headers["allow"] == "GET"
        assert_error(c.put("/v1/users/ghost", headers=headers(key)), 405, "method_not_allowed")
    # a path that only misses the trailing slash: redirected (no data), then checked
    resp = c.get("/v1/users/u-us/", headers=headers(narrow), follow_redirects=False)
    assert resp.status_code == 307
    assert c.get("/v1/users/u-us/", headers=headers(narrow)).status_code == 403


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "router"])
def test_a_401_names_the_bearer_scheme(
    world: World, fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7235: a 401 says how to authenticate, on the hot routes' fast path too."""
    from fyp.serving.fastpath import HotRoutes

    if not fast_path:

        async def router_only(self: HotRoutes, *_: object) -> bool:
            return False

        monkeypatch.setattr(HotRoutes, "__call__", router_only)
    event = {"event_id": "a401", "user_id": "u-us", "video_id": "v-us", "type": "like"}
    for sent in ({}, {"Authorization": "Bearer nope"}):
        for method, path, body in (
            ("POST", "/v1/events", event),
            ("GET", "/v1/users/u-us/feed", None),
            ("GET", "/v1/videos/v-us", None),
            ("GET", "/v1/nowhere", None),
        ):
            resp = world.client.request(method, path, json=body, headers=sent)
            assert resp.status_code == 401, (method, path, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
    resp = world.client.get("/v1/videos/v-us", headers=headers(world.key("moderator")))
    assert resp.status_code == 200 and "www-authenticate" not in resp.headers


LIKE = {"event_id": "m1", "user_id": "u-us", "video_id": "v-both", "type": "like"}
CLAIM = {"reviewer_id": "r", "region": "us"}
TAKEDOWN = {"actor_id": "a", "reason": "r", "regions": ["us"]}
# (method, path, body, the roles that may call it); every other role gets 403
MATRIX: list[tuple[str, str, dict[str, object] | None, set[str]]] = [
    ("POST", "/v1/events", LIKE, {"ingest", "admin"}),
    ("POST", "/v1/events/batch", {"events": []}, {"ingest", "admin"}),
    ("POST", "/v1/users", {"user_id": "m-new", "home_region": "us"}, {"ingest", "admin"}),
    ("GET", "/v1/users/u-us/feed", None, {"feed", "admin", "auditor"}),
    ("GET", "/v1/users/u-us/feed?debug=true", None, {"admin", "auditor"}),
    ("GET", "/v1/users/u-us/following/feed", None, {"feed", "admin", "auditor"}),
    ("GET", "/v1/users/u-us", None, {"admin", "auditor", "moderator"}),
    ("GET", "/v1/users/u-us/events", None, {"admin", "auditor", "moderator"}),
    ("GET", "/v1/users/u-us/export", None, {"admin", "auditor"}),
    ("GET", "/v1/videos/v-us", None, set(ROLES) - {"metrics"}),
    ("POST", "/v1/moderation/runs", {"region": "us"}, {"moderator", "admin"}),
    ("GET", "/v1/moderation/jobs?region=us", None, {"moderator", "admin", "auditor"}),
    ("POST", "/v1/moderation/jobs/claim", CLAIM, {"moderator", "admin"}),
    ("POST", "/v1/moderation/videos/v-both/takedown", TAKEDOWN, {"moderator", "admin"}),
    ("GET", "/v1/moderation/audit/us/verify", None, {"auditor", "admin"}),
    ("GET", "/v1/regions", None, {"admin", "auditor", "moderator"}),
]  # fmt: skip


@pytest.mark.parametrize("role", ROLES)
def test_the_role_matrix(world: World, role: str) -> None:
    """A feed key cannot ingest or moderate; an auditor reads audit but writes nothing..."""
    token = world.key(role, name=f"matrix-{role}")
    for method, path, body, allowed in MATRIX:
        before = snapshot(world.deployment) if role not in allowed else None
        resp = world.client.request(method, path, json=body, headers=headers(token))
        if role in allowed:
            assert resp.status_code not in (401, 403), f"{role}: {method} {path}: {resp.text}"
        else:
            assert resp.status_code == 403, f"{role}: {method} {path}: {resp.text}"
            assert snapshot(world.deployment) == before


def test_the_table_is_what_is_enforced(world: World) -> None:
    """For every route, a key of a role the table leaves out is refused."""
    ids = {"user_id": "u-us", "video_id": "v-us", "region": "us", "job_id": world.jobs["us"]}
    ids["creator_id"] = "u-eu"
    tokens = {role: world.key(role, name=f"table-{role}") for role in ROLES}
    for (method, template), rule in PERMISSIONS.items():
        if rule.public:
            continue
        path = template.format(**ids)
        for role in set(ROLES) - rule.roles:
            resp = world.client.request(method, path, json={}, headers=headers(tokens[role]))
            assert resp.status_code == 403, f"{role}: {method} {template}: {resp.text}"


def test_scoped_ingestion_rejects_out_of_scope_events_one_by_one(world: World) -> None:
    token = world.key("ingest", regions=["us"], name="ingest-us")
    c, eu = world.client, world.deployment.store("eu")
    eu_events = eu.count_events()

    def event(n: str, who: str) -> dict[str, str]:
        return {"event_id": f"s-{n}", "user_id": who, "video_id": "v-both", "type": "like"}

    batch = [event("1", "u-us"), event("2", "u-eu"), event("3", "nobody"), event("4", "u-us")]
    resp = c.post("/v1/events/batch", json={"events": batch}, headers=headers(token))
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["stored", "rejected", "rejected", "stored"]
    for r in results[1:3]:  # same answer for a user elsewhere and no user at all
        error = r["error"]
        assert error["code"] == "forbidden" and "home_region" not in error["details"]
        assert "'eu'" not in error["message"] and "homed" not in error["message"]
    single = c.post("/v1/events", json=event("5", "u-eu"), headers=headers(token))
    assert single.status_code == 403 and single.json()["error"]["code"] == "forbidden"
    assert eu.count_events() == eu_events and eu.get_event("s-2") is None
    # an all-regions key still learns that a user does not exist
    every = world.key("ingest", name="ingest-all")
    resp = c.post("/v1/events", json=event("6", "nobody"), headers=headers(every))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_user"


def test_regions_lists_only_the_keys_regions(world: World) -> None:
    token = world.key("auditor", regions=["eu"], name="auditor-eu")
    assert world.client.get("/v1/regions", headers=headers(token)).json()["regions"].keys() == {
        "eu"
    }
    everything = world.client.get("/v1/regions", headers=headers(world.admin)).json()
    assert everything["regions"].keys() == {"us", "eu"}


def _log(world: World, region: str) -> AuditLog:
    return AuditLog(world.deployment.store(region))


def test_an_operator_read_needs_a_reason_and_is_audited_in_the_home_region(world: World) -> None:
    c, d = world.client, world.deployment
    key, token = KeyStore(d).create("support: ana", ["auditor"], ["eu"])
    eu_head, us_head = _log(world, "eu").head(), _log(world, "us").head()

    missing = c.get("/v1/users/u-eu/events", headers=headers(token, reason=None))
    assert missing.status_code == 400 and "X-Fyp-Reason" in missing.json()["error"]["message"]
    blank = c.get("/v1/users/u-eu/events", headers=headers(token, reason="  "))
    assert blank.status_code == 400
    long = c.get("/v1/users/u-eu/events", headers=headers(token, reason="x" * 501))
    assert long.status_code == 400
    assert _log(world, "eu").head() == eu_head  # a refused read is not a read

    resp = c.get("/v1/users/u-eu/events", headers=headers(token, reason="ticket 4411"))
    assert resp.status_code == 200
    entries = list(_log(world, "eu").entries(after_seq=eu_head[0]))
    assert len(entries) == 1
    e = entries[0]
    assert (e.actor, e.action) == (f"key:{key.key_id}", "user_data.read")
    assert e.subject == user_pseudonym(d.config, "eu", "u-eu")
    assert e.details == {
        "key_id": key.key_id,
        "key_name": "support: ana",
        "roles": ["auditor"],
        "route": "GET /v1/users/{user_id}/events",
        "reason": "ticket 4411",
    }
    assert "u-eu" not in json.dumps(e.to_dict())  # never the raw id
    assert e.prev_hash == eu_head[1]  # chained onto the log
    report = _log(world, "eu").verify()
    assert report.ok and report.head_hash == e.hash
    assert _log(world, "us").head() == us_head  # the other region learns nothing


def test_an_operators_profile_update_answers_with_the_profile_so_it_is_audited(
    world: World,
) -> None:
    c = world.client
    admin = world.key("admin", name="ops")
    head = _log(world, "us").head()
    patch = {"country": "US"}
    missing = c.patch("/v1/users/u-us", json=patch, headers=headers(admin, reason=None))
    assert missing.status_code == 400 and "X-Fyp-Reason" in missing.json()["error"]["message"]
    assert _log(world, "us").head() == head
    resp = c.patch("/v1/users/u-us", json=patch, headers=headers(admin, reason="ticket 9"))
    assert resp.status_code == 200 and resp.json()["user_id"] == "u-us"
    (e,) = list(_log(world, "us").entries(after_seq=head[0]))
    assert e.action == "user_data.update"
    assert (e.details["route"], e.details["reason"]) == ("PATCH /v1/users/{user_id}", "ticket 9")
    # the app's own ingestion key updates profiles as a service: no reason, no entry
    app_key = world.key("ingest", name="app")
    assert c.patch("/v1/users/u-us", json={}, headers=headers(app_key, reason=None)).is_success
    assert _log(world, "us").head()[0] == head[0] + 1


def test_an_operator_following_or_blocking_for_a_user_gives_a_reason_and_is_audited(
    world: World,
) -> None:
    """A PUT or DELETE of whom a user follows or blocks acts for the user, and its answer
    tells what they did (a 409 if they block the creator): an operator's needs a reason
    and an entry, as a read does (it had neither). The app's ingest key acts as a
    service: neither. An erasure (DELETE of the user) keeps its own record."""
    c = world.client
    admin = world.key("admin", name="ops-follow")
    app_key = world.key("ingest", name="app-follow")
    head = _log(world, "us").head()
    for method in ("PUT", "DELETE"):
        for what in ("following", "blocked"):
            path = f"/v1/users/u-us/{what}/{creator('us')}"
            missing = c.request(method, path, headers=headers(admin, reason=None))
            assert_error(missing, 400, "invalid_request")
    assert _log(world, "us").head() == head  # refused before anything was done
    resp = c.put(f"/v1/users/u-us/following/{creator('us')}", headers=headers(admin, "ticket 12"))
    assert resp.is_success, resp.text
    resp = c.delete(
        f"/v1/users/u-us/following/{creator('us')}", headers=headers(admin, "ticket 12")
    )
    assert resp.is_success, resp.text
    entries = list(_log(world, "us").entries(after_seq=head[0]))
    assert [(e.action, e.details["route"], e.details["reason"]) for e in entries] == [
        ("user_data.update", "PUT /v1/users/{user_id}/following/{creator_id}", "ticket 12"),
        ("user_data.update", "DELETE /v1/users/{user_id}/following/{creator_id}", "ticket 12"),
    ]
    head = _log(world, "us").head()
    path = f"/v1/users/u-us/following/{creator('us')}"
    assert c.put(path, headers=headers(app_key, reason=None)).is_success
    assert c.delete(path, headers=headers(app_key, reason=None)).is_success
    assert _log(world, "us").head() == head


def test_service_traffic_is_not_audited_and_debug_is_an_operator_read(world: World) -> None:
    c = world.client
    feed = world.key("feed", name="feed-app")
    head = _log(world, "us").head()
    c.get("/v1/users/u-us/feed", headers=headers(feed, reason=None))
    c.get("/v1/users/u-us/feed?debug=false", headers=headers(feed, reason=None))
    event = {"event_id": "svc-1", "user_id": "u-us", "video_id": "v-both", "type": "like"}
    c.post("/v1/events", json=event, headers=headers(world.key("ingest"), reason=None))
    assert _log(world, "us").head() == head
    for on in ("true", "1", "yes", "on", "TRUE"):  # never laxer than the handler's parsing
        resp = c.get(f"/v1/users/u-us/feed?debug={on}", headers=headers(feed))
        assert resp.status_code == 403, on
    for query in ("%64ebug=true", "debug=false&debug=true"):  # encoded name, repeated flag
        assert c.get(f"/v1/users/u-us/feed?{query}", headers=headers(feed)).status_code == 403
    auditor = world.key("auditor", name="auditor")
    c.get("/v1/users/u-us/feed?debug=true", headers=headers(auditor, reason="why it shows x"))
    entries = list(_log(world, "us").entries(after_seq=head[0]))
    assert [e.details["route"] for e in entries] == ["GET /v1/users/{user_id}/feed"]
    assert _log(world, "us").head()[0] == head[0] + 1
    # a key with a service role and no person's role beside it: no reason, no entry
    app = world.key("feed", "ingest", name="app")
    resp = c.get("/v1/users/u-us/feed", headers=headers(app, reason=None))
    assert resp.status_code == 503  # past the check: this world has no trained model
    assert _log(world, "us").head()[0] == head[0] + 1


@pytest.mark.parametrize("operator", ["admin", "auditor", "moderator"])
def test_a_key_holding_a_persons_role_reads_as_that_person_whatever_else_it_holds(
    world: World, operator: str
) -> None:
    """Beside ``feed`` or ``ingest``, an operator role once read a user's feed, follows
    and blocks through the service grant with no reason and no entry: a person holding
    such a key read user data unrecorded. Now the key is a person's on every audited
    route."""
    c = world.client
    key_id, token = KeyStore(world.deployment).create(
        f"feed+ingest+{operator}", ["feed", "ingest", operator]
    )
    reads = ["/v1/users/u-us/feed", "/v1/users/u-us/following", "/v1/users/u-us/blocked"]
    head = _log(world, "us").head()
    for path in reads:
        assert_error(c.get(path, headers=headers(token, reason=None)), 400, "invalid_request")
    follow = f"/v1/users/u-us/following/{creator('us')}"
    assert_error(c.put(follow, headers=headers(token, reason=None)), 400, "invalid_request")
    patch = c.patch("/v1/users/u-us", json={}, headers=headers(token, reason=None))
    assert_error(patch, 400, "invalid_request")
    assert _log(world, "us").head() == head  # refused before anything was read
    for path in reads:  # past the check (the feed: 503, this world has no trained model)
        resp = c.get(path, headers=headers(token, reason="ticket 77"))
        assert resp.status_code in (200, 503), resp.text
    entries = list(_log(world, "us").entries(after_seq=head[0]))
    assert [e.details["route"] for e in entries] == [
        "GET /v1/users/{user_id}/feed",
        "GET /v1/users/{user_id}/following",
        "GET /v1/users/{user_id}/blocked",
    ]
    assert {e.actor for e in entries} == {f"key:{key_id.key_id}"}
    assert entries[0].details["roles"] == sorted(["feed", "ingest", operator])
    # what it does as a service alone still needs no reason: an event is no user read
    event = {"event_id": f"mixed-{operator}", "user_id": "u-us", "video_id": "v-both"}
    resp = c.post("/v1/events", json={**event, "type": "like"}, headers=headers(token, None))
    assert resp.status_code == 201, resp.text


def test_writes_are_checked_against_body_regions(world: World) -> None:
    c = world.client
    us = world.key("ingest", "moderator", regions=["us"], name="writer-us")
    before = snapshot(world.deployment)
    refused = [
        c.post("/v1/users", json={"user_id": "w1", "home_region": "eu"}, headers=headers(us)),
        c.post(
            "/v1/videos",
            json={"video_id": "w1", "duration_ms": 1000, "regions": ["us", "eu"]},
            headers=headers(us),
        ),
        c.patch("/v1/videos/v-us", json={"regions": ["us", "eu"]}, headers=headers(us)),
        c.post("/v1/moderation/runs", json={}, headers=headers(us)),  # every region
        c.post("/v1/moderation/jobs/claim", json={"reviewer_id": "r"}, headers=headers(us)),
        c.post(
            "/v1/moderation/videos/v-both/takedown",
            json={"actor_id": "a", "reason": "r"},  # default: every region holding it
            headers=headers(us),
        ),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert snapshot(world.deployment) == before
    # the same writes within the key's region pass the check
    ok = c.post("/v1/users", json={"user_id": "w2", "home_region": "us"}, headers=headers(us))
    assert ok.status_code == 201
    down = c.post(
        "/v1/moderation/videos/v-both/takedown",
        json={"actor_id": "a", "reason": "r", "regions": ["us"]},
        headers=headers(us),
    )
    assert down.status_code == 200 and set(down.json()["regions"]) == {"us"}
    assert c.get(f"/v1/videos/{video('us')}", headers=headers(us)).status_code == 200
    assert c.get("/v1/videos/v-both", headers=headers(us)).status_code == 200  # any copy
    assert user("us") == "u-us"


def test_a_region_in_the_query_the_handler_ignores_selects_nothing(world: World) -> None:
    """A takedown reads its regions from the body; ``?region=`` of the key's region (or of
    a region nobody declared) once stood in for the video's regions, and a moderator of
    us took the video down in eu too, or a video published in eu only. Every one is a
    403 now, and nothing changes."""
    c = world.client
    us = world.key("moderator", regions=["us"], name="takedown-us")
    ingest = world.key("ingest", regions=["us"], name="ingest-us")
    down = {"actor_id": "a", "reason": "r"}
    appeal = {"region": "eu", "appellant_id": user("us"), "reason": "mine"}
    before = snapshot(world.deployment)
    refused = [
        c.post(
            f"/v1/moderation/videos/{target}/takedown?region={query}",
            json=down,
            headers=headers(us),
        )
        for target, query in (("v-both", "us"), ("v-both", "zz"), (video("eu"), "zz"))
    ]
    refused.append(
        c.post(
            f"/v1/moderation/videos/{video('eu')}/appeals?region=us",
            json=appeal,
            headers=headers(ingest),
        )
    )
    # a region nobody declared never stands in for where a video is
    refused.append(c.get(f"/v1/videos/{video('eu')}?region=zz", headers=headers(ingest)))
    for resp in refused:
        assert_error(resp, 403, "forbidden")
    assert snapshot(world.deployment) == before
    # the region where the handler reads it: the body (an undeclared one is refused)
    resp = c.post(
        f"/v1/moderation/videos/{video('eu')}/takedown",
        json={**down, "regions": ["zz"]},
        headers=headers(us),
    )
    assert resp.status_code in (403, 422)
    assert snapshot(world.deployment) == before
    resp = c.post(
        "/v1/moderation/videos/v-both/takedown",
        json={**down, "regions": ["us"]},
        headers=headers(us),
    )
    assert resp.status_code == 200 and set(resp.json()["regions"]) == {"us"}


def test_an_appeal_by_a_scoped_key_says_nothing_of_users_outside_it(world: World) -> None:
    """The appellant is a user the request acts for: a key of us may appeal for users
    homed in us only. One elsewhere and one nowhere get the same 403 (the answer was 409
    for a user of eu and 404 "no user in any region" for nobody: an oracle of who
    exists where), and nothing is written."""
    c = world.client
    us = world.key("ingest", regions=["us"], name="appeals-us")
    before = snapshot(world.deployment)
    answers = []
    for appellant in (user("eu"), creator("eu"), "ghost-nobody"):
        body = {"region": "us", "appellant_id": appellant, "reason": "mine"}
        resp = c.post("/v1/moderation/videos/v-both/appeals", json=body, headers=headers(us))
        error = assert_error(resp, 403, "forbidden")
        answers.append(error["message"])
    assert len(set(answers)) == 1  # word for word the same
    assert snapshot(world.deployment) == before
    # a user of the key's region reaches the handler (the video's verdict decides)
    body = {"region": "us", "appellant_id": user("us"), "reason": "mine"}
    resp = c.post("/v1/moderation/videos/v-both/appeals", json=body, headers=headers(us))
    assert resp.status_code not in (401, 403), resp.text


def test_a_literal_path_declared_for_a_route_taking_any_id_has_that_routes_rule(
    world: World,
) -> None:
    """``PUT``/``DELETE .../following/feed`` follow and unfollow the creator ``feed``:
    the check is the general route's (``operation_rule``), not the admin-only default a
    table lookup of the literal path gives (the API fuzz expected a 403 for an ingest
    key there, and got the route's answer)."""
    from fyp.access.routes import operation_rule

    c = world.client
    for method in ("PUT", "DELETE"):
        general = PERMISSIONS[(method, "/v1/users/{user_id}/following/{creator_id}")]
        assert operation_rule(method, "/v1/users/{user_id}/following/feed") is general
        assert rule_for(method, "/v1/users/{user_id}/following/feed") is ADMIN_ONLY
        for role in ROLES:
            token = world.key(role, name=f"literal-{role}")
            resp = c.request(method, "/v1/users/u-us/following/feed", headers=headers(token))
            assert (resp.status_code == 403) == (role not in general.roles), (method, role)


def test_a_rule_trusts_a_region_query_exactly_where_its_handler_reads_one(world: World) -> None:
    """``region_query`` in the table says the handler reads ``?region=`` (so a ``selects``
    rule may let it choose the region); kept in step with the handlers' signatures."""
    from fastapi.routing import APIRoute

    reads: dict[tuple[str, str], bool] = {}
    for route in world.client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, APIRoute):
            query = {p.alias for p in route.dependant.query_params}
            for method in route.methods:
                reads[(method, route.path)] = "region" in query
    for key, rule in PERMISSIONS.items():
        if key in reads:
            assert rule.region_query == reads[key], key


def test_a_trailing_slash_is_redirected_for_any_valid_key_and_checked_after(
    world: World,
) -> None:
    c = world.client
    feed_us = world.key("feed", regions=["us"])
    slashed = c.get("/v1/users/u-us/feed/", headers=headers(feed_us), follow_redirects=False)
    assert slashed.status_code == 307
    assert slashed.headers["location"].endswith("/v1/users/u-us/feed")
    assert c.get("/v1/users/u-us/feed/", follow_redirects=False).status_code == 401
    followed = c.get("/v1/users/u-us/feed/", headers=headers(feed_us))
    assert followed.status_code == 503  # passed the check; this world has no trained model
    other = c.get("/v1/users/u-eu/feed/", headers=headers(feed_us))
    assert other.status_code == 403  # the followed request is checked like any other
    assert c.get("/v1/nowhere/", headers=headers(feed_us)).status_code == 404  # no such route


def test_a_feed_key_reads_only_videos_a_feed_may_show(world: World) -> None:
    """A video taken down in us: the app's us key gets a 404 (as for no video), as the
    feed would never show it; operators still read it."""
    _, token = KeyStore(world.deployment).create("app", ["feed"], ["us"])
    c, admin = world.client, headers(world.admin)
    for vid in ("fk-ok", "fk-down"):
        body = {
            "video_id": vid,
            "creator_id": creator("us"),
            "duration_ms": 9000,
            "regions": ["us"],
        }
        assert c.post("/v1/videos", json=body, headers=admin).status_code == 201
    assert c.get("/v1/videos/fk-ok", headers=headers(token)).status_code == 404  # pending
    assert c.post("/v1/moderation/runs", json={}, headers=admin).status_code == 200
    down = {"actor_id": "mod-1", "reason": "test", "regions": ["us"]}
    assert c.post("/v1/moderation/videos/fk-down/takedown", json=down, headers=admin).is_success
    assert c.get("/v1/videos/fk-ok", headers=headers(token)).status_code == 200
    hidden = c.get("/v1/videos/fk-down", headers=headers(token))
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "unknown_video"
    assert c.get("/v1/videos/fk-down", headers=admin).status_code == 200
    # restricted: never in For You, still viewable by link
    mod = cell(world.deployment.store("us")).mod
    mod.write("fk-down", "restricted", True, "mod-1", "review", "test", 0, {})
    assert c.get("/v1/videos/fk-down", headers=headers(token)).status_code == 200


def test_a_route_cached_before_another_process_erased_the_user_keeps_no_key_out(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another serving host erased mo and took the id again in eu: this server's cached
    route (us) must not keep eu's keys out, and us's get nothing of the new mo."""
    from fastapi.testclient import TestClient

    from fyp.catalog.models import UserIn
    from fyp.catalog.service import Catalog
    from fyp.serving.app import create_app
    from fyp.sovereignty import erasure

    Catalog(deployment).create_user(UserIn(user_id="mo", home_region="us"))
    keys = KeyStore(deployment)
    as_us, as_eu = (headers(keys.create(r, ["auditor"], [r])[1]) for r in ("us", "eu"))
    with TestClient(create_app(deployment)) as client:
        assert client.get("/v1/users/mo", headers=as_us).status_code == 200  # route cached
        with Deployment.open(deployment.config.root) as other, monkeypatch.context() as m:
            m.setattr(erasure, "_HOOKS", [])  # another process: no hook of this one runs
            Catalog(other).erase_user("mo")
            Catalog(other).create_user(UserIn(user_id="mo", home_region="eu"))
        r = client.get("/v1/users/mo", headers=as_eu)
        assert r.status_code == 200 and r.json()["home_region"] == "eu"
        assert_error(client.get("/v1/users/mo", headers=as_us), 403, "forbidden")
