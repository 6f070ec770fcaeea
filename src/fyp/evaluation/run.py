"""One evaluation run, end to end: fresh deployment, import, train, offline, interactive.

The order is the point. The offline protocol reads the training events and ranks with
``record=False``, so it must run before the simulator, which writes simulated events
and served rows into the same deployment. The deployment is the evaluation's own,
built fresh under ``OUT/deployment`` and marked as such (``.fyp-eval``): a later run
replaces it, and a directory without the marker (someone's real deployment) is never
touched.

Outputs in ``OUT``:

- ``results.json``: ``{"protocol", "offline": {method: metrics}, "interactive":
  {method: {"reward", "length", "reward_per_step", "top_category_share"}},
  "uncertainty", "seconds", "machine", "config"}``; ``uncertainty`` holds a 95 %
  interval for every figure that is a mean over users (``{"offline"|"interactive":
  {"intervals": {method: {figure: {"mean", "ci95"}}}, "fyp_vs": {peer: {figure:
  {"diff", "ci95", "p"}}}}}``, :mod:`fyp.evaluation.uncertainty`);
- ``interactive.json``: per method, the curves behind the report (reward by session
  position, sessions reaching each position, length histogram, repeats, end reasons);
- ``sessions.jsonl``: every simulated session (videos, rewards, categories, why it
  ended), one JSON object a line;
- ``report.html``: the self-contained report (:mod:`fyp.evaluation.report`).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fyp.config import REGION_NAME
from fyp.errors import AlreadyExists, FypError, InvalidRequest
from fyp.evaluation.baselines import PEERS, SharedFits
from fyp.evaluation.contract import Make
from fyp.evaluation.offline import Protocol, prepare, run_offline, train_engine
from fyp.evaluation.peers import BUILT_IN, PeerSet, load_peers
from fyp.evaluation.simulator import (
    ABLATIONS,
    SimParams,
    SimResult,
    run_interactive,
    serving_threads,
)
from fyp.evaluation.uncertainty import METHOD, RATIO, figures
from fyp.regions.deployment import Deployment

PROTOCOLS = ("kuairec-ear", "kuairec")
METHODS: tuple[str, ...] = ("fyp", *PEERS)
MARKER = ".fyp-eval"
OUTPUTS = ("results.json", "interactive.json", "sessions.jsonl", "report.html")
Log = Callable[[str], None]


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and where to write it."""

    protocol: str
    data: Path
    out: Path
    regions: tuple[str, ...] = ("global",)
    seed: int = 0
    users: int | None = None  # a seeded subset of the test users, for quick runs
    interactive: bool = True
    methods: tuple[str, ...] = METHODS
    peers: tuple[str, ...] = ()  # MODULE:NAME of recommenders brought (fyp.evaluation.peers)

    def check(self) -> PeerSet:
        """Refuse bad input before anything is written; the peers to run, loaded and
        checked (``peers`` run besides ``methods``)."""
        if self.protocol not in PROTOCOLS:
            raise InvalidRequest(f"unknown protocol {self.protocol!r}; known: {PROTOCOLS}")
        if not self.regions:
            raise InvalidRequest("at least one region is needed", field="regions")
        bad = [r for r in self.regions if not REGION_NAME.fullmatch(r)]
        if bad or len(set(self.regions)) != len(self.regions):
            raise InvalidRequest(
                f"invalid regions {list(self.regions)}: distinct names of 1-32 lowercase "
                "letters, digits or '_', starting with a letter",
                field="regions",
            )
        if self.users is not None and self.users < 1:
            raise InvalidRequest(f"--users must be >= 1, got {self.users}", field="users")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InvalidRequest(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
        peers = load_peers(self.peers, reserved=tuple(ABLATIONS))
        if not Path(self.data).is_dir():
            raise InvalidRequest(f"data folder {self.data} does not exist", path=str(self.data))
        if self.protocol == "kuairec-ear":
            from fyp.datasets.kuairec_ear import resolve as resolve_ear

            resolve_ear(self.data)
        else:
            from fyp.datasets.official import SMALL
            from fyp.datasets.official import resolve as resolve_official

            _, small, _ = resolve_official(self.data)
            if small is None:
                raise InvalidRequest(
                    f"{SMALL} is not in {self.data}: it is the official protocol's test set",
                    path=str(self.data),
                )
        return peers


@dataclass
class EvalOutcome:
    results: dict[str, Any]
    details: dict[str, dict[str, Any]]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    # regions that could not be evaluated, and why (``fyp eval deployment``, every region)
    errors: dict[str, FypError] = field(default_factory=dict)


class Stages:
    """Times each stage and says which one is running."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.begun: list[str] = []  # the stages started, in order
        self.current: str | None = None  # the stage running (or the one that failed)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.log(f"[{name}] started ({self.elapsed():.1f} s so far)")
        self.begun.append(name)
        self.current = name
        t = time.perf_counter()
        yield
        self.current = None
        self.seconds[name] = round(time.perf_counter() - t, 2)
        self.log(f"[{name}] done in {self.seconds[name]:.1f} s")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def machine_info() -> dict[str, Any]:
    """Enough to compare timings across machines (mirrors benchmarks/machine.py)."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load_average": load,
    }


def prepare_out(out: Path) -> Path:
    """Make the output folder and remove the last run's figures from it (a failed run
    must not leave them behind), before the long run: a path that is a file, under a
    file or not writable is the caller's to fix (InvalidRequest), not a traceback."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        what = "is a file, not a folder" if out.is_file() else "cannot be made or written"
        what += f" ({exc.strerror or exc})"
        raise InvalidRequest(f"--out {out} {what}", path=str(out)) from exc
    return out


def fresh_deployment(directory: Path, regions: list[str]) -> Deployment:
    """A new deployment at ``directory``; only a previous evaluation's is replaced."""
    directory = Path(directory)
    if directory.exists():
        if not (directory / MARKER).is_file():
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
            else:
                raise AlreadyExists(
                    f"{directory} exists and is not an evaluation deployment (no {MARKER}): "
                    "refusing to overwrite it; pick another --out",
                    path=str(directory),
                )
        else:
            shutil.rmtree(directory)
    d = Deployment.init(directory, regions, name="fyp-eval")
    (directory / MARKER).write_text(
        "Built by fyp eval; replaced by the next run. Holds simulated events.\n",
        encoding="utf-8",
    )
    return d


def select_users(protocol: Protocol, n: int | None, seed: int) -> int:
    """Keep a seeded sample of ``n`` test users (all when None); returns how many remain."""
    everyone = sorted((u for r in protocol.regions for u in r.test), key=lambda u: (len(u), u))
    if n is not None and n < len(everyone):
        keep = set(random.Random(seed).sample(everyone, n))
        for region in protocol.regions:
            region.test = {u: v for u, v in region.test.items() if u in keep}
        return n
    return len(everyone)


def write_json(path: Path, value: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _write_sessions(path: Path, sims: Mapping[str, SimResult]) -> Path:
    tmp = path.with_suffix(path.suffix + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for method, result in sims.items():
            for s in result.sessions:
                row = {
                    "method": method,
                    "user_id": s.user_id,
                    "videos": s.videos,
                    "rewards": s.rewards,
                    "categories": s.categories,
                    "end": s.end,
                    "repeats": s.repeats,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def session_values(sims: Mapping[str, SimResult]) -> dict[str, dict[str, list[float]]]:
    """Each method's sessions' reward and length, in one user order for all (paired)."""
    out: dict[str, dict[str, list[float]]] = {}
    for method, result in sims.items():
        sessions = sorted(result.sessions, key=lambda s: s.user_id)
        out[method] = {
            "reward": [float(s.reward) for s in sessions],
            "length": [float(s.length) for s in sessions],
        }
    return out


def offline_ear(
    protocol: Protocol,
    seed: int,
    methods: list[str],
    log: Log,
    factories: Mapping[str, Make] = BUILT_IN.factories,
) -> dict[str, Any]:
    """``run_offline`` for the engine with one BLAS thread (as ``fyp serve`` runs it), then
    for the peers with all of them (EASE's Cholesky uses both cores)."""
    out: dict[str, Any] = {"metrics": {}, "per_user": {}, "seconds": {}}
    engine = [m for m in methods if m == "fyp"]
    others = [m for m in methods if m != "fyp"]
    for subset in (engine, others):
        if not subset:
            continue
        with serving_threads(subset == engine):
            part = run_offline(
                protocol,
                seed,
                subset,
                log=lambda m: log(f"  offline {m}"),
                peers=factories,
            )
        for key in out:
            out[key].update(part[key])
    return out


def run_evaluation(config: EvalConfig, log: Log = print) -> EvalOutcome:
    """Run the whole evaluation (see the module docstring) and write its outputs."""
    peers = config.check()
    peers.announce(log)
    stages = Stages(log)
    out = prepare_out(Path(config.out))
    params = SimParams(seed=config.seed)
    methods = [*config.methods, *(p.name for p in peers.extra)]
    # fitted once for both parts: offline's seconds include a peer's fit, interactive's not
    factories = SharedFits(peers.factories).factories()
    with stages.stage("deployment"):
        deployment = fresh_deployment(out / "deployment", list(config.regions))
    with deployment as d:
        with stages.stage("import"):
            if config.protocol == "kuairec-ear":
                from fyp.datasets.kuairec_ear import import_kuairec_ear

                report = import_kuairec_ear(d, config.data)
            else:
                from fyp.datasets.official import import_kuairec

                report = import_kuairec(d, config.data, split_protocol=True)
            log(f"  {report.rows:,} rows in {report.seconds:.1f} s")
        with stages.stage("moderate"):
            from fyp.moderation import Moderator

            moderator = Moderator(d)  # a fresh import is pending: nothing unchecked is served
            for region in d.regions:
                summary = moderator.run(region).to_dict()
                log(f"  moderated {region}: {summary.get('verdicts', summary)}")
        with stages.stage("train"):
            per_region = train_engine(d, config.seed)
            log(f"  engine trained per region: {per_region} s")
        gains: dict[str, dict[str, float]] = {}
        with stages.stage("prepare"):
            if config.protocol == "kuairec-ear":
                protocol = prepare(d, log=lambda m: log(f"  {m}"))
            else:
                from fyp.evaluation.official_protocol import prepare_official

                protocol, gains = prepare_official(d, log=lambda m: log(f"  {m}"))
            n_users = select_users(protocol, config.users, config.seed)
            log(f"  {n_users:,} test users, {len(protocol.universe):,} test videos")
        if n_users == 0:
            raise InvalidRequest(f"no test users in {config.data}", path=str(config.data))
        # Offline first: it must never see the simulator's events.
        with stages.stage("offline"):
            if config.protocol == "kuairec-ear":
                offline = offline_ear(protocol, config.seed, methods, log, factories)
            else:
                from fyp.evaluation.official_protocol import run_official_offline

                offline = run_official_offline(
                    protocol,
                    gains,
                    config.seed,
                    methods,
                    log=lambda m: log(f"  offline {m}"),
                    peers=factories,
                )
        sims: dict[str, SimResult] = {}
        if config.interactive:
            with stages.stage("interactive"):
                ablations = [a for a, peer in ABLATIONS.items() if peer in methods]
                sims = run_interactive(
                    protocol,
                    params,
                    methods,
                    log=lambda m: log(f"  {m}"),
                    ablations=ablations,
                    peers=factories,
                )
        repeats = {m: sum(s.repeats for s in r.sessions) for m, r in sims.items()}
        if any(repeats.values()):
            log(f"  WARNING: videos shown twice in a session (no-repeat violations): {repeats}")

        with stages.stage("uncertainty"):
            uncertainty = {
                "method": METHOD,
                "offline": figures(
                    {m: offline["per_user"][m] for m in methods if m in offline["per_user"]},
                    config.seed,
                ),
                "interactive": figures(
                    session_values(sims), config.seed, ratios={RATIO: ("reward", "length")}
                ),
            }

    details = {m: r.details() for m, r in sims.items()}
    results: dict[str, Any] = {
        "protocol": config.protocol,
        "offline": {m: offline["metrics"][m] for m in methods if m in offline["metrics"]},
        "interactive": {m: sims[m].summary() for m in methods if m in sims},
        # a peer shown under the engine's look-alike rule (fyp.evaluation.simulator)
        "interactive_ablations": {a: sims[a].summary() for a in ABLATIONS if a in sims},
        # 95 % intervals, and fyp against each peer on the same users (uncertainty.py)
        "uncertainty": uncertainty,
        "seconds": {},
        "machine": machine_info(),
        "config": {
            "seed": config.seed,
            "regions": list(config.regions),
            "users": config.users,
            "test_users": n_users,
            "test_videos": len(protocol.universe),
            "methods": methods,
            "peers": peers.specs(),  # the recommenders brought: name -> MODULE:NAME
            "interactive": config.interactive,
            "simulation": params.to_dict(),
            "data": str(config.data),
            "deployment": str(out / "deployment"),
        },
    }
    files: dict[str, Path] = {}
    with stages.stage("write"):
        results["seconds"] = {
            **stages.seconds,
            "offline_methods": offline["seconds"],
            "interactive_methods": {m: round(r.seconds, 2) for m, r in sims.items()},
        }
        results["seconds"]["total"] = round(stages.elapsed(), 2)
        files["results"] = write_json(out / "results.json", results)
        files["interactive"] = write_json(
            out / "interactive.json", {"protocol": config.protocol, "methods": details}
        )
        files["sessions"] = _write_sessions(out / "sessions.jsonl", sims)
        from fyp.evaluation.report import write_report

        files["report"] = write_report(results, details, out / "report.html")
    results["seconds"]["write"] = stages.seconds["write"]
    results["seconds"]["total"] = round(stages.elapsed(), 2)
    write_json(out / "results.json", results)  # with the final timings
    return EvalOutcome(results, details, out, files)
