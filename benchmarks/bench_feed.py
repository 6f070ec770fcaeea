"""Feed serving and training on the real KuaiRec-EAR deployment.

    python -m benchmarks.bench_feed [--data ../shared/data] [--seconds 10] [--repeats 3]
        [--store 'postgresql://…?schema=bench_{region}']
        [--served-log redis://127.0.0.1:PORT/1 redis://127.0.0.1:PORT/2] [--workers 1 2]

Builds a two-region deployment (us, eu) with all of KuaiRec-EAR imported; each repeat
times ``fyp train`` for all regions (which also ranks every user's next 50 videos
ahead), then serves it with one worker and drives
``GET /v1/users/{random user}/feed?n=10`` with wrk at concurrency 8 (every request
also records what it served): users the server has not seen yet, two or three pages
each per run. A second scenario, on a fresh server, has each user scroll 5 pages in a
row (``lua/feed_sessions.lua``): it uses orders up, so later pages run the pipeline.
A third, on a fresh server again, is what an app's users do: a page, then an event about
its first video, and the next page only once the event is acknowledged
(``lua/feed_with_events.lua``), so every page after a session's first is ranked afresh
(read-your-writes); wrk counts its 4 events and 5 pages of a session together.
A FastAPI hello-world is measured in the same run as the ceiling. Medians over repeats.
With ``--workers 1 2`` (any counts besides 1), each repeat ends with the first scenario
again, from another training run (the same state of the orders ranked ahead), on
``fyp serve --workers N`` (``feed_get_n10_c8_workersN``): wrk's one thread shares the
machine's cores with the workers.

Most of those pages come from the orders ``fyp train`` ranked ahead. The cost when an
order is stale is timed too, in process: each of 300 random users likes a video, then
asks for a feed, which must run the whole pipeline (read-your-writes).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_ingest import median_of
from benchmarks.deployments import kuairec_deployment
from benchmarks.machine import machine
from benchmarks.server import free_port, running, wrk
from fyp.access.keys import KeyStore

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).parent / "lua"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--store",
        default=None,
        help="store URL with {region} (e.g. postgresql://fyp@127.0.0.1/fyp?schema=bench_{region};"
        " its schemas must not exist yet); default: a SQLite file per region",
    )
    parser.add_argument(
        "--served-log",
        nargs="+",
        default=None,
        help="each region's served log on Redis, us then eu (one URL with {region} for both);"
        " its databases should be empty; default: in the store",
    )
    parser.add_argument(
        "--workers",
        nargs="+",
        type=int,
        default=[1],
        help="worker counts of `fyp serve --workers` to measure the plain feed with "
        "(besides the one process of every scenario)",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": machine(),
        "store": args.store or "sqlite",
        "served_log": "redis" if args.served_log else "store",
    }
    with tempfile.TemporaryDirectory(prefix="fyp-bench-feed-") as tmp:
        directory = Path(tmp) / "dep"
        with kuairec_deployment(directory, args.data, args.store, args.served_log) as d:
            key = KeyStore(d).create("bench-feed", ["feed"])[1]  # the app backend's key
            # an app backend that also forwards its users' events
            app_key = KeyStore(d).create("bench-app", ["feed", "ingest"])[1]
        port = free_port()
        train_runs: list[float] = []
        hello, feed, sessions, with_events = [], [], [], []
        many: dict[int, list[dict[str, Any]]] = {w: [] for w in args.workers if w > 1}
        for _ in range(args.repeats):
            # each repeat starts from a training run, as a deployment does after each
            # `fyp train`: every user's order is ranked ahead again; the scenarios then
            # use them up (5 pages each), and later pages run the pipeline
            train_runs.append(train(directory))
            with running([str(Path(__file__).parent / "hello_app.py"), str(port)], port) as url:
                hello.append(wrk(url + "/healthz", None, args.seconds, 8))
            serve = ["-m", "fyp", "serve", str(directory), "--port", str(port)]
            with running(serve, port) as url:
                wrk(url, LUA / "feed.lua", 2, 8, key)  # warm-up: load both regions' models
                feed.append(wrk(url, LUA / "feed.lua", args.seconds, 8, key))
            with running(serve, port) as url:  # a fresh server: no user seen yet
                wrk(url, LUA / "feed.lua", 2, 8, key)
                sessions.append(wrk(url, LUA / "feed_sessions.lua", args.seconds, 8, key))
            with running(serve, port) as url:  # again, with an event before each next page
                wrk(url, LUA / "feed.lua", 2, 8, key)
                run = wrk(url, LUA / "feed_with_events.lua", args.seconds, 8, app_key)
                run["feeds_per_s"] = round(run["requests_per_s"] * 5 / 9, 1)  # 5 pages, 4 events
                with_events.append(run)
            for workers, runs in many.items():  # the first scenario on N worker processes,
                train(directory)  # from a training run too: the orders ranked ahead afresh
                with running([*serve, "--workers", str(workers)], port, ready="serving") as url:
                    wrk(url, LUA / "feed.lua", 2, 8, key)
                    runs.append(wrk(url, LUA / "feed.lua", args.seconds, 8, key))
        results["train_all_regions_s"] = {
            "median": round(statistics.median(train_runs), 2),
            "runs": [round(t, 2) for t in train_runs],
        }
        results["feed_after_an_event_in_process_ms"] = after_an_event(directory)
    results["hello_world_get_c8"] = median_of(hello)
    results["feed_get_n10_c8"] = median_of(feed)
    for workers, runs in many.items():
        results[f"feed_get_n10_c8_workers{workers}"] = median_of(runs)
    results["feed_sessions_of_5_pages_c8"] = median_of(sessions)
    results["feed_sessions_with_events_c8"] = median_of(with_events)
    print(json.dumps(results, indent=2))


def train(directory: Path) -> float:
    """``fyp train``, timed (seconds)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fyp", "train", str(directory)], check=True, capture_output=True
    )
    return time.perf_counter() - started


def after_an_event(directory: Path, users: int = 300) -> dict[str, float]:
    """Feed right after the user's own event: the order ranked ahead is stale, so the
    pipeline runs (state, sources, filters, scoring, re-ranking 50 videos ahead)."""
    from threadpoolctl import threadpool_limits

    from fyp.events.ingest import Ingestor
    from fyp.feed.service import FeedService
    from fyp.regions.deployment import Deployment

    with threadpool_limits(1, "blas"), Deployment.open(directory) as d:
        service, ingestor = FeedService(d), Ingestor(d)
        ids = [u.user_id for r in d.regions for u in d.store(r).iter_users()]
        picked = random.Random(7).sample(ids, users)
        timings = []
        for n, user in enumerate(picked):
            first = service.feed(user, n=10)  # warm: the model is loaded, the user is known
            like = {"event_id": f"bench-like-{n}", "user_id": user, "type": "like"}
            ingestor.ingest([{**like, "video_id": first.items[0].video_id}])
            started = time.perf_counter()
            service.feed(user, n=10)
            timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "users": users,
        "median_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[int(0.99 * (len(timings) - 1))], 3),
    }


if __name__ == "__main__":
    main()
