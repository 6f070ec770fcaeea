"""Lineage and erasure commands: ``fyp lineage verify`` and ``fyp erasure ...``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fyp.cli.app import WaitOpt, console, fail, scheduled_run
from fyp.errors import InvalidRequest, StorageError

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")
EXIT_PROBLEM = 1
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable report.")


def _refuse_unwritable(path: Path) -> None:
    """InvalidRequest unless a file can be written at ``path``."""
    target = path if path.exists() else path.parent
    if path.is_dir() or not (target.is_file() or target.is_dir()):
        raise fail(InvalidRequest(f"--receipt {path}: not a file in an existing directory"))
    if not os.access(target, os.W_OK):
        raise fail(InvalidRequest(f"--receipt {path}: not writable"))


def register(app: typer.Typer) -> None:
    lineage = typer.Typer(
        name="lineage", help="Check what model artifacts learned from.", no_args_is_help=True
    )
    erasure = typer.Typer(name="erasure", help="Erase users and prove it.", no_args_is_help=True)
    app.add_typer(lineage, name="lineage")
    app.add_typer(erasure, name="erasure")

    @lineage.command("verify")
    def lineage_verify(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Only this region (default: all)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Check every artifact's region, users hash, that every user it learned from is
        homed in its region and consented to model training at its snapshot (a withdrawal
        since: pending until the retrain deadline), and its event snapshot; exit 1 on
        anything foreign, unconsented or overdue."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.lineage import LineageVerifier

        with Deployment.open(directory) as d:
            reports = LineageVerifier(d).verify([region] if region else None)
        ok = all(r.ok for r in reports)
        if as_json:
            typer.echo(
                json.dumps({"ok": ok, "artifacts": [r.to_dict() for r in reports]}, indent=2)
            )
        else:
            table = Table(
                "region",
                "version",
                "served",
                "users",
                "snapshot",
                "trained on",
                "consent",
                "lineage",
            )
            for r in reports:
                verdict = "[green]clean[/]" if r.ok else f"[red]{len(r.problems)} problem(s)[/]"
                table.add_row(
                    r.region,
                    r.version,
                    "yes" if r.current else "",
                    f"{r.users:,}",
                    r.snapshot,
                    _where(r.trained_on),
                    r.consent,
                    verdict,
                )
            console.print(table)
            for r in reports:
                for p in r.problems:
                    console.print(
                        f"[red]{r.region}/{r.version}[/]: {escape(p)}",
                        highlight=False,
                        soft_wrap=True,  # one line per finding
                    )
                for n in r.notes:
                    console.print(f"{r.region}/{r.version}: {n}", markup=False, soft_wrap=True)
            if not reports:
                console.print("no model artifacts")
        if not ok:
            raise typer.Exit(EXIT_PROBLEM)

    @erasure.command("erase")
    def erase(
        directory: Path = DirArg,
        user: str = typer.Argument(..., help="The user id to erase."),
        receipt_out: Path | None = typer.Option(None, "--receipt", help="Write the receipt here."),
    ) -> None:
        """Erase a user (what DELETE /v1/users/{id} does) and print the signed receipt."""
        from fyp.catalog.service import Catalog
        from fyp.regions.deployment import Deployment

        if receipt_out is not None:  # before the erasure: its receipt can be made only once
            _refuse_unwritable(receipt_out)
        with Deployment.open(directory) as d:
            receipt = Catalog(d).erase_user(user, "cli:fyp erasure erase")
        text = json.dumps(receipt.to_dict(), indent=2)
        typer.echo(text)  # first: whatever happens to the file, the receipt is out
        if receipt_out is not None:
            try:
                receipt_out.write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise fail(
                    StorageError(
                        f"the user is erased, but its receipt could not be written to "
                        f"{receipt_out} ({exc.strerror or exc}): it is printed above"
                    )
                ) from None

    @erasure.command("process")
    def process(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Only this region (default: all)."),
        due_within: float | None = typer.Option(
            None,
            "--due-within",
            min=0,
            help="Retrain only when the earliest deadline is this many hours away or less "
            "(default: whenever an erasure is pending).",
        ),
        force: bool = typer.Option(False, help="Retrain even with nothing pending."),
        as_json: bool = JsonOpt,
        wait: bool = WaitOpt,
    ) -> None:
        """Re-apply recorded erasures, retrain regions whose models still hold erased
        users' share of aggregates or users who withdrew consent to model training, and
        delete the versions that held erased users (cron this). Holds
        `.schedule-erasure.lock`, as a server's scheduled run does."""
        from fyp.regions.background import schedule_lock
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.erasure_process import process as run

        due_ms = None if due_within is None else int(due_within * 3_600_000)
        with Deployment.open(directory) as d:
            lock = schedule_lock(d.config.root, "erasure")
            with scheduled_run(lock, "erasure processing", wait):
                runs = run(d, [region] if region else None, due_ms, force)
        if as_json:
            typer.echo(json.dumps({"runs": [r.to_dict() for r in runs]}, indent=2))
            return
        for r in runs:
            trained = f"retrained -> {r.retrained}" if r.retrained else "no retrain"
            console.print(
                f"region [bold]{r.region}[/]: {len(r.pending_before)} erasure(s) pending, "
                f"{trained}, {len(r.pruned)} old version(s) deleted, {len(r.reapplied)} "
                f"re-applied, {len(r.stripped)} stripped from artifacts, "
                f"{len(r.pending_after)} still pending ({r.seconds:.2f} s)"
            )
            if r.consent_due is not None:
                console.print(
                    f"  withdrawals of consent to model training await a retrain, due by "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(r.consent_due / 1000))}",
                    markup=False,
                )
            if r.wal_purged:
                console.print("  emptied the WAL an erasure had left busy (the erased rows' bytes)")
            if r.stale_copies:
                console.print(
                    f"  removed {len(r.stale_copies)} plaintext staging copies left by killed "
                    f"runs: {', '.join(r.stale_copies)}",
                    markup=False,
                )

    @erasure.command("verify")
    def verify(
        directory: Path = DirArg,
        user: str = typer.Argument(..., help="The erased user's id."),
        receipt: Path | None = typer.Option(None, help="A deletion receipt (JSON) to check."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Prove nothing of USER remains in any region (stores, artifacts, files) and the
        retrain covering the erasure has finished; exit 1 otherwise (pending included)."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.erasure import Receipt
        from fyp.sovereignty.erasure_verify import verify_erasure

        parsed = None
        if receipt is not None:
            try:
                raw = json.loads(receipt.read_text(encoding="utf-8"))
            except OSError as exc:
                raise InvalidRequest(f"cannot read receipt {receipt}: {exc.strerror}") from exc
            except ValueError as exc:  # not JSON, or not UTF-8
                raise InvalidRequest(f"receipt {receipt} is not JSON: {exc}") from exc
            if isinstance(raw, dict) and isinstance(raw.get("receipt"), dict):
                raw = raw["receipt"]  # the body DELETE /v1/users/{id} answers with
            try:
                parsed = Receipt.from_dict(raw)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                missing = f" (no {exc.args[0]!r})" if isinstance(exc, KeyError) else ""
                raise InvalidRequest(
                    f"receipt {receipt} is not a deletion receipt{missing}: give the one "
                    "`fyp erasure erase` printed or the whole answer of DELETE /v1/users/{id}"
                ) from exc
        with Deployment.open(directory) as d:
            report = verify_erasure(d, user, parsed)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            colour = "green" if report.ok else "red"
            console.print(
                f"user {escape(repr(user))}: [{colour}]{report.status}[/]", highlight=False
            )
            for region, entry in report.ledger.items():
                console.print(
                    f"  ledger {region}: {entry['receipt_id']} at {entry['erased_at']}",
                    markup=False,
                )
            print_remnants(report.remnants, report.to_dict()["pending_retrain"])
            if report.receipt is not None:
                checks = ", ".join(
                    f"{k} {'yes' if v else 'NO'}"
                    for k, v in report.receipt.items()
                    if k not in ("receipt_id", "ok")
                )
                console.print(f"  receipt {report.receipt['receipt_id']}: {checks}", markup=False)
            for note in report.notes:
                console.print(f"  note: {note}", markup=False)
        if not report.ok:
            raise typer.Exit(EXIT_PROBLEM)


def print_remnants(remnants: list[Any], pending: dict[str, dict[str, Any]]) -> None:
    """The remnants and pending retrains of an erasure's or a move's verification."""
    for rem in remnants:
        console.print(
            f"  [red]remnant[/] {rem.region} {rem.kind} {escape(rem.where)}: {rem.count}",
            highlight=False,
        )
    for rid, info in pending.items():
        console.print(f"  pending retrain for {rid} (deadline {info['deadline']})", markup=False)


def _where(trained_on: dict[str, Any] | None) -> str:
    """Where a manifest says its artifact was trained, in a table cell."""
    if not trained_on:
        return "?"
    host = str(trained_on.get("host", "?"))
    if trained_on.get("executor") == "ray":
        return f"ray {str(trained_on.get('ray_node_id', '?'))[:8]} ({host})"
    return host
