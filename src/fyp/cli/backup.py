"""Sovereignty operations on whole regions: backup, restore, carve-out, residency scan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from fyp.cli.app import console

if TYPE_CHECKING:
    from fyp.sovereignty.restore import RestoreReport
    from fyp.sovereignty.restore_preview import RestorePreview

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")
EXIT_PROBLEM = 1


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def register(app: typer.Typer) -> None:
    @app.command()
    def backup(
        directory: Path = DirArg,
        region: str = typer.Option(..., help="The region to back up."),
        to: str | None = typer.Option(
            None, "--to", help="One of the region's backup_targets (default: all of them)."
        ),
        keep: int | None = typer.Option(
            None, "--keep", min=1, help="Then delete all but the newest N backups at the targets."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    ) -> None:
        """Write an encrypted, checksummed snapshot of a region to its allowed targets."""
        from fyp.config import load_config
        from fyp.sovereignty.backup_writer import BackupWriter

        config = load_config(directory)
        writer = BackupWriter(config, region)
        done = writer.run(to)
        pruned, damaged = writer.prune(keep, to) if keep is not None else ([], [])
        m = done.manifest
        if as_json:
            out = {
                "path": str(done.path),
                "manifest": m,
                "pruned": pruned,
                "damaged": [d.to_dict() for d in damaged],
            }
            typer.echo(json.dumps(out, indent=2))
            return
        console.print(
            f"region [bold]{region}[/]: backup [bold]{m['backup_id']}[/] in {m['seconds']:.2f} s"
        )
        console.print(
            f"  {len(m['parts'])} parts, {_mb(m['plaintext_bytes'])} → "
            f"{_mb(m['ciphertext']['size'])} encrypted; store schema "
            f"{m['store']['schema_version']}, {m['store']['users']:,} users, "
            f"{m['store']['events']:,} events (last seq {m['store']['max_event_seq']:,})"
        )
        console.print(f"  written to {done.path} (sha256 {m['ciphertext']['sha256'][:16]}…)")
        if pruned:
            console.print(f"  deleted {len(pruned)} older backup(s): {', '.join(pruned)}")
        _print_damaged(damaged, "neither counted nor deleted by --keep")

    @app.command("backups")
    def backups(
        directory: Path = DirArg,
        region: str = typer.Option(..., help="The region whose backups to list."),
        verify: bool = typer.Option(
            False, "--verify", help="Also read each backup whole and check its checksum."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    ) -> None:
        """List a region's backups at its targets, oldest first, damaged ones included;
        exit 1 if any is damaged (a manifest that cannot be read or fails its MAC, a
        snapshot of another size than it names; with --verify, another checksum)."""
        from fyp.config import load_config
        from fyp.sovereignty.backup import allowed_target_dirs, list_backups

        config = load_config(directory)
        dirs = [p for _, p in allowed_target_dirs(config, config.region(region).name)]
        listing = list_backups(*dirs).of_region(config, region, verify)
        if as_json:
            out = {
                "backups": [{"path": str(b.path), "manifest": b.manifest} for b in listing.backups],
                "damaged": [d.to_dict() for d in listing.damaged],
            }
            typer.echo(json.dumps(out, indent=2))
        else:
            for b in listing.backups:
                console.print(f"{b.backup_id}  {b.manifest.get('created_at')}  {b.path}")
            if not listing.backups:
                console.print(f"no readable backups of region {region}", markup=False)
            _print_damaged(listing.damaged, "never taken for latest")
        if listing.damaged:
            raise typer.Exit(EXIT_PROBLEM)

    @app.command()
    def restore(
        directory: Path = DirArg,
        region: str = typer.Option(..., help="The region to restore."),
        backup_id: str = typer.Option("latest", "--backup", help="Backup id, or 'latest'."),
        source: str | None = typer.Option(
            None, "--from", help="file:// location to read from (default: the region's targets)."
        ),
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Verify the backup and say what a restore would drop; change nothing.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Verify and restore a region's backup, then re-erase users erased since.

        Stop the server first: a store open in another process is refused. A damaged
        store is moved aside, never deleted; exit 1 when something made since the backup
        could not be put back (each warning says what, and what to do). --dry-run counts
        what would be dropped (the server may keep running)."""
        from fyp.config import load_config
        from fyp.sovereignty.restore import Restorer

        restorer = Restorer(load_config(directory), region)
        if dry_run:
            preview = restorer.preview(backup_id, source)
            if as_json:
                typer.echo(json.dumps(preview.to_dict(), indent=2))
            else:
                _print_preview(preview)
            return
        report = restorer.run(backup_id, source)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            _print_restore(report)
        if report.warnings:
            raise typer.Exit(EXIT_PROBLEM)

    region_app = typer.Typer(name="region", help="Whole-region operations.", no_args_is_help=True)
    app.add_typer(region_app, name="region")

    @region_app.command("add")
    def add(
        directory: Path = DirArg,
        names: str = typer.Argument(..., help="The new region (or regions: us,eu)."),
    ) -> None:
        """Create a new region's empty store, declaring it in fyp.toml unless it is already
        (the only way, besides init and restore, that a region's store is created)."""
        from fyp.config import region_list
        from fyp.regions.deployment import add_region

        for name in region_list(names, option="REGION"):
            config = add_region(directory, name)
            url = config.resolve_url(config.region(name).store)
            console.print(f"region [bold]{name}[/]: created its empty store {escape(url)}")
        console.print(
            "  no API key reaches a new region yet: create some with `fyp keys create "
            f"{directory} ... --region NAME`; restart the server to serve it",
            markup=False,
            soft_wrap=True,
        )

    @region_app.command("export")
    def export(
        directory: Path = DirArg,
        region: str = typer.Argument(..., help="The region to carve out."),
        to: Path = typer.Option(..., "--to", help="New directory for the standalone deployment."),
        backups: bool = typer.Option(
            True, "--backups/--no-backups", help="Copy the region's backups under DIR too."
        ),
        store: str | None = typer.Option(
            None,
            "--store",
            help="Store URL of the carved region (e.g. postgresql://…?schema=fyp_{region}; "
            "new or empty); default: a SQLite file in the new directory.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Carve a region out as a standalone deployment (config, store, models, keys);
        exit 1 if the copy's audit log is broken or its residency scan finds anything."""
        from fyp.sovereignty.carve import carve_out

        report = carve_out(directory, region, to, with_backups=backups, store=store)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            console.print(
                f"region [bold]{region}[/] carved out to [bold]{report.out}[/] in "
                f"{report.seconds:.2f} s: {report.users:,} users, {report.events:,} events, "
                f"{report.videos:,} videos, {report.files} files, audit log "
                f"{report.audit_entries:,} entries ({'intact' if report.audit_ok else 'BROKEN'})"
            )
            for note in report.notes:
                console.print(f"  {note}", markup=False)
        if not report.audit_ok or report.foreign_records:  # carved, but not clean
            raise typer.Exit(EXIT_PROBLEM)

    residency = typer.Typer(
        name="residency", help="Check where users' data lives.", no_args_is_help=True
    )
    app.add_typer(residency, name="residency")

    @residency.command("check")
    def check(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Scan only this region (default: all)."),
        backups: bool = typer.Option(
            True, "--backups/--no-backups", help="Also decrypt and scan every backup."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Scan every store, artifact, backup and file of each region for records of
        users homed elsewhere (or nowhere); exit 1 if any is found."""
        from fyp.sovereignty.residency import ResidencyScanner

        report = ResidencyScanner(directory, scan_backups=backups).run([region] if region else None)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        else:
            _print_residency(report.to_dict())
        if not report.ok:
            raise typer.Exit(EXIT_PROBLEM)


def _print_restore(report: RestoreReport) -> None:
    s = report.seconds
    console.print(
        f"region [bold]{report.region}[/]: restored backup [bold]{report.backup_id}[/] "
        f"(taken {report.backup_created_at}) in {s['total']:.2f} s"
    )
    console.print(
        f"  {report.verified_parts} parts verified, {_mb(report.restored_bytes)}; store "
        f"{report.store['users']:,} users, {report.store['events']:,} events"
    )
    console.print(f"  erasures re-applied: {len(report.reerased)} (users erased after the backup)")
    carried = report.carried_audit_entries
    console.print(
        "  audit entries written after the backup: "
        + (
            "[bold red]unreadable in the replaced store[/]"
            if carried is None
            else f"{carried} carried into the restored log"
        )
    )
    console.print(
        f"  moderation decisions since the backup re-applied: {report.remoderated_videos} videos"
        + (f", {report.held_for_recheck} held for re-check" if report.held_for_recheck else "")
    )
    for note in report.notes:
        console.print(f"  note: {note}", markup=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[bold red]WARNING[/]: {escape(warning)}", soft_wrap=True)


def _print_preview(p: RestorePreview) -> None:
    console.print(
        f"region [bold]{p.region}[/]: dry run of restoring backup [bold]{p.backup_id}[/] "
        f"(taken {p.backup_created_at}); nothing was changed"
    )
    console.print(
        f"  {p.verified_parts} parts verified; its store: {p.store['users']:,} users, "
        f"{p.store['events']:,} events"
    )
    if p.replaced_store_damage is None:
        console.print("  the store it would replace is healthy: it would be overwritten")
    else:
        console.print(
            f"  the store it would replace is damaged ({escape(p.replaced_store_damage)}): "
            "it would be moved aside, not deleted"
        )
    from fyp.sovereignty.restore_preview import EDITS, added_text, plural

    dropped = p.dropped_since_backup
    console.print(
        "  added since the backup, not in it: "
        + ("[bold red]cannot be counted[/]" if dropped is None else added_text(dropped))
    )
    if dropped is not None:
        console.print(
            "  profiles edited since the backup (the edits undone): "
            + plural(dropped.get(EDITS, 0), "users")
        )
    carry = p.audit_entries_to_carry
    console.print(
        "  audit entries to carry over: "
        + ("[bold red]unreadable[/]" if carry is None else f"{carry:,}")
    )
    console.print(
        f"  users of the backup erased or moved away since (removed again): at most "
        f"{p.users_to_remove_again:,}"
    )


def _print_damaged(damaged: list[Any], what: str) -> None:
    for d in damaged:
        console.print(f"  DAMAGED backup {d.backup_id} ({what}): {d.reason}", markup=False)


CAUSES = frozenset({"wrong_region_store", "several_homes", "unfinished_move", "unreadable"})
"""Findings that explain others (listed first): a store file in another region's place."""


def _print_residency(r: dict[str, Any]) -> None:
    for reg in r["regions"]:
        scanned = reg["scanned"]
        console.print(
            f"region [bold]{reg['region']}[/]: {scanned['store_columns']} user columns in "
            f"{scanned['store_tables']} tables, {scanned['artifacts']} model artifacts, "
            f"{scanned['backups']} backups, {scanned['files']} other files"
        )
    absent = r["absent_regions"]
    if absent:
        console.print(f"regions without a store here (region-local scan): {', '.join(absent)}")
    status = "green" if r["ok"] else "red"
    console.print(
        f"[{status}]{r['foreign_records']:,} foreign records[/], "
        f"[{status}]{r['orphan_records']:,} orphan records[/] "
        f"({r['erased_remnants']:,} of them of erased users)"
        + (f", [red]{r['other_findings']:,} other findings[/]" if r["other_findings"] else "")
    )
    if r["findings"]:
        table = Table("region", "kind", "where", "user", "home", "records")
        # a store in another region's place explains thousands of orphans: it comes first
        ordered = sorted(r["findings"], key=lambda f: f["kind"] not in CAUSES)
        for f in ordered[:200]:
            table.add_row(
                f["region"],
                f["kind"],
                f["location"],
                f["user_id"],
                f["home_region"] or "-",
                f"{f['records']:,}",
            )
        console.print(table)
        if len(r["findings"]) > 200:
            console.print(f"... {len(r['findings']) - 200} more (use --json)")
    for e in r["exceptions"]:
        console.print(f"exception: {e['message']}", markup=False)
