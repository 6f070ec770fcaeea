"""``fyp eval deployment``: the engine measured on a deployment's own events, split in time.

KuaiRec tells a team how fyp ranks someone else's users. Before they trust it with theirs
(or switch a setting), they want the same figures on their own data. This protocol
replays a region's history up to a cut and asks every method what each user would have
liked next:

1. **Scratch copy, inside the region.** The region's store is snapshotted (SQLite or
   PostgreSQL, one consistent read, writers go on) into a staging directory in the
   region's own directory (``regions/<r>/.eval-<id>/``, locked while in use and removed
   at the end, or by the next backup, restore or ``fyp erasure process`` if the run was
   killed: :mod:`fyp.sovereignty.staging`). The region's data never leaves where its
   policy keeps it; the live store, models and served log are only read.
2. **The cut** (:mod:`fyp.evaluation.temporal_cut`, which does steps 2-4 and 6's split).
   ``--cut`` or, by default, the time before which ``1 - holdout`` of the
   region's events happened. In the copy every event at or after the cut is deleted,
   with every served page (the copy starts with no impressions); its follows and
   blocks are rebuilt as they stood at the cut (:mod:`fyp.evaluation.as_of`: a follow
   ended since is back, one made since is gone, and so are blocks made since); its
   moderation is as it stood at the cut, from the region's audit log (a video approved
   since is pending, one taken down since is approved; a video whose state at the cut
   the log does not hold is pending: moderation fails closed); experiments do not run.
   ``--moderation-now`` keeps today's verdicts instead (a history imported from before
   the region moderated had none at the cut).
3. **Held out.** A user's positives after the cut (what training counts as "more like
   this": long plays, likes not taken back, shares, follows...) on videos that existed at
   the cut (published before it, or played before it) and that the For You feed could
   serve at the cut, less the videos the user had any event with before the cut (the
   feed never shows those again, and the peers are not asked to either). Test users:
   those with at least one event before the cut and one held-out positive.
4. **Consent.** Users who withheld ``model_training`` are not in the copy at all (no
   model and no figure is made of them); users with ``personalised_feed`` off are no
   test users (their feed is not personal), though models learn from them as in
   production.
5. The engine trains in the copy with the deployment's own ``fyp.toml`` settings and
   ranks through ``FeedService.feed`` (``record=False``), as ``GET
   /v1/users/{id}/feed`` does, *as of the cut*: its seen window and "not interested"
   marks are measured from the cut, not from today (``FeedService(as_of_ms=...)``); a
   mark made before the cut holds as it did then, one made after it is not in the
   copy. The peers (random, popular, ALS, BPR, EASE, or those ``--peers`` names) fit
   on the same pre-cut events. Metrics as for KuaiRec-EAR
   (:mod:`fyp.evaluation.offline`), with 95 % intervals.

6. **Newcomers** (``newcomer_events`` K): a user with no event before the cut and more
   than K after it is measured apart (``offline_newcomers``). Their first K events
   after the cut go back into the copy once the engine has trained: its state reads
   them as it reads a new user's first events live, no model learned them. The peers
   fit with them (a static model has no other way to know the user).

Unlike KuaiRec's fully observed test set, a video a user did not play after the cut is
an *unknown*, not a known negative (they may never have been shown it): the figures
rank methods against each other; their absolute values are lower bounds. Outputs hold
aggregate figures only (``results.json``, ``report.html``), no user id; the run is
recorded in the region's audit log (``evaluation.run``; a run that fails once its copy
exists, ``evaluation.failed``: the stage and the error's code). Without ``--region`` every
region is evaluated so, each in its own copy (:mod:`fyp.evaluation.temporal_regions`).
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fyp.audit.log import AuditLog
from fyp.config import SCORERS, DeploymentConfig, RegionConfig, load_config
from fyp.errors import InvalidRequest, ValidationFailed
from fyp.evaluation.baselines import PEERS
from fyp.evaluation.offline import (
    Protocol,
    Scored,
    build_protocol,
    rank_engine,
    rank_peer,
    train_engine,
)
from fyp.evaluation.peers import BUILT_IN, PeerSet, load_peers
from fyp.evaluation.run import (
    METHODS,
    EvalOutcome,
    Log,
    Stages,
    machine_info,
    prepare_out,
    select_users,
    write_json,
)
from fyp.evaluation.simulator import serving_threads
from fyp.evaluation.temporal_cut import Split, choose_cut, iso, nothing_servable, split_copy
from fyp.evaluation.uncertainty import METHOD, figures
from fyp.feed.pipeline import configured_pipeline
from fyp.feed.service import FeedService, scorer_for
from fyp.models.executors import as_fyp_error
from fyp.moderation.service import ADULT
from fyp.regions.deployment import Deployment
from fyp.sovereignty.region_data import snapshot_region
from fyp.sovereignty.staging import EVAL_PREFIX, Staging, refuse_while_restoring, remove_stale
from fyp.storage import Store

PROTOCOL = "deployment"
ACTOR = "cli:fyp eval deployment"


@dataclass(frozen=True)
class TemporalConfig:
    """What to evaluate (one region of a deployment) and where to write the figures."""

    directory: Path
    out: Path
    region: str | None = None  # None: every region, each in its own copy
    holdout: float = 0.1  # share of the region's events after the cut
    cut_ms: int | None = None  # overrides holdout
    seed: int = 0
    users: int | None = None
    methods: tuple[str, ...] = METHODS
    # also rank with these scorers (method ``fyp:<scorer>``), to compare them with the
    # configured one on the same users
    scorers: tuple[str, ...] = ()
    newcomer_events: int = 3  # a newcomer's first events the feed sees (0: no newcomers)
    reason: str = ""
    peers: tuple[str, ...] = ()  # MODULE:NAME of recommenders brought (fyp.evaluation.peers)
    moderation_now: bool = False  # judge by today's verdicts, not those at the cut

    def check(self) -> PeerSet:
        """Refuse bad input before anything is copied; the brought peers, loaded and
        checked against the contract (they rank besides ``methods``)."""
        if not 0.0 < self.holdout < 1.0:
            raise InvalidRequest(
                f"--holdout must be between 0 and 1 (exclusive), got {self.holdout}",
                field="holdout",
            )
        if not 0 <= self.newcomer_events <= 100:
            raise InvalidRequest(
                f"--newcomer-events must be between 0 and 100, got {self.newcomer_events}",
                field="newcomer_events",
            )
        if self.users is not None and self.users < 1:
            raise InvalidRequest(f"--users must be >= 1, got {self.users}", field="users")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InvalidRequest(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
        bad = [s for s in self.scorers if s not in SCORERS]
        if bad:
            raise InvalidRequest(
                f"unknown scorers {bad}; known: {', '.join(SCORERS)}", field="also_scorer"
            )
        out, root = Path(self.out).resolve(), Path(self.directory).resolve()
        if out.is_relative_to(root):
            raise InvalidRequest(
                f"--out {self.out} is inside the deployment: write the figures elsewhere",
                path=str(self.out),
            )
        return load_peers(self.peers, reserved=[f"fyp:{s}" for s in SCORERS])


def scratch_config(config: DeploymentConfig, region: str, root: Path) -> DeploymentConfig:
    """The copy's configuration: the region's policy and the deployment's feed, ranking
    and training settings (the point is to measure *them*), a SQLite store in ``root``,
    no backups, no served log elsewhere, no experiment."""
    cell = config.region(region)
    copy = RegionConfig(
        name=cell.name, store=f"sqlite:///regions/{cell.name}/store.sqlite", policy=cell.policy
    )
    return dataclasses.replace(
        config, root=root, name=f"{config.name}-eval", regions={cell.name: copy}, experiments=()
    )


def servable(deployment: Deployment, region: str, videos: set[str]) -> set[str]:
    """The videos the region's For You feed may serve an adult by the copy's moderation
    (as it stood at the cut, unless ``--moderation-now``; the rule of
    :class:`fyp.moderation.ModerationEligibility`): no method is asked to rank others."""
    from fyp.moderation import ModerationEligibility

    viewer = SimpleNamespace(region=region, age=ADULT)
    barred = ModerationEligibility(deployment)(sorted(videos), viewer)
    return {v for v in videos if v not in barred}


def run_temporal(config: TemporalConfig, log: Log = print) -> EvalOutcome:
    """Run the protocol (module docstring) on ``config.region``, or on every region of
    the deployment, each in its own copy (:mod:`fyp.evaluation.temporal_regions`);
    write ``results.json`` and ``report.html`` in ``config.out``."""
    peers = config.check()
    peers.announce(log)
    source = load_config(Path(config.directory))
    region = None if config.region is None else source.region(config.region).name
    out = prepare_out(Path(config.out))
    if region is None:
        from fyp.evaluation.temporal_regions import every_region

        return every_region(config, source, log, peers)
    results = evaluate_region(config, source, region, log, peers)
    files = {"results": write_json(out / "results.json", results)}
    from fyp.evaluation.report import write_report

    files["report"] = write_report(results, {}, out / "report.html")
    return EvalOutcome(results, {}, out, files)


def evaluate_region(
    config: TemporalConfig,
    source: DeploymentConfig,
    region: str,
    log: Log = print,
    peers: PeerSet = BUILT_IN,
) -> dict[str, Any]:
    """One region's figures (``results.json``'s shape for one region), from a copy of
    its store in its own directory, removed at the end; the run is audited there.
    ``peers``: the built-in peers and those brought (``TemporalConfig.check``). A run
    that fails once its copy exists is audited too (``evaluation.failed``), and its copy
    removed all the same."""
    stages = Stages(log)
    region_dir = source.region_dir(region)
    refuse_while_restoring(region_dir, region, "evaluated")
    remove_stale(region_dir)
    scratch = region_dir / f"{EVAL_PREFIX}{secrets.token_hex(6)}"
    try:
        with Staging(scratch):
            return _evaluate_copy(config, source, region, scratch, stages, log, peers)
    except BaseException as exc:
        if "copy" in stages.begun:  # the region's data was read: the failure is audited too
            audit_failure(source, region, stages, exc, config, log)
        raise


def _evaluate_copy(
    config: TemporalConfig,
    source: DeploymentConfig,
    region: str,
    scratch: Path,
    stages: Stages,
    log: Log,
    peers: PeerSet,
) -> dict[str, Any]:
    """:func:`evaluate_region`'s work, in the locked copy ``scratch``."""
    methods = [*config.methods, *(p.name for p in peers.extra)]
    copy = scratch_config(source, region, scratch)
    store_file = copy.region_dir(region) / "store.sqlite"
    with stages.stage("copy"):
        snapshot_region(source, region, store_file)
        log(f"  {region}: store copied into {scratch}")
    with stages.stage("cut"), closing(sqlite3.connect(store_file)) as db:
        cut_ms = config.cut_ms if config.cut_ms is not None else choose_cut(db, config.holdout)
        split = split_copy(
            db, source, region, cut_ms, config.newcomer_events, config.moderation_now
        )
    log(
        f"  cut at {iso(cut_ms)}: {split.events_before:,} events before, "
        f"{split.events_after:,} after"
    )
    if split.events_before == 0 or split.events_after == 0:
        raise ValidationFailed(
            f"the cut {iso(cut_ms)} leaves {split.events_before} events before it and "
            f"{split.events_after} after: both sides need some",
            field="cut",
        )
    with Deployment(copy) as d:
        universe = servable(d, region, split.universe)
        if not universe:
            raise ValidationFailed(nothing_servable(split), field="cut")
        split.held_out = _within(split.held_out, universe)
        split.newcomers = _within(split.newcomers, universe)
        with stages.stage("train"):
            log(f"  engine trained: {train_engine(d, config.seed)} s")
        with stages.stage("prepare"):
            # a newcomer's first events reach the store as they would live: after
            # the models were trained, so only the feed's state reads them
            d.store(region).insert_events(split.newcomer_events)
            truth = {**split.held_out, **split.newcomers}

            def read_test(name: str, store: Store) -> tuple[dict[str, set[str]], set[str]]:
                return dict(truth), universe

            protocol = build_protocol(d, read_test, log=lambda m: log(f"  {m}"))
            kept: dict[str, set[str]] = {}
            for e in split.newcomer_events:
                kept.setdefault(e.user_id, set()).add(e.video_id)
            for part in protocol.regions:
                part.seen = {u: split.seen.get(u) or kept[u] for u in part.test}
            select_users(protocol, config.users, config.seed)
            tested = {u for part in protocol.regions for u in part.test}
            groups = {
                "offline": tested & set(split.held_out),
                "offline_newcomers": tested & set(split.newcomers),
            }
            log(
                f"  {len(groups['offline']):,} test users, "
                f"{len(groups['offline_newcomers']):,} newcomers, "
                f"{len(protocol.universe):,} videos ranked"
            )
        if not groups["offline"]:
            raise ValidationFailed(
                f"no user of {region} has both an event before the cut {iso(cut_ms)} "
                "and a positive after it on a video they had not seen",
                field="cut",
            )
        with stages.stage("offline"):
            ranked, seconds = rank_all(protocol, d, methods, config, cut_ms, log, peers)
        methods += [f"fyp:{name}" for name in dict.fromkeys(config.scorers)]
        scored = {
            group: score(ranked, users, protocol, methods, config.seed, log)
            for group, users in groups.items()
            if users
        }
        audit_run(source, region, split, len(groups["offline"]), config)
    empty: dict[str, Any] = {"metrics": {}, "uncertainty": {}}
    results: dict[str, Any] = {
        "protocol": PROTOCOL,
        "offline": scored["offline"]["metrics"],
        "offline_newcomers": scored.get("offline_newcomers", empty)["metrics"],
        "interactive": {},
        "uncertainty": {
            "method": METHOD,
            "offline": scored["offline"]["uncertainty"],
            "offline_newcomers": scored.get("offline_newcomers", empty)["uncertainty"],
        },
        "seconds": {**stages.seconds, "offline_methods": seconds},
        "machine": machine_info(),
        "config": {
            "deployment": str(Path(config.directory).resolve()),
            "region": region,
            "seed": config.seed,
            "users": config.users,
            "holdout": None if config.cut_ms is not None else config.holdout,
            "cut": iso(cut_ms),
            "newcomer_events": config.newcomer_events,
            **split.to_dict(),
            "test_users": len(groups["offline"]),
            "newcomers": len(groups["offline_newcomers"]),
            "videos_ranked": len(protocol.universe),
            "methods": methods,
            "peers": peers.specs(),  # the recommenders brought: name -> MODULE:NAME
        },
    }
    results["seconds"]["total"] = round(stages.elapsed(), 2)
    return results


def _within(sets: dict[str, set[str]], universe: set[str]) -> dict[str, set[str]]:
    kept = ((u, v & universe) for u, v in sets.items())
    return {u: v for u, v in kept if v}


def rank_all(
    protocol: Protocol,
    deployment: Deployment,
    methods: list[str],
    config: TemporalConfig,
    cut_ms: int,
    log: Log,
    peers: PeerSet = BUILT_IN,
) -> tuple[dict[str, dict[str, list[str]]], dict[str, float]]:
    """Every method's top-50 for every test user (one BLAS thread for the engine, as
    ``fyp serve`` pins it; all of them for the peers), and each method's seconds. The
    feed runs as of the cut: its seen window and "not interested" marks are measured
    from the cut, not from today."""
    ranked: dict[str, dict[str, list[str]]] = {}
    seconds: dict[str, float] = {}
    seed = config.seed
    engines = {"fyp": deployment.config.ranking.scorer} if "fyp" in methods else {}
    engines.update({f"fyp:{name}": name for name in config.scorers})
    for method, scorer in engines.items():
        started = time.perf_counter()
        ranking = dataclasses.replace(deployment.config.ranking, scorer=scorer)
        # the deployment's [feed.sources] and [feed.rerank], and this engine's scorer
        pipeline = configured_pipeline(deployment.config.feed, scorer_for(ranking))
        service = FeedService(deployment, pipeline=pipeline, as_of_ms=cut_ms)
        with serving_threads(True):
            ranked[method] = rank_engine(protocol, service, seed)
        seconds[method] = round(time.perf_counter() - started, 2)
    for name, factory in peers.factories.items():
        if name in methods:
            started = time.perf_counter()
            ranked[name] = rank_peer(protocol, factory, seed)  # fitting included
            seconds[name] = round(time.perf_counter() - started, 2)
    log(f"  offline: ranked by {', '.join(ranked)} in {seconds} s")
    return ranked, seconds


def score(
    ranked: dict[str, dict[str, list[str]]],
    users: set[str],
    protocol: Protocol,
    methods: list[str],
    seed: int,
    log: Log,
) -> dict[str, Any]:
    """The metrics of one group of test users, and their 95 % intervals."""
    out = Scored()
    for method in methods:
        lists = {u: top for u, top in ranked[method].items() if u in users}
        out.add(method, lists, protocol, time.perf_counter(), lambda m: log(f"  {m}"))
    return {"metrics": out.metrics, "uncertainty": figures(out.per_user, seed)}


def audit_run(
    config: DeploymentConfig, region: str, split: Split, n_users: int, run: TemporalConfig
) -> None:
    """Record the run in the region's audit log: it read every user's events."""
    details = {"cut_ms": split.cut_ms, "test_users": n_users}
    _audit(config, region, "evaluation.run", run, details)


def _audit(
    config: DeploymentConfig,
    region: str,
    action: str,
    run: TemporalConfig,
    details: dict[str, Any],
) -> None:
    """One entry in the live region's audit log (the copy's is removed with it)."""
    deployment = Deployment(config)
    try:
        AuditLog(deployment.store(region)).append(
            ACTOR,
            action,
            region,
            {
                "protocol": PROTOCOL,
                **details,
                "out": str(Path(run.out).resolve()),
                "reason": run.reason.strip() or "(none given)",
            },
        )
    finally:
        deployment.close()


def audit_failure(
    config: DeploymentConfig,
    region: str,
    stages: Stages,
    exc: BaseException,
    run: TemporalConfig,
    log: Log,
) -> None:
    """Record a run that failed once its copy was begun in the region's audit log: it
    read every user's events all the same. What failed (the stage, the error's code and
    class), not the message, which may quote the data; a failure to audit is logged,
    never raised over the run's own error."""
    error = as_fyp_error(exc) if isinstance(exc, Exception) else None
    last = stages.begun[-1] if stages.begun else "copy"
    details = {
        "stage": stages.current or f"after {last}",
        "error": error.code if error is not None else "interrupted",
        "exception": type(exc).__name__,
    }
    try:
        _audit(config, region, "evaluation.failed", run, details)
    except Exception as failed:
        log(f"  {region}: the failure could not be audited: {type(failed).__name__}")


def parse_peers(text: str) -> tuple[str, ...]:
    """``--peers``: comma-separated names of :data:`fyp.evaluation.baselines.PEERS`, in
    the order they run (EASE is the slow one: 89 s at 7,768 videos)."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise InvalidRequest(
            f"--peers {text!r}: {'unknown peers ' + str(unknown) if unknown else 'none named'}; "
            f"known: {', '.join(PEERS)}",
            field="peers",
        )
    return names


def parse_cut(text: str) -> int:
    """An ISO 8601 time (a naive one is UTC) as milliseconds since the epoch."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"--cut {text!r} is not an ISO 8601 time, e.g. 2026-11-01T00:00:00Z", field="cut"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
