"""Run every benchmark in sequence and write their JSON to benchmarks/out/.

    python -m benchmarks.run [--quick]

Each benchmark prints JSON with machine details; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "out"
BENCHMARKS = {
    "import": ["-m", "benchmarks.bench_import", "--repeats", "5"],
    "ingest": ["-m", "benchmarks.bench_ingest", "--seconds", "10", "--repeats", "3"],
    "feed": ["-m", "benchmarks.bench_feed", "--seconds", "10", "--repeats", "3"],
    "eval": ["-m", "benchmarks.bench_eval"],
    "moderation": ["-m", "benchmarks.bench_moderation"],
    "backup": ["-m", "benchmarks.bench_backup", "--repeats", "5"],
    "auth": ["-m", "benchmarks.bench_auth"],
    "train": ["-m", "benchmarks.bench_train", "--repeats", "3"],
    "following": ["-m", "benchmarks.bench_following"],
    "retention": ["-m", "benchmarks.bench_retention"],
}
QUICK = {
    "import": ["-m", "benchmarks.bench_import", "--repeats", "1"],
    "ingest": ["-m", "benchmarks.bench_ingest", "--seconds", "3", "--repeats", "1"],
    "feed": ["-m", "benchmarks.bench_feed", "--seconds", "3", "--repeats", "1"],
    "backup": ["-m", "benchmarks.bench_backup", "--repeats", "1"],
    "auth": ["-m", "benchmarks.bench_auth", "--calls", "5000", "--repeats", "3"],
    "train": ["-m", "benchmarks.bench_train", "--repeats", "1"],
    "following": ["-m", "benchmarks.bench_following", "--requests", "100", "--repeats", "1"],
    "retention": ["-m", "benchmarks.bench_retention", "--repeats", "1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short repeat of each")
    parser.add_argument("names", nargs="*", help="which benchmarks (default: all)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    table = QUICK if args.quick else BENCHMARKS
    for name, cmd in table.items():
        if args.names and name not in args.names:
            continue
        print(f"== {name}", flush=True)
        result = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark {name} failed")
        (OUT / f"{name}.json").write_text(result.stdout, encoding="utf-8")
        print(result.stdout, flush=True)


if __name__ == "__main__":
    main()
