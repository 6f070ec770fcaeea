"""Feed commands: train region models, print a user's feed."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from fyp.cli.app import console

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Train only this region (default: all)."),
        keep: int = typer.Option(
            3, min=1, help="Model versions to keep per region (older ones are deleted)."
        ),
    ) -> None:
        """Train every model of each region from that region's store only; go live atomically."""
        from fyp.models.training import train_and_publish
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.erasure_process import strip_erased

        with Deployment.open(directory) as d:
            regions = [region] if region else d.regions
            started = time.perf_counter()
            for r in regions:
                m = train_and_publish(d.store(r), d.config.region_dir(r), keep=keep)
                strip_erased(d, r)  # a user erased while training ran leaves the new version
                console.print(
                    f"region [bold]{r}[/]: version {m.version}, {m.snapshot.event_count:,} events "
                    f"(seq {m.snapshot.min_seq}..{m.snapshot.max_seq}), "
                    f"{m.metrics['users_learned']:,} users, {m.metrics['videos']:,} videos, "
                    f"{m.metrics['train_seconds']} s"
                )
            console.print(
                f"trained {len(regions)} region(s) in {time.perf_counter() - started:.1f} s"
            )

    @app.command()
    def recommend(
        directory: Path = DirArg,
        user: str = typer.Argument(..., help="User id."),
        n: int = typer.Option(10, help="Number of videos."),
        record: bool = typer.Option(
            False, help="Record the videos as served (the next call then shows new ones)."
        ),
    ) -> None:
        """Print a user's For You feed with the reason for each video."""
        from fyp.feed.service import FeedService
        from fyp.regions.deployment import Deployment

        with Deployment.open(directory) as d:
            page = FeedService(d).feed(user, n=n, record=record)
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
