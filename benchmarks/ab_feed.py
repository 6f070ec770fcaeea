"""Interleaved A/B of the feed between two revisions, on one trained deployment.

    python -m benchmarks.ab_feed BASE [HEAD] [--data ../shared/data] [--pairs 3]
                                 [--seconds 8] [--deployment DIR] [--script feed.lua]
                                 [--personalised-feed-off]

This machine's speed drifts by ~10 % from one minute to the next, more than most
changes to the feed are worth, so a change is judged against its base in alternating
runs: every run serves a fresh copy of the same trained deployment with one worker, at
concurrency 8 (wrk, 2 s of warm-up, then ``--seconds``), the order of the two sides
alternating pair by pair. BASE and HEAD are git revisions (HEAD defaults to the working
tree), each checked out into a temporary worktree and run with its own ``src`` first on
``PYTHONPATH``. The deployment (KuaiRec-EAR imported, moderated, trained) is built with
BASE's command line, so HEAD opens it as it would open an older deployment (migrating
it); ``--deployment`` reuses one built before. Prints JSON: each run (feeds/s, p50 /
p90 / p99, server CPU per request), each side's medians, and the per-pair ratios
HEAD / BASE with their median. ``--personalised-feed-off`` sets every region's
``[regions.R.policy.consent] personalised_feed = false`` in each run's copy: a revision
that honours it serves the feed not based on profiling to every user (one from before
it ignores the table and serves the profiled feed). The copy's orders were ranked before
the switch, so each page then runs the pipeline (what a policy changed after training
costs until the next); for a deployment trained with the policy, set it in its
``fyp.toml``, run ``fyp train`` and pass it with ``--deployment``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.machine import machine
from benchmarks.server import free_port, wrk

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).parent / "lua"
_TICK = os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base", help="git revision to compare against")
    parser.add_argument("head", nargs="?", default=None, help="default: the working tree")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--deployment", type=Path, default=None, help="a trained deployment")
    parser.add_argument(
        "--script",
        default="feed.lua",
        help="the wrk script in benchmarks/lua measured (feed_sessions.lua: 5 pages a user;"
        " feed_with_events.lua: an event before each next page)",
    )
    parser.add_argument(
        "--personalised-feed-off",
        action="store_true",
        help="every region's default personalised_feed consent false in each run's copy",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fyp-ab-") as tmp_name:
        tmp = Path(tmp_name)
        with checkout(args.base, tmp / "base") as base, checkout(args.head, tmp / "head") as head:
            pristine = args.deployment or build(base, tmp / "pristine", args.data)
            key = create_key(base, pristine)
            sides = {"base": base, "head": head}
            runs: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
            for pair in range(args.pairs):
                order = ["base", "head"] if pair % 2 == 0 else ["head", "base"]
                for side in order:
                    copy = tmp / f"run-{pair}-{side}"
                    shutil.copytree(pristine, copy)
                    if args.personalised_feed_off:
                        personalised_feed_off(copy)
                    measured = serve_and_measure(
                        sides[side], copy, key, args.seconds, LUA / args.script
                    )
                    runs[side].append(measured)
                    shutil.rmtree(copy)
    print(json.dumps(summary(args.base, args.head, runs), indent=2))


@contextmanager
def checkout(revision: str | None, where: Path) -> Iterator[Path]:
    """The ``src`` of ``revision`` in a temporary worktree (None: this working tree)."""
    if revision is None:
        yield ROOT / "src"
        return
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(where), revision], check=True)
    try:
        yield where / "src"
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(where)], check=True)


def fyp(src: Path, *args: str) -> str:
    """Run ``python -m fyp ARGS`` with ``src`` first on the path; returns its output."""
    env = {**os.environ, "PYTHONPATH": str(src), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "fyp", *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def build(src: Path, directory: Path, data: Path) -> Path:
    fyp(src, "init", str(directory), "--regions", "us,eu")
    fyp(src, "import", "kuairec-ear", str(directory), "--data", str(data))
    fyp(src, "moderate", str(directory))
    fyp(src, "train", str(directory))
    return directory


def personalised_feed_off(directory: Path) -> None:
    """Every region of the deployment serves the feed not based on profiling to users who
    recorded no consent (all of an imported data set's)."""
    toml = directory / "fyp.toml"
    regions = tomllib.loads(toml.read_text(encoding="utf-8"))["regions"]
    with toml.open("a", encoding="utf-8") as f:
        for name in regions:
            f.write(f"\n[regions.{name}.policy.consent]\npersonalised_feed = false\n")


def create_key(src: Path, directory: Path) -> str:
    # feed and ingest: feed_with_events.lua sends events between pages, as an app does
    out = fyp(
        src,
        "keys",
        "create",
        str(directory),
        "--name",
        "ab",
        "--role",
        "feed",
        "--role",
        "ingest",
        "--json",
    )
    return str(json.loads(out)["key"])


def serve_and_measure(
    src: Path, directory: Path, key: str, seconds: int, script: Path
) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, "-m", "fyp", "serve", str(directory), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url)
        wrk(url, LUA / "feed.lua", 2, 8, key)  # warm-up: load both regions' models
        cpu_before = cpu_ticks(proc.pid)
        out = wrk(url, script, seconds, 8, key)
        cpu = (cpu_ticks(proc.pid) - cpu_before) / _TICK
        out["server_cpu_ms_per_request"] = round(cpu * 1000 / (out["requests_per_s"] * seconds), 3)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def wait_until_up(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def cpu_ticks(pid: int) -> int:
    """User plus system CPU of a process so far, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def summary(base: str, head: str | None, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    keys = ("requests_per_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu_ms_per_request")
    medians = {
        side: {k: round(statistics.median(r[k] for r in side_runs), 3) for k in keys}
        for side, side_runs in runs.items()
    }
    ratios = {
        k: [round(h[k] / b[k], 3) for b, h in zip(runs["base"], runs["head"], strict=True)]
        for k in keys
    }
    return {
        "machine": machine(),
        "base": base,
        "head": head or "working tree",
        "runs": runs,
        "medians": medians,
        "head_over_base": {
            k: {"pairs": v, "median": statistics.median(v)} for k, v in ratios.items()
        },
    }


if __name__ == "__main__":
    main()
