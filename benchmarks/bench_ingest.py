"""HTTP ingestion: batches of 500 (events/s) and single-event POST latency at concurrency 8.

    python -m benchmarks.bench_ingest [--seconds 10] [--repeats 3]

A real ``fyp serve`` process (one worker) on a fresh two-region deployment with 2,000
users and 1,000 videos; wrk with one thread drives it. A FastAPI hello-world is
measured in the same run as the ceiling. Reports medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.server import free_port, running, wrk
from fyp.access.keys import KeyStore
from fyp.catalog.models import User, Video, now_ms
from fyp.regions.deployment import Deployment

LUA = Path(__file__).parent / "lua"


def build(directory: Path) -> str:
    """The deployment, and an ingest key for every region (as a gateway would hold)."""
    t = now_ms()
    with Deployment.init(directory, ["us", "eu"]) as d:
        for i, region in enumerate(d.regions):
            users = [
                User(user_id=f"u{u}", home_region=region, created_at_ms=t, updated_at_ms=t)
                for u in range(2000)
                if u % 2 == i
            ]
            d.store(region).bulk_insert_users(users)
            d.store(region).bulk_insert_videos(
                [
                    Video(
                        video_id=f"v{v}",
                        duration_ms=15_000,
                        regions=d.regions,
                        created_at_ms=t,
                        updated_at_ms=t,
                    )
                    for v in range(1000)
                ]
            )
        return KeyStore(d).create("bench-ingest", ["ingest"])[1]


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("requests_per_s", "p50_ms", "p90_ms", "p99_ms")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "dep"
        key = build(directory)
        port = free_port()
        single, batch, hello = [], [], []
        for _ in range(args.repeats):
            with running(["benchmarks/hello_app.py", str(port)], port) as url:
                hello.append(wrk(url + "/healthz", None, args.seconds, 8))
            with running(["-m", "fyp", "serve", str(directory), "--port", str(port)], port) as url:
                # warm-up, as in bench_feed: the first requests of a fresh server fill the
                # route cache and SQLite's page cache; the target is about steady state
                wrk(url, LUA / "single_event.lua", 2, 8, key)
                single.append(wrk(url, LUA / "single_event.lua", args.seconds, 8, key))
                batch.append(wrk(url, LUA / "batch_events.lua", args.seconds, 8, key))
    results["hello_world_get"] = median_of(hello)
    results["single_event_post_c8"] = median_of(single)
    b = median_of(batch)
    b["events_per_s"] = round(b["requests_per_s"] * 500)
    results["batch_500_post_c8"] = b
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
