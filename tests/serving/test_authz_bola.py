"""Broken object-level authorisation, generated from the app's OpenAPI spec.

Every operation that names an object (a path parameter, a ``region`` query parameter or
one naming a user, a region field in its body, or users in an event body) is called, for
every role and with a key of every role at once, with a key for one region against
objects that live only in the other. Each call must be refused (403; per event for a
batch) and change nothing. Routes added later are covered by construction; an operation
that names no object must be listed in ``NO_OBJECT`` on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from authz_world import World, build_world, headers, snapshot, user, video

from fyp.access.keys import ROLES

NO_OBJECT = {
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("GET", "/v1/regions"),
    ("GET", "/metrics"),
}
"""Operations that name no object (/v1/regions and /metrics answer for the key's regions
only)."""
REGION_FIELDS = {"region", "regions", "home_region", "to"}
USER_QUERIES = {"viewer_id"}
"""Query parameters naming a user (placed in their home region, as a ``{user_id}``)."""
OTHER = {"us": "eu", "eu": "us"}


@dataclass(frozen=True)
class Call:
    method: str
    template: str
    path: str
    query: dict[str, str]
    body: Any

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.query or ''}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build_world(Path(tmp_path_factory.mktemp("bola")) / "dep")


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    if "anyOf" in schema:  # Optional[X]: take the X
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        return _resolve(spec, schema)
    return schema


def _value(spec: dict[str, Any], name: str, schema: dict[str, Any], region: str, w: World) -> Any:
    """A valid-looking value, pointing at ``region``'s objects where the name says so."""
    schema = _resolve(spec, schema)
    if name in ("region", "home_region", "to"):  # "to": where a user moves
        return region
    if name == "regions":
        return [region]
    if name in ("user_id", "appellant_id"):
        return user(region)
    if name == "video_id":
        return video(region)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        return [_value(spec, "", schema.get("items", {}), region, w)]
    if kind == "object":
        props = schema.get("properties", {})
        wanted = set(schema.get("required", [])) | (REGION_FIELDS & set(props))
        return {k: _value(spec, k, props[k], region, w) for k in props if k in wanted}
    return "x"


def _calls(w: World, target: str) -> list[Call]:
    """One call per operation (two when ``region`` is an optional query parameter)."""
    spec = w.client.app.openapi()  # type: ignore[attr-defined]
    ids = {
        "user_id": user(target),
        "video_id": video(target),
        "region": target,
        "job_id": w.jobs[target],
    }
    calls: list[Call] = []
    for template, ops in spec["paths"].items():
        for method, op in ops.items():
            params = op.get("parameters", [])
            path = template
            for p in params:
                if p["in"] == "path":  # an id this test does not know: a made-up one
                    path = path.replace(f"{{{p['name']}}}", ids.get(p["name"], f"{target}-1"))
            body_schema = (
                op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ).get("schema")
            body: Any = None
            if template == "/v1/events":
                body = _event(target)
            elif template == "/v1/events/batch":
                body = {"events": [_event(target)]}
            elif body_schema is not None:
                body = _value(spec, "", body_schema, target, w)
            region_query = [p for p in params if p["in"] == "query" and p["name"] == "region"]
            named = (
                any(p["in"] == "path" for p in params)
                or region_query
                or (isinstance(body, dict) and (REGION_FIELDS & set(body) or "events" in body))
                or template == "/v1/events"
            )
            if not named:
                assert (method.upper(), template) in NO_OBJECT, (
                    f"{method.upper()} {template} names no object: decide how its regions are "
                    "found (fyp.access.policy) or list it in NO_OBJECT"
                )
                continue
            variants = [{"region": target}]
            if region_query and not region_query[0].get("required"):
                variants.append({})
            variants = variants if region_query else [{}]
            for p in params:  # the object named by a user query too (e.g. a video's viewer)
                if p["in"] == "query" and p["name"] in USER_QUERIES:
                    variants += [{**q, p["name"]: user(target)} for q in variants]
            for query in variants:
                calls.append(Call(method.upper(), template, path, query, body))
    return calls


def _event(region: str) -> dict[str, Any]:
    return {
        "event_id": f"bola-{region}",
        "user_id": user(region),
        "video_id": "v-both",
        "type": "like",
    }


def _keys(w: World, region: str) -> dict[str, str]:
    keys = {role: w.key(role, regions=[region], name=f"{role}-{region}") for role in ROLES}
    keys["every role"] = w.key(*ROLES, regions=[region], name=f"all-{region}")
    return keys


@pytest.mark.parametrize("home", ["us", "eu"])
def test_a_key_for_one_region_never_reaches_the_other(world: World, home: str) -> None:
    target = OTHER[home]
    keys = _keys(world, home)
    calls = _calls(world, target)
    assert len(calls) >= 20
    for call in calls:
        before = snapshot(world.deployment)
        for role, token in keys.items():
            resp = world.client.request(
                call.method,
                call.path,
                params=call.query,
                json=call.body,
                headers=headers(token),
            )
            where = f"{call} with a {home} key of {role}"
            if call.template == "/v1/events/batch" and resp.status_code == 200:
                results = resp.json()["results"]
                assert [r["status"] for r in results] == ["rejected"], where
                assert results[0]["error"]["code"] == "forbidden", where
            else:
                assert resp.status_code == 403, f"{where}: {resp.status_code} {resp.text}"
                assert resp.json()["error"]["code"] == "forbidden", where
        assert snapshot(world.deployment) == before, f"{call} changed data"


def test_the_same_calls_pass_the_check_with_a_key_for_the_right_region(world: World) -> None:
    """The refusals above are about region, not a check that refuses everything."""
    for region in ("us", "eu"):
        token = world.key(*ROLES, regions=[region], name=f"all-{region}")
        # deletions last, of what a user holds before the user: a scoped key may not
        # learn that a deleted object is gone
        calls = _calls(world, region)
        for call in sorted(calls, key=lambda c: (c.method == "DELETE", -c.template.count("/"))):
            resp = world.client.request(
                call.method, call.path, params=call.query, json=call.body, headers=headers(token)
            )
            text = resp.text
            assert resp.status_code != 401 and "is scoped to" not in text, f"{call}: {text}"
            if call.template == "/v1/events/batch":
                assert resp.json()["results"][0]["status"] in ("stored", "duplicate")
