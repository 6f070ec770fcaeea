"""Feed commands: train region models, print a user's feed."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from fyp.cli.app import console

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def train_region(directory: str, region: str, keep: int) -> dict[str, Any]:
    """Train one region, rank its users' feeds ahead, go live; a summary to print. Runs
    in a worker process when regions train in parallel (regions share nothing)."""
    from threadpoolctl import threadpool_limits

    from fyp.feed.ahead import ranks_ahead
    from fyp.models.training import train_and_publish
    from fyp.regions.deployment import Deployment
    from fyp.sovereignty.erasure_process import strip_erased

    # one thread per region process: threaded BLAS on these small products only spins
    with threadpool_limits(1, "blas"), Deployment.open(directory) as d:
        m = train_and_publish(
            d.store(region), d.config.region_dir(region), keep=keep, augment=ranks_ahead(d, region)
        )
        strip_erased(d, region)  # a user erased while training ran leaves the new version
    return {
        "region": region,
        "version": m.version,
        "events": m.snapshot.event_count,
        "seq": (m.snapshot.min_seq, m.snapshot.max_seq),
        "users": m.metrics["users_learned"],
        "videos": m.metrics["videos"],
        "train_seconds": m.metrics["train_seconds"],
        "ahead_seconds": m.metrics.get("augment_seconds", 0),
    }


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Train only this region (default: all)."),
        keep: int = typer.Option(
            3, min=1, help="Model versions to keep per region (older ones are deleted)."
        ),
        jobs: int = typer.Option(
            0, min=0, help="Regions trained at once, each in its own process (0: one per CPU)."
        ),
        if_changed: bool = typer.Option(
            False,
            "--if-changed",
            help="Skip regions whose events and catalogue are unchanged since the live model.",
        ),
    ) -> None:
        """Train every model of each region from that region's store only, rank every
        user's feed ahead with them ([feed] rank_ahead), and go live atomically. First,
        forget the served pages older than the seen window (a serving process also does,
        once a minute): a deployment that is trained but not served keeps no more."""
        from fyp.regions.deployment import Deployment

        with Deployment.open(directory) as d:  # checks the config and the region name
            regions = [region] if region else d.regions
            if if_changed:
                regions = _changed(d, regions)
            before = time.time_ns() // 1_000_000 - d.config.feed.seen_window_ms
            for name in regions:
                forgotten = d.store(name).forget_served_before(before)
                if forgotten:
                    console.print(
                        f"{name}: forgot {forgotten:,} served pages older than the window"
                    )
        if not regions:
            return
        started = time.perf_counter()
        workers = min(len(regions), jobs or os.cpu_count() or 1)
        if workers <= 1:
            summaries = (train_region(str(directory), r, keep) for r in regions)
            _print_trained(summaries)
        else:
            spawn = multiprocessing.get_context("spawn")  # no SQLite handle crosses a fork
            with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
                futures = [pool.submit(train_region, str(directory), r, keep) for r in regions]
                _print_trained(f.result() for f in futures)
        console.print(f"trained {len(regions)} region(s) in {time.perf_counter() - started:.1f} s")

    @app.command()
    def recommend(
        directory: Path = DirArg,
        user: str = typer.Argument(..., help="User id."),
        n: int = typer.Option(10, help="Number of videos."),
        record: bool = typer.Option(
            False, help="Record the videos as served (the next call then shows new ones)."
        ),
        reason: str = typer.Option(
            "fyp recommend on the command line",
            help="Why you read this user's feed: it goes in their region's audit log.",
        ),
    ) -> None:
        """Print a user's For You feed with the reason for each video (an operator read,
        recorded in the user's region's audit log like one over the API)."""
        from fyp.audit.log import AuditLog
        from fyp.feed.service import FeedService
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.ledger import user_pseudonym

        with Deployment.open(directory) as d:
            page = FeedService(d).feed(user, n=n, record=record)
            AuditLog(d.store(page.region)).append(
                "cli:fyp recommend",
                "user_data.read",
                user_pseudonym(d.config, page.region, user),
                {"route": "fyp recommend", "reason": reason.strip() or "(none given)"},
            )
            table = Table(
                "#", "video", "score", "source", "reason", title=f"feed of {user} ({page.region})"
            )
            for item in page.items:
                table.add_row(
                    str(item.position + 1),
                    item.video_id,
                    f"{item.score:.3f}",
                    item.source,
                    item.reason,
                )
            console.print(table)


def _changed(d: Deployment, regions: list[str]) -> list[str]:
    """The regions whose live model is behind their store, each said why."""
    from fyp.models.schedule import retrain_reason

    out = []
    for name in regions:
        reason = retrain_reason(d.store(name), d.config.region_dir(name))
        console.print(f"{name}: {reason or 'unchanged since the live model; not trained'}")
        if reason is not None:
            out.append(name)
    return out


def _print_trained(summaries: Iterable[dict[str, Any]]) -> None:
    for m in summaries:
        low, high = m["seq"]
        console.print(
            f"region [bold]{m['region']}[/]: version {m['version']}, {m['events']:,} events "
            f"(seq {low}..{high}), {m['users']:,} users, {m['videos']:,} videos, "
            f"{m['train_seconds']} s, feeds ranked ahead in {m['ahead_seconds']} s"
        )
