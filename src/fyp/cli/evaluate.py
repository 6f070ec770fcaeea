"""Evaluation commands: ``fyp eval kuairec-ear``, ``fyp eval kuairec`` and ``fyp eval
deployment``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fyp.cli.app import console, exit_code, fail, print_error
from fyp.errors import FypError
from fyp.evaluation.report import INTERACTIVE_ORDER, OFFLINE_ORDER

EAR_HELP = "\n\n".join(
    [
        "Evaluate fyp and its peers on KuaiRec-EAR (offline and interactive).",
        "Builds a fresh deployment in OUT/deployment, imports --data (the folder holding "
        "kuairec-ear/ and kuairec/, e.g. ../shared/data) and trains the engine.",
        "Offline: every test user gets all test videos ranked by fyp (its real feed path) "
        "and by the peers random, popular, als, bpr and ease: NDCG@10, Recall@10/50, "
        "coverage, diversity, novelty.",
        "Interactive: every test user scrolls one video at a time (reward 1 for a test "
        "positive) and leaves when a video shares a tag with one of the previous 4, or "
        "after 30.",
        "Writes OUT/results.json, OUT/report.html, OUT/interactive.json and "
        "OUT/sessions.jsonl. The full run takes a few minutes.",
    ]
)

OFFICIAL_HELP = "\n\n".join(
    [
        "Evaluate on KuaiRec 2.0 in its official layout (big_matrix.csv, small_matrix.csv).",
        "Trains on the big matrix minus the pairs also in the small matrix and tests on the "
        "fully observed small matrix (positive = watch_ratio >= 2).",
        "Offline metrics as for kuairec-ear plus ndcg@10_graded (gain min(watch_ratio, 5) "
        "over all of a user's small-matrix pairs), then the same interactive simulation. "
        "Outputs as for kuairec-ear.",
    ]
)


DEPLOYMENT_HELP = "\n\n".join(
    [
        "Evaluate fyp and its peers on a deployment's own events, split in time "
        "(offline; every region, or --region).",
        "For each region, copies its store into a locked directory in the region's own "
        "folder (its data stays where its policy keeps it), deletes every event from the cut "
        "on in the copy and rebuilds its follows, blocks and moderation verdicts as they stood "
        "at the cut (a video whose verdict then is unknown is not served), trains "
        "the engine there with this deployment's settings and ranks for each user with a "
        "positive after the cut: fyp through its real feed path, as of the cut, and the "
        "--peers (random, popular, als, bpr, ease) fitted on the same events. Relevant: the user's "
        "positives after the cut on videos they had not seen. Newcomers (no event before "
        "the cut) are measured apart: the feed sees their first events after it. Users "
        "who withheld model_training consent are left out. The copy is removed at the end.",
        "Writes OUT/results.json and OUT/report.html (figures only, no user id; every "
        "region's side by side without --region) and records each region's run in its own "
        "audit log (a failed one too). A region that fails is reported, the others still "
        "run, and the command "
        "exits non-zero. The live store, models and served log are only read.",
    ]
)


def results_tables(results: dict[str, Any], label: str | None = None) -> list[Table]:
    """The offline and interactive tables of a ``results.json`` (``label``: what the
    titles name, by default its protocol)."""
    label = label or str(results["protocol"])
    tables = []
    for key, title in (("offline", "offline"), ("offline_newcomers", "offline, newcomers")):
        offline: dict[str, dict[str, Any]] = results.get(key, {})
        cols = [c for c in OFFLINE_ORDER if any(c in v for v in offline.values())]
        if offline:
            t = Table("method", *cols, title=f"{title} ({label})")
            for method, values in offline.items():
                style = "bold" if method == "fyp" else None
                t.add_row(method, *(f"{values.get(c, 0.0):.4f}" for c in cols), style=style)
            tables.append(t)
    interactive: dict[str, dict[str, Any]] = results.get("interactive", {})
    if interactive:
        t = Table("method", *INTERACTIVE_ORDER, title=f"interactive ({label})")
        for method, values in interactive.items():
            style = "bold" if method == "fyp" else None
            t.add_row(method, *(f"{values[c]:.4f}" for c in INTERACTIVE_ORDER), style=style)
        tables.append(t)
    ablations: dict[str, dict[str, Any]] = results.get("interactive_ablations", {})
    if ablations:
        t = Table("ablation", *INTERACTIVE_ORDER, title="interactive, a peer under fyp's rule")
        for method, values in ablations.items():
            t.add_row(method, *(f"{values[c]:.4f}" for c in INTERACTIVE_ORDER))
        tables.append(t)
    versus = _versus(results.get("uncertainty", {}))
    if versus:
        t = Table("fyp against", *versus[0][1], title="fyp - peer per user: mean [95 % interval] p")
        for peer, cells in versus:
            t.add_row(peer, *cells.values())
        tables.append(t)
    return tables


# fyp.evaluation.baselines.PEERS, named here so the CLI starts without scipy (a test
# keeps the two equal)
ALL_PEERS = "random,popular,als,bpr,ease"

HEADLINE = (("offline", "ndcg@10"), ("offline_newcomers", "ndcg@10"), ("interactive", "reward"))


def _versus(uncertainty: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """The headline figures' paired differences, one row per peer."""
    from fyp.evaluation.uncertainty import difference_text

    rows: dict[str, dict[str, str]] = {}
    for kind, figure in HEADLINE:
        for peer, figures in uncertainty.get(kind, {}).get("fyp_vs", {}).items():
            f = figures.get(figure)
            if f is not None:
                rows.setdefault(peer, {})[f"{kind} {figure}"] = difference_text(f)
    shown = {c for cells in rows.values() for c in cells}  # offline only: no reward column
    columns = [f"{k} {f}" for k, f in HEADLINE if f"{k} {f}" in shown]
    return [(peer, {c: cells.get(c, "-") for c in columns}) for peer, cells in rows.items()]


def _run(
    protocol: str,
    data: Path,
    out: Path,
    regions: str,
    seed: int,
    users: int | None,
    skip_interactive: bool,
    peers: list[str],
) -> None:
    from fyp.evaluation.run import EvalConfig, run_evaluation

    started = time.perf_counter()
    config = EvalConfig(
        protocol=protocol,
        data=data,
        out=out,
        regions=tuple(r.strip() for r in regions.split(",") if r.strip()),
        seed=seed,
        users=users,
        interactive=not skip_interactive,
        peers=tuple(peers),
    )

    try:
        outcome = run_evaluation(config, log=_log)
    except FypError as exc:
        raise fail(exc) from None
    _print_outcome(outcome, started)


def _print_outcome(outcome: Any, started: float) -> None:
    results = outcome.results
    parts = results.get("regions") or {None: results}  # every region, or one run's
    for region, part in parts.items():
        label = results["protocol"] if region is None else f"{results['protocol']}, {region}"
        for table in results_tables(part, label):
            console.print(table)
    for name, path in outcome.files.items():
        console.print(f"{name}: {path}", markup=False, highlight=False, soft_wrap=True)
    minutes = (time.perf_counter() - started) / 60
    console.print(f"[bold]total wall time: {minutes:.2f} min[/]")
    errors = getattr(outcome, "errors", {})
    for region, error in errors.items():
        print_error(error, f"region {region}: ")
    if errors:
        raise typer.Exit(exit_code(list(errors.values())))


def _log(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


# options shared by every ``fyp eval`` protocol
OUT = typer.Option(..., "--out", help="Output folder (results, report, deployment).")
REGIONS = typer.Option("global", help="Comma-separated regions of the deployment.")
SEED = typer.Option(
    0, help="Seed of the engine's training, peers, simulation and --users sampling."
)
USERS = typer.Option(None, help="Evaluate a seeded sample of this many test users (quick runs).")
SKIP_INTERACTIVE = typer.Option(False, "--skip-interactive", help="Offline metrics only.")
PEER = typer.Option(
    [],
    "--peer",
    help="Also rank with your own recommender, MODULE:NAME (a fyp.evaluation.Recommender "
    "subclass, or a function of the seed returning one; MODULE is found from the current "
    "directory first), checked against the contract first (repeatable).",
)


def register(app: typer.Typer) -> None:
    evaluate = typer.Typer(
        name="eval",
        help="Evaluate fyp and peer recommenders on real data (offline and interactive).",
        no_args_is_help=True,
    )
    app.add_typer(evaluate, name="eval")

    @evaluate.command("kuairec-ear", help=EAR_HELP)
    def eval_ear(
        data: Path = typer.Option(..., "--data", help="Folder with kuairec-ear/ and kuairec/."),
        out: Path = OUT,
        regions: str = REGIONS,
        seed: int = SEED,
        users: int | None = USERS,
        skip_interactive: bool = SKIP_INTERACTIVE,
        peer: list[str] = PEER,
    ) -> None:
        _run("kuairec-ear", data, out, regions, seed, users, skip_interactive, peer)

    @evaluate.command("kuairec", help=OFFICIAL_HELP)
    def eval_official(
        data: Path = typer.Option(..., "--data", help="Folder with big/small_matrix.csv."),
        out: Path = OUT,
        regions: str = REGIONS,
        seed: int = SEED,
        users: int | None = USERS,
        skip_interactive: bool = SKIP_INTERACTIVE,
        peer: list[str] = PEER,
    ) -> None:
        _run("kuairec", data, out, regions, seed, users, skip_interactive, peer)

    @evaluate.command("deployment", help=DEPLOYMENT_HELP)
    def eval_deployment(
        directory: Path = typer.Argument(..., help="The deployment directory."),
        out: Path = typer.Option(..., "--out", help="Output folder (results and report)."),
        region: str | None = typer.Option(
            None, help="Evaluate this region only (default: every region, each in its own copy)."
        ),
        holdout: float = typer.Option(
            0.1, help="Share of the region's events, the latest, held out after the cut."
        ),
        cut: str | None = typer.Option(
            None,
            help="The cut as an ISO 8601 time (e.g. 2026-11-01T00:00:00Z); overrides --holdout.",
        ),
        seed: int = SEED,
        users: int | None = USERS,
        newcomer_events: int = typer.Option(
            3,
            help="Also measure newcomers (no event before the cut): the feed sees their "
            "first N events after it, then ranks for what they liked next (0: none).",
        ),
        also_scorer: list[str] = typer.Option(
            [],
            "--also-scorer",
            help="Also rank with this [ranking] scorer (value_model, multi_objective), as "
            "method fyp:NAME, to compare it with the configured one on the same users.",
        ),
        peers: str = typer.Option(
            ALL_PEERS,
            help="Comma-separated peers to rank against (random, popular, als, bpr, ease); "
            "e.g. popular,als to skip EASE, the slow one on a large catalogue.",
        ),
        peer: list[str] = PEER,
        reason: str = typer.Option(
            "", help="Why you evaluate on users' data: it goes in the region's audit log."
        ),
        moderation_now: bool = typer.Option(
            False,
            "--moderation-now",
            help="Judge which videos could be served by today's verdicts, not by those at "
            "the cut (a history imported from before the region moderated had none then).",
        ),
    ) -> None:
        from fyp.evaluation.temporal import TemporalConfig, parse_cut, parse_peers, run_temporal

        started = time.perf_counter()
        try:
            config = TemporalConfig(
                directory=directory,
                out=out,
                region=region,
                holdout=holdout,
                cut_ms=None if cut is None else parse_cut(cut),
                seed=seed,
                users=users,
                methods=("fyp", *parse_peers(peers)),
                scorers=tuple(also_scorer),
                newcomer_events=newcomer_events,
                reason=reason,
                peers=tuple(peer),
                moderation_now=moderation_now,
            )
            outcome = run_temporal(config, log=_log)
        except FypError as exc:
            raise fail(exc) from None
        _print_outcome(outcome, started)
