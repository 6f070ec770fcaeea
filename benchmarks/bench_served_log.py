"""What recording and reading a served page costs on each served log, in process.

    python -m benchmarks.bench_served_log [--url URL …] [--pages 2000] [--repeats 3]

Each ``--url`` is a region's ``served_log`` (``redis://…``, ``redis+sentinel://…``,
``redis+cluster://…?wait_replicas=1``…) beside a SQLite store of 200 users; the store's
own served log (SQLite, which buffers pages and commits them in groups) is timed in the
same run as the peer. Per repeat and served log: ``record_served`` ``--pages`` times
(users in turn, two videos a page), then ``served_since`` as many times; medians in
milliseconds, and each as a ratio to the store's own. Every Redis URL is emptied first
(``FLUSHDB``, every primary of a cluster): give it a database of its own.
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
from fyp.catalog.models import User, now_ms
from fyp.storage import open_store
from fyp.storage.base import Store
from fyp.storage.postgres_dialect import redact
from fyp.storage.redis_url import connect, disconnect, parse_redis_url
from fyp.storage.served_logs import ServedLog, StoreServedLog, open_served_log

USERS = 200
WINDOW_MS = 3_600_000


def _empty(url: str) -> None:
    client = connect(parse_redis_url(url), 2.0)
    try:
        client.flushdb()
    finally:
        disconnect(client)


def _time(log: ServedLog, pages: int) -> tuple[float, float]:
    """Median milliseconds of a page recorded, and of a user's pages read."""
    recorded, read = [], []
    t0 = now_ms()
    for k in range(pages):
        started = time.perf_counter()
        log.record_served(f"u{k % USERS}", [f"v{k}", f"w{k}"], t0 + k)
        recorded.append(time.perf_counter() - started)
    for k in range(pages):
        started = time.perf_counter()
        log.served_since(f"u{k % USERS}", t0)
        read.append(time.perf_counter() - started)
    return statistics.median(recorded) * 1e3, statistics.median(read) * 1e3


def _store(directory: Path, name: str) -> Store:
    store = open_store(f"sqlite:///{directory / name}.sqlite", "us", create=True)
    t = now_ms()
    store.bulk_insert_users(
        [
            User(user_id=f"u{u}", home_region="us", created_at_ms=t, updated_at_ms=t)
            for u in range(USERS)
        ]
    )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", action="append", default=[], help="a served_log URL")
    parser.add_argument("--pages", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    names = ["store (SQLite)", *(redact(u) for u in args.url)]
    runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, url in zip(names, [None, *args.url], strict=True):
                store = _store(Path(tmp), f"r{repeat}-{len(runs[name])}-{names.index(name)}")
                if url is None:
                    log: ServedLog = StoreServedLog(store)
                else:
                    _empty(url)
                    log = open_served_log(url, "us", store, WINDOW_MS)
                try:
                    runs[name].append(_time(log, args.pages))
                finally:
                    log.close()
                    store.close()
    base_record = statistics.median(r[0] for r in runs[names[0]])
    base_read = statistics.median(r[1] for r in runs[names[0]])
    results: dict[str, Any] = {}
    for name, timed in runs.items():
        record = statistics.median(r[0] for r in timed)
        read = statistics.median(r[1] for r in timed)
        results[name] = {
            "record_ms": round(record, 4),
            "record_ms_repeats": [round(r[0], 4) for r in timed],
            "read_ms": round(read, 4),
            "read_ms_repeats": [round(r[1], 4) for r in timed],
            "record_x_store": round(record / base_record, 2),
            "read_x_store": round(read / base_read, 2),
        }
    out = {"machine": machine(), "pages": args.pages, "users": USERS, "results": results}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
