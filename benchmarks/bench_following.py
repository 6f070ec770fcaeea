"""The Following tab's page latency, in process, through the HTTP route.

    python -m benchmarks.bench_following [--videos 10000] [--creators 400] [--follows 200]
        [--not-interested 100] [--requests 400] [--repeats 3]
        [--store 'postgresql://…?schema=bench_{region}']

Builds a two-region deployment (us, eu) whose us catalogue holds ``--videos`` videos of
``--creators`` creators (uploads interleaved in time, some in the same millisecond),
moderated as a real region might be (90 % approved, 4 % restricted, 3 %
age-restricted, 2 % rejected, 1 % still pending), and one adult user following
``--follows`` of the creators, who marked ``--not-interested`` of the followed
creators' videos "not interested" (spread over them, within the seen window). Then,
with a ``feed`` key, it times ``GET /v1/users/fan/following/feed?n=10`` through the
app (FastAPI's test client, in this process: routing, the access check, the handler,
JSON), in two scenarios:

- ``first_page``: the first page, over and over (an app opening the tab);
- ``scroll``: page after page along ``next_cursor``, from the first page to the end
  and again (every depth of the keyset).

It also times the library call alone (``FollowingTab.page``, the SQL and the moderation
check) for the first page, and prints the store's query plans (the first page, and a
page halfway down; PostgreSQL's with ``EXPLAIN (ANALYZE, BUFFERS)``). Medians over repeats of
each scenario's median and p99, in milliseconds. ``--videos`` sets the catalogue's size
(the followed share stays ``--follows`` / ``--creators``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from fyp.access.keys import KeyStore
from fyp.audit.log import sql_store
from fyp.catalog.models import User, Video, now_ms
from fyp.feed.following_tab import FollowingTab
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.storage.base import EventRow
from fyp.storage.following_sql import postgres_query, sqlite_query
from fyp.storage.postgres_dialect import split_url

STATES = (
    (0.90, "approved"),
    (0.94, "restricted"),
    (0.97, "age_restricted"),
    (0.99, "rejected"),
)  # the rest: no verdict (pending)
ROUTE = "/v1/users/fan/following/feed"


def build(d: Deployment, videos: int, creators: int, follows: int, hidden: int) -> None:
    store = d.store("us")
    t = now_ms()
    users = [
        User(user_id="fan", home_region="us", birth_year=1990, created_at_ms=t, updated_at_ms=t)
    ]
    users += [
        User(user_id=f"c{k}", home_region="us", created_at_ms=t, updated_at_ms=t)
        for k in range(creators)
    ]
    store.bulk_insert_users(users)
    base = t - videos * 1000
    store.bulk_insert_videos(
        [
            Video(
                video_id=f"v{k:06d}",
                creator_id=f"c{k % creators}",
                caption=f"video {k} #tag{k % 50}",
                hashtags=[f"#tag{k % 50}"],
                categories=[f"cat{k % 20}"],
                duration_ms=15_000,
                regions=["us"],
                # every tenth upload shares its millisecond with the one before
                created_at_ms=base + (k - k % 10 // 9) * 1000,
                updated_at_ms=base + k * 1000,
            )
            for k in range(videos)
        ]
    )
    mod = cell(store).mod
    sql = sql_store(store)
    with store.transaction():
        for k in range(videos):
            share = (k * 7919 % 100) / 100
            state = next((s for edge, s in STATES if share < edge), None)
            if state is not None:
                mod.write(f"v{k:06d}", state, True, "bench", "automated", "bench", t, {})
        # the creators the fan follows, spread over the catalogue
        step = max(1, creators // follows)
        sql.executemany(
            "INSERT INTO follows (user_id, creator_id, since_ms) VALUES (?, ?, ?)",
            [("fan", f"c{k * step}", t) for k in range(follows)],
        )
    fans_creators = {k * step for k in range(follows)}
    followed = [f"v{k:06d}" for k in range(videos) if k % creators in fans_creators]
    picked = followed[:: max(1, len(followed) // hidden)][:hidden] if hidden else []
    store.bulk_insert_events(
        [
            EventRow(f"ni{k}", "fan", v, "not_interested", t, None, None, False, False, False)
            for k, v in enumerate(picked)
        ]
    )


def timed(client: Any, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    resp = client.get(ROUTE, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status_code != 200:
        raise SystemExit(f"{resp.status_code}: {resp.text}")
    return elapsed, resp.json()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def run(client: Any, tab: FollowingTab, requests: int) -> dict[str, dict[str, float]]:
    first = [timed(client, {"n": 10})[0] for _ in range(requests)]
    scroll: list[float] = []
    cursor = None
    while len(scroll) < requests:
        ms, body = timed(client, {"n": 10} if cursor is None else {"n": 10, "cursor": cursor})
        scroll.append(ms)
        cursor = body["next_cursor"]
    library = []
    for _ in range(requests):
        started = time.perf_counter()
        tab.page("fan", 10)
        library.append((time.perf_counter() - started) * 1000)
    return {
        name: {"median": statistics.median(v), "p99": p99(v)}
        for name, v in (("first_page", first), ("scroll", scroll), ("library_first_page", library))
    }


def plan(d: Deployment) -> dict[str, list[str]]:
    """The store's plan for the first page and for one halfway down the followed
    creators' videos (the query the store runs: ``fyp.storage.following_sql``), each
    with ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL, where the plain join SQLite runs (what
    PostgreSQL ran before session 22) is explained too, for comparison."""
    sql = sql_store(d.store("us"))
    postgres = type(sql).__name__.startswith("Postgres")
    since = now_ms() - d.config.feed.seen_window_ms
    middle = sql.query(
        "SELECT v.created_at_ms, v.video_id FROM follows f JOIN videos v "
        "ON v.creator_id = f.creator_id WHERE f.user_id = 'fan' "
        "ORDER BY v.created_at_ms DESC, v.video_id LIMIT 1 OFFSET "
        "(SELECT COUNT(*) / 2 FROM follows f JOIN videos v ON v.creator_id = f.creator_id "
        "WHERE f.user_id = 'fan')"
    )
    after = (int(middle[0][0]), str(middle[0][1])) if middle else None
    out: dict[str, list[str]] = {}
    for name, cursor in (("first_page", None), ("halfway", after)):
        if postgres:
            for label, build in (("", postgres_query), ("join_", sqlite_query)):
                query, params = build("fan", cursor, 11, since)
                rows = sql.query("EXPLAIN (ANALYZE, BUFFERS) " + query, params)
                out[label + name] = [str(r[0]) for r in rows]
        else:
            query, params = sqlite_query("fan", cursor, 11, since)
            out[name] = [str(r[-1]) for r in sql.query("EXPLAIN QUERY PLAN " + query, params)]
    return out


def main() -> None:
    from fastapi.testclient import TestClient

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--creators", type=int, default=400)
    parser.add_argument("--follows", type=int, default=200)
    parser.add_argument("--not-interested", type=int, default=100)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", default=None, help="a store URL with {region}")
    args = parser.parse_args()
    runs: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Deployment.init(Path(tmp) / "d", ["us", "eu"], store=args.store)
        with d:
            build(d, args.videos, args.creators, args.follows, args.not_interested)
            sql = sql_store(d.store("us"))
            if type(sql).__name__.startswith("Postgres"):
                # what autovacuum does within a minute of a bulk load: without statistics
                # the planner takes the just-filled tables for empty and scans them
                sql.execute("ANALYZE videos")
                sql.execute("ANALYZE follows")
                sql.execute("ANALYZE events")
            token = KeyStore(d).create("bench", ["feed"])[1]
            tab = FollowingTab(d)
            with TestClient(create_app(d), headers={"Authorization": f"Bearer {token}"}) as c:
                timed(c, {"n": 10})  # warm: the key ring, the catalogue snapshot
                first = timed(c, {"n": 10})[1]
                followed = sum(
                    1
                    for _ in sql_store(d.store("us")).query(
                        "SELECT 1 FROM follows f JOIN videos v ON v.creator_id = f.creator_id "
                        "WHERE f.user_id = 'fan'"
                    )
                )
                for _ in range(args.repeats):
                    runs.append(run(c, tab, args.requests))
            query_plan = plan(d)
            if args.store is not None:  # a PostgreSQL run leaves no schema behind
                for region in d.regions:
                    schema = split_url(args.store.format(region=region))[1]
                    if schema is not None:
                        with d.store(region).transaction():
                            sql_store(d.store(region)).execute(f'DROP SCHEMA "{schema}" CASCADE')
    out: dict[str, Any] = {
        "machine": machine(),
        "unit": "milliseconds per page of 10",
        "store": "sqlite" if args.store is None else args.store.split(":", 1)[0],
        "videos": args.videos,
        "creators": args.creators,
        "follows": args.follows,
        "not_interested": args.not_interested,
        "videos_of_followed_creators": followed,
        "first_page_items": len(first["items"]),
        "requests_per_scenario": args.requests,
        "repeats": args.repeats,
    }
    for name in runs[0]:
        out[name] = {
            stat: round(statistics.median(r[name][stat] for r in runs), 3)
            for stat in ("median", "p99")
        }
    out["query_plan"] = query_plan
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
