"""Per-request cost of the access check, in process.

    python -m benchmarks.bench_auth [--calls 20000] [--repeats 15]

Times ``Access.check`` (key lookup, role, regions) on a fresh two-region deployment for
the hot routes with a cached key: a feed request with an all-regions key and with a key
scoped to the user's region (which also places the user), and an event POST. For
scale, it also times a minimal FastAPI app with and without one app-level dependency
(the other way to check every route). Medians over repeats, microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from benchmarks.machine import machine
from fyp.access.guard import Access
from fyp.access.keys import KeyStore
from fyp.catalog.models import User, now_ms
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app


def _scope(method: str, path: str, token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"n=10",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(_: Any) -> None:
    return None


async def _time_check(access: Access, scope: dict[str, Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await access.check(dict(scope), _receive)
    return (time.perf_counter() - started) / calls * 1e6


def _tiny_app(with_dependency: bool) -> FastAPI:
    async def authorize(request: Request) -> None:
        request.headers.get("authorization")

    app = FastAPI(dependencies=[Depends(authorize)] if with_dependency else [])
    router = APIRouter()

    @router.get("/v1/users/{user_id}/feed")
    async def feed(user_id: str) -> Response:
        return Response(b"{}", media_type="application/json")

    app.include_router(router)
    return app


async def _time_app(app: FastAPI, scope: dict[str, Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await app(dict(scope, asgi={"version": "3.0"}), _receive, _send)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Deployment.init(Path(tmp) / "d", ["us", "eu"]) as d:
        t = now_ms()
        d.store("us").bulk_insert_users(
            [User(user_id="u7", home_region="us", created_at_ms=t, updated_at_ms=t)]
        )
        keys = KeyStore(d)
        feed_all = keys.create("feed", ["feed"])[1]
        feed_us = keys.create("feed-us", ["feed"], ["us"])[1]
        ingest = keys.create("ingest", ["ingest"])[1]
        access: Access = create_app(d).state.access
        cases = {
            "feed_all_regions_key": _scope("GET", "/v1/users/u7/feed", feed_all),
            "feed_region_scoped_key": _scope("GET", "/v1/users/u7/feed", feed_us),
            "event_post": _scope("POST", "/v1/events", ingest),
        }
        apps = {"fastapi_plain": _tiny_app(False), "fastapi_one_dependency": _tiny_app(True)}

        async def run() -> dict[str, list[float]]:
            runs: dict[str, list[float]] = {k: [] for k in (*cases, *apps)}
            for scope in cases.values():  # warm: load the ring, cache the route
                await _time_check(access, scope, 1000)
            for _ in range(args.repeats):
                for name, scope in cases.items():
                    runs[name].append(await _time_check(access, scope, args.calls))
                app_scope = cases["feed_all_regions_key"]
                for name, app in apps.items():
                    runs[name].append(await _time_app(app, app_scope, args.calls // 4))
            return runs

        runs = asyncio.run(run())
    out: dict[str, Any] = {"machine": machine(), "unit": "microseconds per request"}
    for name, values in runs.items():
        out[name] = {"median": round(statistics.median(values), 2), "min": round(min(values), 2)}
    out["fastapi_dependency_overhead"] = round(
        out["fastapi_one_dependency"]["median"] - out["fastapi_plain"]["median"], 2
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
