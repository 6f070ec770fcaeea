"""Fuzzing the API against its own OpenAPI document (schemathesis, driven by hypothesis).

Every operation of ``/openapi.json`` gets generated requests, schema-valid and not,
aimed at real ids (an existing user, video, review job, region) as often as at made-up
ones, so the 2xx paths run as well as the 404s. Each answer must be no server error,
have a documented status and content type, match the schema documented for its status,
and, for an error, be exactly the one error body; an event acknowledged as stored must
be in its user's home store. The same cases go, with no key, a key of a role the route
does not allow, and a key for the other region only, to 401 and 403 answers.

``tests/serving/test_api_fuzz.py`` runs a few examples per operation in the suite;
``FYP_FUZZ_EXAMPLES`` scales them for a long exploration by hand (docs/architecture.md,
"Errors").
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from feed.conftest import N_CREATORS, N_USERS, N_VIDEOS, build
from fyp.access.keys import ROLES, KeyStore
from fyp.access.routes import operation_rule
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = int(os.environ.get("FYP_FUZZ_EXAMPLES", "0")) or None
"""Examples per operation and kind of caller (None: each test's own, a few)."""
REGIONS = ("us", "eu")
READ_USERS = [f"u{k}" for k in range(N_USERS // 2)]
UPLOADERS = {"vm0": "u45", "vm1": "u46", "ve0": "u30", "ve1": "u31"}
"""Videos uploaded by users the move and erase routes get: read after those ran, they
name their creator as a moved or erased one."""
READ_VIDEOS = [*UPLOADERS, *(f"v{k}" for k in range(N_VIDEOS // 2))]  # favoured: first
OWN_IDS = {
    # the destructive routes get ids of their own: the readers' users and videos stay
    ("DELETE", "/v1/users/{user_id}"): [f"u{k}" for k in range(N_USERS // 2, N_USERS * 3 // 4)],
    ("POST", "/v1/users/{user_id}/move"): [f"u{k}" for k in range(N_USERS * 3 // 4, N_USERS)],
    ("DELETE", "/v1/videos/{video_id}"): [f"v{k}" for k in range(N_VIDEOS // 2, N_VIDEOS)],
}
HOSTILE = ["u0\x00", "\x00", "é" * 70, "u0 ", "u0'; DROP TABLE users; --", "\u202e", "☃" * 3]
"""Path values a client may send by mistake or on purpose, beside real and generated ones
(not ``..`` or ``%2F``: they lead to another route)."""


MODES = [GenerationMode.POSITIVE, GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
"""Schema-valid requests twice as often as invalid ones (they reach deeper), and an
admin three times as often as each other caller."""


def region_of(user_id: str) -> str:
    """The home region of a user of ``feed.conftest.build``: even ids in us."""
    return REGIONS[int(user_id[1:]) % 2]


@dataclass
class FuzzWorld:
    """A trained two-region deployment with open review jobs, and keys for each caller."""

    directory: Path
    admin: str
    narrow: dict[str, str] = field(default_factory=dict)
    """role -> a key of that role alone, for every region."""
    regional: dict[str, str] = field(default_factory=dict)
    """region -> an admin key for that region alone."""
    jobs: list[str] = field(default_factory=list)

    def ids(self, name: str, route: tuple[str, str]) -> list[str]:
        """Real values for the path parameter ``name`` of ``route`` (empty: none known)."""
        if name in ("user_id", "video_id") and route in OWN_IDS:
            return OWN_IDS[route]
        if name == "user_id":
            return READ_USERS
        if name == "video_id":
            return READ_VIDEOS
        if name == "job_id":
            return self.jobs
        if name == "region":
            return list(REGIONS)
        if name == "creator_id":  # creators of published videos: follows and blocks succeed
            return [f"u{k}" for k in range(N_CREATORS)]
        return []


def build_world(directory: Path, store: str | None = None) -> FuzzWorld:
    """The deployment of ``feed.conftest.build`` with a blocked video and an open appeal
    (a review job) per region; closed on return, so a server process may open it.
    ``store``: a store URL with ``{region}`` (default: SQLite files)."""
    d = build(directory, store=store)
    with (directory / "fyp.toml").open("a", encoding="utf-8") as f:  # moves both ways
        for source, to in zip(REGIONS, reversed(REGIONS), strict=True):
            f.write(f'\n[regions.{source}.policy.moves]\nallow_to = ["{to}"]\n')
    d.close()
    d = Deployment.open(directory)
    try:
        keys = KeyStore(d)
        world = FuzzWorld(directory, admin=keys.create("fuzz-admin", ["admin"])[1])
        for role in ROLES:
            world.narrow[role] = keys.create(f"fuzz-{role}", [role])[1]
        for region in REGIONS:
            world.regional[region] = keys.create(f"fuzz-{region}", ["admin"], [region])[1]
        with TestClient(create_app(d), headers=headers(world.admin)) as client:
            for video, creator in UPLOADERS.items():
                mine = {"video_id": video, "creator_id": creator, "duration_ms": 9_000}
                resp = client.post("/v1/videos", json={**mine, "regions": [region_of(creator)]})
                assert resp.status_code == 201, resp.text
            for region, video in zip(REGIONS, ("v0", "v1"), strict=True):
                down = {"actor_id": "m", "reason": "fuzz", "regions": [region]}
                resp = client.post(f"/v1/moderation/videos/{video}/takedown", json=down)
                assert resp.status_code == 200, resp.text
                appeal = {"region": region, "appellant_id": "u0", "reason": "mine"}
                resp = client.post(f"/v1/moderation/videos/{video}/appeals", json=appeal)
                assert resp.status_code == 201, resp.text
                world.jobs.append(resp.json()["job_id"])
    finally:
        d.close()
    return world


def headers(token: str | None) -> dict[str, str]:
    """A caller's headers: its key (none: no key at all), and a reason for operator reads."""
    out = {"X-Fyp-Reason": "fuzz"}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    return out


def operations(schema: Any) -> list[Any]:
    """Every operation of the document, in a stable order."""
    found = [result.ok() for result in schema.get_all_operations()]
    return sorted(found, key=lambda op: (op.path, op.method))


def assert_error_body(response: Any) -> None:
    """A 4xx or 5xx is exactly ``{"error": {code, message, status, details}}``."""
    if response.status_code < 400:
        return
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "status", "details"}, error
    assert error["status"] == response.status_code, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    if response.status_code == 401:
        challenge = response.headers.get("www-authenticate")  # schemathesis: a list
        assert challenge in ("Bearer", ["Bearer"]), response.headers


Send = Callable[[Any, dict[str, str]], Any]
"""Sends a case with the given headers and returns the response (in process or over HTTP)."""
Verify = Callable[[Any, Any], None]
"""Further checks of a case and its response (the event a 2xx stored is in the store)."""


def fuzz(
    op: Any,
    world: FuzzWorld,
    send: Send,
    examples: int,
    verify: Verify | None = None,
) -> None:
    """``examples`` generated requests of the operation as an admin, checked against the
    document; then as many with no key (401), a key of a role the route refuses (403)
    and, for a user's route, an admin key for the user's other region only (403)."""
    route = (op.method.upper(), op.path)
    real = {name: world.ids(name, route) for name in _path_names(op)}
    # a literal path declared for a route taking any id is checked by that route's rule
    rule = operation_rule(op.method.upper(), op.path)
    refused = [role for role in ROLES if role not in rule.roles]
    callers = ["admin"] if rule.public else [*["admin"] * 3, "none", "role", "region"]
    if not refused:
        callers.remove("role")
    if "user_id" not in real:
        callers = [c for c in callers if c != "region"]

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        mode = data.draw(st.sampled_from(MODES))
        fixed = {}  # path values: real ones mostly, else generated or hostile
        for name, ids in real.items():
            pick = data.draw(st.integers(0, 7))
            if ids and pick < 5:
                fixed[name] = data.draw(st.sampled_from(ids))
            elif pick == 7:
                fixed[name] = data.draw(st.sampled_from(HOSTILE))
        case = data.draw(op.as_strategy(mode, path_parameters=fixed or None))
        if mode == GenerationMode.POSITIVE:
            _real_ids_in_body(case.body, data)
            user = case.body.get("user_id") if isinstance(case.body, dict) else None
            if case.headers and "X-Fyp-Region" in case.headers and user in READ_USERS:
                case.headers["X-Fyp-Region"] = region_of(user)
        caller = data.draw(st.sampled_from(callers))
        sent = _caller_headers(world, caller, refused, fixed, data)
        response = send(case, sent)
        case.validate_response(response, checks=CHECKS, headers=sent)
        assert_error_body(response)
        if caller == "none":
            assert response.status_code == 401, (case.as_curl_command(), response.text)
        elif caller == "role":
            assert response.status_code == 403, (case.as_curl_command(), response.text)
        elif (
            caller == "region" and fixed.get("user_id") in READ_USERS and response.status_code < 400
        ):
            raise AssertionError(f"another region's key was let in: {case.as_curl_command()}")
        if verify is not None and caller == "admin":
            verify(case, response)

    run()


BODY_IDS = {
    "user_id": READ_USERS,
    "video_id": READ_VIDEOS,
    "appellant_id": READ_USERS,  # an appeal's appellant is a user
    "creator_id": READ_USERS,
}


def fuzz_all(
    operations: list[Any],
    world: FuzzWorld,
    send: Send,
    examples: int,
    verify: Verify | None = None,
) -> Counter[tuple[str, int]]:
    """:func:`fuzz` each operation, going on past a failing one; raise one error naming
    every operation that failed. Returns how many answers of each (operation, status)."""
    answers: Counter[tuple[str, int]] = Counter()

    def counted(case: Any, sent: dict[str, str]) -> Any:
        response = send(case, sent)
        answers[f"{case.operation.method.upper()} {case.operation.path}", response.status_code] += 1
        return response

    failed: list[str] = []
    for op in operations:
        try:
            fuzz(op, world, counted, examples, verify)
        # a hypothesis failure, shrunk; schemathesis' FailureGroup is a BaseExceptionGroup
        except (Exception, BaseExceptionGroup) as exc:
            failed.append(f"{op.method.upper()} {op.path}: {type(exc).__name__}: {exc}")
    print(summary(answers))  # shown with -s: what a long run covered
    if failed:
        raise AssertionError(f"{len(failed)} operations failed:\n\n" + "\n\n".join(failed))
    return answers


def summary(answers: Counter[tuple[str, int]]) -> str:
    """Requests per operation and status, and the totals."""
    by_op: dict[str, dict[int, int]] = {}
    for (op, status), n in sorted(answers.items()):
        by_op.setdefault(op, {})[status] = n
    lines = [f"{op}: {statuses}" for op, statuses in by_op.items()]
    total = sum(answers.values())
    return "\n".join([*lines, f"{len(by_op)} operations, {total} requests"])


def _real_ids_in_body(body: Any, data: st.DataObject) -> None:
    """Most of the time, real users and videos in a (schema-valid) body or its events,
    so that events reach the store and appeals their review queue."""
    items = body.get("events") if isinstance(body, dict) else None
    for item in [body, *(items if isinstance(items, list) else [])]:
        if not isinstance(item, dict):
            continue
        for name, ids in BODY_IDS.items():
            # hypothesis favours the smallest draw: 0 (three times in four) replaces
            if isinstance(item.get(name), str) and data.draw(st.integers(0, 3)) < 3:
                item[name] = data.draw(st.sampled_from(ids))
        user = item.get("user_id")
        if user in READ_USERS and isinstance(item.get("region"), str):
            item["region"] = region_of(user)  # an event names its user's home region


def _path_names(op: Any) -> list[str]:
    return [p.name for p in op.path_parameters]


def _caller_headers(
    world: FuzzWorld,
    caller: str,
    refused: list[str],
    fixed: dict[str, str],
    data: st.DataObject,
) -> dict[str, str]:
    if caller == "admin":
        return headers(world.admin)
    if caller == "none":
        return headers(None)
    if caller == "role":
        return headers(world.narrow[data.draw(st.sampled_from(refused))])
    user = fixed.get("user_id")  # the readers' users never move
    home = region_of(user) if user in READ_USERS else data.draw(st.sampled_from(REGIONS))
    other = next(r for r in REGIONS if r != home)
    return headers(world.regional[other])


def in_process(app: Any) -> tuple[Any, Send]:
    """The document of ``app`` and a sender that calls the app in this process."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    def send(case: Any, sent: dict[str, str]) -> Any:
        return case.call(headers=_merged(case, sent))

    return schema, send


def over_http(base_url: str) -> tuple[Any, Send]:
    """The document a real server serves, and a sender that calls it over HTTP."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")

    def send(case: Any, sent: dict[str, str]) -> Any:
        return case.call(base_url=base_url, headers=_merged(case, sent), timeout=30)

    return schema, send


def _merged(case: Any, sent: dict[str, str]) -> dict[str, str]:
    """The caller's headers; a generated ``X-Fyp-Reason`` (blank, say) is kept."""
    generated = {name.lower() for name in case.headers or {}}
    return {k: v for k, v in sent.items() if k.lower() not in generated or k == "Authorization"}


def stored_events_are_kept(deployment: Deployment) -> Verify:
    """Every event a 2xx acknowledges as stored (or as a duplicate) is in its user's
    home store: nothing acknowledged is lost."""

    def verify(case: Any, response: Any) -> None:
        if case.operation.path not in ("/v1/events", "/v1/events/batch"):
            return
        if not 200 <= response.status_code < 300:
            return
        body = json.loads(response.content)
        results = body.get("results", [body])
        events = case.body["events"] if "results" in body else [case.body]
        for sent, result in zip(events, results, strict=True):
            if result["status"] == "rejected":
                continue
            store = deployment.store(result["region"])
            kept = {e.event_id for e in store.user_events(sent["user_id"], 10_000)}
            assert result["event_id"] in kept, (sent, result)

    return verify
