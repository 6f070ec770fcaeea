"""``fyp retention apply`` and ``fyp retention check``: each region's retention limit."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from fyp.cli.app import console

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")
RegionOpt = typer.Option(None, help="Only this region (default: all).")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable report.")
EXIT_PROBLEM = 1


def register(app: typer.Typer) -> None:
    retention = typer.Typer(
        name="retention",
        help="How long each region keeps its users' behaviour: delete past the limit, prove it.",
        no_args_is_help=True,
    )
    app.add_typer(retention, name="retention")

    @retention.command("apply")
    def apply(
        directory: Path = DirArg, region: str | None = RegionOpt, as_json: bool = JsonOpt
    ) -> None:
        """Delete each region's events, experiment exposures, held-out label sets and served
        pages older than its limit ([regions.R.policy.retention] events_days), oldest
        first, recorded in its audit log. fyp train (and so fyp serve's hourly training)
        does this first; run it from cron when training is off."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.retention import expire_region

        with Deployment.open(directory) as d:
            regions = [d.config.region(region).name] if region else d.regions
            done = [expire_region(d, name) for name in regions]
        if as_json:
            typer.echo(json.dumps({"regions": [e.to_dict() for e in done]}, indent=2))
            return
        for e in done:
            what = "no limit" if e.before_ms is None else e.summary()
            console.print(f"{e.region}: {what}", markup=False)

    @retention.command("check")
    def check(
        directory: Path = DirArg, region: str | None = RegionOpt, as_json: bool = JsonOpt
    ) -> None:
        """Prove each region keeps to its limit: no event, exposure, label set, served page,
        live model or backup holds data past it by more than [erasure]
        retrain_within_hours; exit 1 otherwise."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.retention import check_retention

        with Deployment.open(directory) as d:
            regions = [d.config.region(region).name] if region else d.regions
            reports = [check_retention(d, name) for name in regions]
        ok = not any(r.problems for r in reports)
        if as_json:
            typer.echo(json.dumps({"ok": ok, "regions": [r.to_dict() for r in reports]}, indent=2))
        else:
            for r in reports:
                limit = "no limit" if r.events_days is None else f"{r.events_days} days"
                verdict = "[red]problems[/]" if r.problems else "[green]clean[/]"
                console.print(f"{r.region} ({limit}): {verdict}", highlight=False)
                for p in r.problems:
                    console.print(
                        f"  [red]problem[/]: {escape(p)}", highlight=False, soft_wrap=True
                    )
                for n in r.notes:
                    console.print(f"  note: {n}", markup=False, soft_wrap=True)
        if not ok:
            raise typer.Exit(EXIT_PROBLEM)
