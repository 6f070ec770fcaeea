"""``fyp train`` on the real KuaiRec-EAR deployment: local processes against Ray tasks.

    python -m benchmarks.bench_train [--data ../shared/data] [--repeats 3] [--cpus 2]

Builds the two-region (us, eu) deployment of ``bench_feed`` (all of KuaiRec-EAR imported
and moderated), starts a single-node Ray runtime in this process (``--cpus`` CPUs,
labelled ``fyp-region:us`` and ``fyp-region:eu``; no dashboard), and times, alternately
in each repeat, the whole command as an operator or cron runs it (Python start-up, and
for Ray connecting to the cluster, included):

- ``fyp train DIR`` — a local process per region;
- ``fyp train DIR --ray ADDRESS`` — a Ray task per region on the labelled node.

Both train every region from scratch and rank every user ahead. Reports medians over
repeats, each run's wall time and the per-region seconds the command printed, with the
machine. The Ray runtime's own start-up (once per cluster, not per run) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.deployments import kuairec_deployment
from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
REGION_LINE = re.compile(r"region (\w+): version .*?, ([\d.]+) s, feeds ranked ahead in ([\d.]+) s")


def train(directory: Path, *extra: str) -> dict[str, Any]:
    """One ``fyp train`` run: wall seconds and each region's train/rank-ahead seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "train", str(directory), *extra],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fyp train {' '.join(extra)} failed ({done.returncode}): {done.stderr}")
    text = " ".join(done.stdout.split())
    regions = {
        m.group(1): {"train_s": float(m.group(2)), "rank_ahead_s": float(m.group(3))}
        for m in REGION_LINE.finditer(text)
    }
    return {"wall_s": round(seconds, 2), "regions": regions}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"median_s": round(statistics.median(r["wall_s"] for r in runs), 2), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray node")
    args = parser.parse_args()
    import ray

    results: dict[str, Any] = {"machine": machine(), "ray_version": ray.__version__}
    with tempfile.TemporaryDirectory(prefix="fyp-bench-train-") as tmp:
        directory = Path(tmp) / "dep"
        kuairec_deployment(directory, args.data).close()
        started = time.perf_counter()
        ray.init(
            num_cpus=args.cpus,
            resources={"fyp-region:us": 1, "fyp-region:eu": 1},
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        results["ray_start_s"] = round(time.perf_counter() - started, 2)
        address = ray.get_runtime_context().gcs_address
        local: list[dict[str, Any]] = []
        on_ray: list[dict[str, Any]] = []
        try:
            for _ in range(args.repeats):
                local.append(train(directory))
                on_ray.append(train(directory, "--ray", address))
        finally:
            ray.shutdown()
    results["train_local_processes"] = summary(local)
    results["train_ray_tasks"] = summary(on_ray)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
