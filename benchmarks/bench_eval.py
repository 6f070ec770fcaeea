"""The full evaluation, timed: ``fyp eval kuairec-ear`` on the real data, once.

    python -m benchmarks.bench_eval [--data ../shared/data] [--out benchmarks/out/eval]
                                    [--users N] [--regions global] [--seed 0]

Runs the real command in a child process (exactly what a user runs: import, training,
offline for fyp and five peers, the interactive simulation, report), then prints JSON:
the wall time, the offline and interactive tables from ``results.json``, the per-stage
seconds, and the machine with its load average before and after (busy cores skew
every number here). The budget is 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "eval")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--regions", default="global")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    command = [
        sys.executable,
        "-m",
        "fyp",
        "eval",
        "kuairec-ear",
        "--data",
        str(args.data),
        "--out",
        str(args.out),
        "--regions",
        args.regions,
        "--seed",
        str(args.seed),
    ]
    if args.users is not None:
        command += ["--users", str(args.users)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    # the command's own progress goes to stderr here, so stdout stays one JSON document
    done = subprocess.run(command, stdout=sys.stderr, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.returncode)
    results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    report = {
        "benchmark": "fyp eval kuairec-ear",
        "command": " ".join(command[1:]),
        "wall_seconds": round(wall, 1),
        "wall_minutes": round(wall / 60, 2),
        "within_budget": wall <= BUDGET_S,
        "offline": results["offline"],
        "interactive": results["interactive"],
        "stage_seconds": results["seconds"],
        "config": results["config"],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
