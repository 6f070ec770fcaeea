"""Retention expiry on region us of the real KuaiRec-EAR deployment: how long it takes
and the longest write lock one chunk holds, per table.

    python -m benchmarks.bench_retention [--data ../shared/data] [--repeats 3]
        [--store 'postgresql://…?schema=bench_{region}_{n}']

Builds a two-region deployment with all of KuaiRec-EAR imported (events dated as the
import dates them, over the last hours; one held-out label set per test user), gives
each user of us an experiment exposure and ten served pages, then dates half of every
table's rows past a 30-day limit (events by moving their time back, exposures, label sets
and pages spread over 60 days) and runs ``expire_region`` (what ``fyp train`` and ``fyp
retention apply`` run) once, timing every chunk's transaction. ``--repeats`` builds anew
each time (each run expires what the build dated). ``--store``: the stores on a
PostgreSQL server, ``{n}`` numbering the repeats (its schemas must not exist yet).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.deployments import kuairec_deployment
from benchmarks.machine import machine
from fyp.audit.log import sql_store
from fyp.config import DAY_MS
from fyp.regions.deployment import Deployment
from fyp.sovereignty import retention
from fyp.sovereignty.retention_tables import TimedTable
from fyp.storage.base import Store

ROOT = Path(__file__).resolve().parents[1]
REGION = "us"
LIMIT_DAYS = 30
PAGES = 10


def date_rows(d: Deployment, now: int) -> dict[str, int]:
    """Exposures and served pages for every user of the region, and every table's rows
    dated so that about half are past the limit; the rows each table holds."""
    store = d.store(REGION)
    sql = sql_store(store)
    users = [u.user_id for u in store.iter_users()]
    span = 2 * LIMIT_DAYS * DAY_MS  # rows spread evenly over 60 days: half past 30
    with store.transaction():
        sql.executemany(
            "INSERT INTO experiment_exposures (user_id, experiment, variant, exposed_at_ms) "
            "VALUES (?, 'bench', 'A', ?)",
            [(u, now - span * i // len(users)) for i, u in enumerate(users)],
        )
        sql.executemany(
            "UPDATE labels SET stored_at_ms = ? WHERE user_id = ?",
            [(now - span * i // len(users), u) for i, u in enumerate(users)],
        )
        # events: the import dated them over the last hours, in seq order; the older
        # half goes back past the limit (their order kept)
        total = store.count_events()
        sql.execute(
            "UPDATE events SET ts_ms = ts_ms - ? WHERE seq IN "
            "(SELECT seq FROM events ORDER BY seq LIMIT ?)",
            (span, total // 2),
        )
    for i, u in enumerate(users):
        for p in range(PAGES):
            at = now - span * ((i * PAGES + p) % (len(users) * PAGES)) // (len(users) * PAGES)
            store.record_served(u, [f"bench-{p}"], at)
    store.flush_served()
    counts = {"events": store.count_events()}
    for table in ("experiment_exposures", "labels", "served_pages"):
        counts[table] = int(sql.query(f"SELECT COUNT(*) FROM {table}")[0][0])
    return counts


def timed(log: list[float], fn: Callable[..., int]) -> Callable[..., int]:
    def wrapper(*args: Any) -> int:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            log.append(time.perf_counter() - started)

    return wrapper


def one_run(directory: Path, data: Path, store_url: str | None) -> dict[str, Any]:
    kuairec_deployment(directory, data, store_url).close()
    now = time.time_ns() // 1_000_000
    with Deployment.open(directory) as d:
        held = date_rows(d, now)
        store: Store = d.store(REGION)
        chunks: dict[str, list[float]] = {"events": [], "experiment_exposures": [], "labels": []}
        store.expire_events_before = timed(chunks["events"], store.expire_events_before)  # type: ignore[method-assign]
        real = TimedTable.delete_before

        def delete_before(self: TimedTable, s: Any, before_ms: int, limit: int) -> int:
            return timed(chunks[self.table], lambda: real(self, s, before_ms, limit))()

        TimedTable.delete_before = delete_before  # type: ignore[method-assign]
        try:
            toml = directory / "fyp.toml"
            text = f"\n[regions.{REGION}.policy.retention]\nevents_days = {LIMIT_DAYS}\n"
            toml.write_text(toml.read_text("utf-8") + text, "utf-8")
            d.config = retention_config(directory)
            started = time.perf_counter()
            done = retention.expire_region(d, REGION, at_ms=now)
            seconds = time.perf_counter() - started
            count_started = time.perf_counter()
            report = retention.check_retention(d, REGION, at_ms=now)
            check_seconds = time.perf_counter() - count_started
        finally:
            TimedTable.delete_before = real  # type: ignore[method-assign]
    return {
        "rows_held": held,
        "deleted": done.tables,
        "expire_s": round(seconds, 3),
        "check_s": round(check_seconds, 3),
        "check_problems": len(report.problems),
        "chunks": {
            t: {
                "transactions": len(v),
                "median_ms": round(1000 * statistics.median(v), 2) if v else None,
                "max_ms": round(1000 * max(v), 2) if v else None,
                "max_at": v.index(max(v)) if v else None,  # which chunk (0: the first)
            }
            for t, v in chunks.items()
        },
    }


def retention_config(directory: Path) -> Any:
    from fyp.config import load_config

    return load_config(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", default=None, help="store URL with {region} and {n}")
    args = parser.parse_args()
    runs = []
    for n in range(args.repeats):
        url = None if args.store is None else args.store.replace("{n}", str(n))
        with tempfile.TemporaryDirectory(prefix="fyp-bench-retention-") as tmp:
            runs.append(one_run(Path(tmp) / "dep", args.data, url))
    print(
        json.dumps(
            {
                "machine": machine(),
                "region": REGION,
                "store": args.store or "sqlite",
                "limit_days": LIMIT_DAYS,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
