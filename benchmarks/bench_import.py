"""Full KuaiRec-EAR import (348,666 rows) into a fresh two-region deployment.

    python -m benchmarks.bench_import [--data ../shared/data] [--repeats 5] [--writers auto]

Each repeat imports into a new temporary deployment (the whole import: reading the CSVs,
users, videos, events and labels). ``--writers``: ``processes`` (one writer process per
region), ``sequential`` (this process), or ``auto`` (the default of ``fyp import``:
processes with 2+ regions, 2+ CPUs and fork). Prints JSON: the median rows/s, every
run, and the machine. The load average is recorded too: busy cores skew the results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from fyp.datasets.kuairec_ear import import_kuairec_ear
from fyp.regions.deployment import Deployment

ROOT = Path(__file__).resolve().parents[1]


WRITERS = {"auto": None, "processes": True, "sequential": False}


def cpu_seconds() -> tuple[float, float]:
    """CPU time (user + system) of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_once(data: Path, parallel: bool | None) -> dict[str, Any]:
    """One import; with its CPU time, which shows whether a slow run did more work or
    only got less of a machine whose speed drifts."""
    with tempfile.TemporaryDirectory(prefix="fyp-bench-import-") as tmp:
        with Deployment.init(Path(tmp) / "dep", ["us", "eu"]) as d:
            before = cpu_seconds()
            report = import_kuairec_ear(d, data, parallel=parallel)
            after = cpu_seconds()
        return {
            "rows": report.rows,
            "seconds": round(report.seconds, 4),
            "cpu_s_parent": round(after[0] - before[0], 3),
            "cpu_s_writers": round(after[1] - before[1], 3),
            "writers": report.notes[-1].removeprefix("writers: "),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--writers", choices=sorted(WRITERS), default="auto")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = [run_once(args.data, WRITERS[args.writers]) for _ in range(args.repeats)]
    rates = [r["rows"] / r["seconds"] for r in runs]
    result = {
        "benchmark": "import kuairec-ear",
        "rows": runs[0]["rows"],
        "regions": 2,
        "writers": args.writers,
        "median_rows_per_s": round(statistics.median(rates)),
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "runs": runs,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
