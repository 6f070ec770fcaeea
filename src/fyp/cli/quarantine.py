"""``fyp quarantine``: the damaged stores restores moved aside, listed and removed on record."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from fyp.cli.app import console

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def register(app: typer.Typer) -> None:
    quarantine = typer.Typer(
        name="quarantine",
        help="Damaged stores a restore moved aside: list them, remove them on record.",
        no_args_is_help=True,
    )
    app.add_typer(quarantine, name="quarantine")

    @quarantine.command("list")
    def list_(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Only this region (default: all)."),
        as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    ) -> None:
        """Each region's quarantined stores: name, size, since when and why. They hold the
        region's users as they were, erased ones included: `fyp erasure verify` reports
        them until they are removed."""
        from fyp.config import load_config
        from fyp.sovereignty.quarantine import entries

        config = load_config(directory)
        names = [config.region(region).name] if region else list(config.region_names)
        found = {name: entries(config.region_dir(name)) for name in names}
        if as_json:
            typer.echo(json.dumps(found, indent=2))
            return
        shown = 0
        for name, kept in found.items():
            for e in kept:
                shown += 1
                console.print(
                    f"{name}  {e['path']}  {e['bytes'] / 1e6:.1f} MB, {e['files']} files, "
                    f"since {_when(e['quarantined_at_ms'])}, restore of backup "
                    f"{e['replaced_by_backup'] or '?'}; damage: {e['damage'] or '?'}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
        if not shown:
            console.print("no quarantined stores")

    @quarantine.command("remove")
    def remove(
        directory: Path = DirArg,
        name: str = typer.Argument(..., help="The quarantined store (as `list` names it)."),
        region: str = typer.Option(..., help="Its region."),
        reason: str = typer.Option(..., help="Why it may go (recorded in the audit log)."),
        actor: str = typer.Option("cli:fyp quarantine remove", help="Who removes it (audit)."),
        as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
    ) -> None:
        """Delete a quarantined store, recorded first in the region's audit log (who, when,
        why, its size and why.json). Run it again to finish a removal cut short."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.quarantine import remove as remove_entry

        with Deployment.open(directory) as d:
            done = remove_entry(d, d.config.region(region).name, name, reason, actor)
        if as_json:
            typer.echo(json.dumps(done, indent=2))
        else:
            _print_removed(done)


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _print_removed(done: dict[str, Any]) -> None:
    console.print(
        f"region [bold]{done['region']}[/]: removed {done['path']} "
        f"({done['files']} files, {done['bytes'] / 1e6:.1f} MB); audit entry {done['audit_seq']}"
    )
