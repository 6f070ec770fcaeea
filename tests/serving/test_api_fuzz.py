"""Every operation of the OpenAPI document, fuzzed against the document (``fuzzing``).

Deterministic (hypothesis derandomized), a few examples per operation and kind of
caller: each shard fuzzes every other operation of the document in an app of its own,
so a new route is fuzzed without being named here. The feed and the events also go to a
real ``fyp serve`` process, where the fast path (``fyp.serving.fastpath``) and uvicorn's
protocol answer them. ``FYP_FUZZ_EXAMPLES=N`` runs N examples per operation instead (a
long exploration: docs/architecture.md, "Errors").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.access.routes import app_routes, taken_literals
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from serving import fuzzing
from serving.servers import Server
from storage.postgres_server import SERVER, drop_schemas, schema_url

SHARDS = 2
EXAMPLES = fuzzing.EXAMPLES or 12
HTTP_EXAMPLES = fuzzing.EXAMPLES or 40
UNDOCUMENTED = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
"""FastAPI's own pages: not operations of the document."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[fuzzing.FuzzWorld, Deployment, Any]]:
    world = fuzzing.build_world(tmp_path / "dep")
    with Deployment.open(world.directory) as d:
        app = create_app(d)
        with TestClient(app):  # runs the app's lifespan
            yield world, d, app


def shard_of(operations: list[Any], shard: int) -> list[Any]:
    return operations[shard::SHARDS]


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_operation_answers_as_documented(
    served: tuple[fuzzing.FuzzWorld, Deployment, Any], shard: int
) -> None:
    world, d, app = served
    schema, send = fuzzing.in_process(app)
    verify = fuzzing.stored_events_are_kept(d)
    fuzzing.fuzz_all(shard_of(fuzzing.operations(schema), shard), world, send, EXAMPLES, verify)


def test_the_shards_cover_every_route_of_the_app(deployment: Deployment) -> None:
    """Every route the app serves is an operation of the document, and every operation
    is in a shard: a new route is fuzzed as it is added."""
    app = create_app(deployment)
    schema, _ = fuzzing.in_process(app)
    operations = fuzzing.operations(schema)
    documented = {(op.method.upper(), op.path) for op in operations}
    served_routes = {(m, p) for m, p in app_routes(app) if p not in UNDOCUMENTED}
    # and what a route taking any id serves on another's path (PUT .../following/feed)
    served_routes |= {(t.method, t.path) for t in taken_literals(app)}
    assert documented == served_routes
    assert len(documented) >= 28
    sharded = [op for shard in range(SHARDS) for op in shard_of(operations, shard)]
    assert sorted((op.method, op.path) for op in sharded) == sorted(
        (op.method, op.path) for op in operations
    )


@pytest.mark.slow
def test_a_real_server_answers_the_feed_and_events_as_documented(tmp_path: Path) -> None:
    """Over HTTP, to ``fyp serve``: the feed and single events are answered by the fast
    path, below FastAPI; the batch and a debug feed by the routes. (A long run, with
    ``FYP_FUZZ_EXAMPLES``, sends every operation.)"""
    world = fuzzing.build_world(tmp_path / "dep")
    server = Server(world.directory, tmp_path / "server.log").start().wait()
    try:
        schema, send = fuzzing.over_http(server.url)
        with Deployment.open(world.directory) as d:
            verify = fuzzing.stored_events_are_kept(d)
            ops = fuzzing.operations(schema)
            hot = [op for op in ops if fuzzing.EXAMPLES or (op.tags and op.tags[0] in HOT)]
            assert {(op.method, op.path) for op in hot} >= {
                ("get", "/v1/users/{user_id}/feed"),
                ("post", "/v1/events"),
            }
            fuzzing.fuzz_all(hot, world, send, HTTP_EXAMPLES, verify)
        assert server.process is not None and server.process.poll() is None, server.output()
        assert "Traceback" not in server.output(), server.output()
    finally:
        server.stop()


HOT = {"feed", "events"}


@pytest.mark.slow
@pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")
def test_every_operation_answers_as_documented_on_postgresql(tmp_path: Path) -> None:
    """The same on PostgreSQL stores (a NUL in a path or body was a 500 there)."""
    prefix = f"fz{tmp_path.name[-8:].replace('-', '_')}"
    world = fuzzing.build_world(tmp_path / "dep", store=schema_url(f"{prefix}_{{region}}"))
    try:
        with Deployment.open(world.directory) as d:
            app = create_app(d)
            with TestClient(app):
                schema, send = fuzzing.in_process(app)
                verify = fuzzing.stored_events_are_kept(d)
                ops = fuzzing.operations(schema)
                fuzzing.fuzz_all(ops, world, send, fuzzing.EXAMPLES or 4, verify)
    finally:
        drop_schemas(prefix)
