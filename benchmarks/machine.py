"""Machine details recorded next to every benchmark result.

The machine these benchmarks run on is shared, and its speed drifts: the same import
took 1.47 s and 2.87 s within an hour, CPU time included. ``speed_probe`` times a
small fixed workload (Python loops and dicts, JSON, SQLite inserts: what fyp itself
spends its time on) so that every result carries the speed of the machine when it
was taken; compare results by their probe before comparing code. The speed can change
within seconds (one round of the probe took 104 ms to 208 ms in the same minute), so a
probe is a hint about the run, not a correction factor.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from typing import Any

PROBE_ROUNDS = 5


def _probe_once() -> float:
    started = time.perf_counter()
    rows = [(f"user-{i}", i % 97, json.dumps({"n": i, "tags": ["a", "b"]})) for i in range(20_000)]
    counts: dict[int, int] = {}
    for _, bucket, _ in rows:
        counts[bucket] = counts.get(bucket, 0) + 1
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, b INTEGER, doc TEXT) WITHOUT ROWID")
    db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    db.commit()
    db.close()
    return time.perf_counter() - started


def speed_probe() -> float:
    """Median milliseconds of the fixed workload over a few rounds (lower is faster)."""
    return round(1000 * statistics.median(_probe_once() for _ in range(PROBE_ROUNDS)), 2)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "speed_probe_ms": speed_probe(),
    }
