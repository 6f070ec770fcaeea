"""User commands: ``fyp user move``, ``fyp user verify-move``, ``fyp user blocks-check`` and
``fyp user blocks-settle``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from fyp.cli.app import WaitOpt, console, scheduled_run
from fyp.cli.erasure import print_remnants

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")
JsonOpt = typer.Option(False, "--json", help="Print a machine-readable report.")
EXIT_PROBLEM = 1


def register(app: typer.Typer) -> None:
    user = typer.Typer(
        name="user",
        help="Move users between regions; check and settle the blocks between them.",
        no_args_is_help=True,
    )
    app.add_typer(user, name="user")

    @user.command("move")
    def move(
        directory: Path = DirArg,
        user_id: str = typer.Argument(..., metavar="USER", help="The user to move."),
        to: str = typer.Option(..., "--to", help="The destination region."),
        reason: str = typer.Option(..., "--reason", help="Why (kept in both regions' audit logs)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Move USER's home region to --to (the source region's policy must allow it:
        [regions.R.policy.moves] allow_to), or finish their unfinished move there; print
        the signed move receipt."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.move import Mover

        with Deployment.open(directory, finish_moves=False) as d:  # finished here, if any
            receipt = Mover(d).move(user_id, to, reason)
        body = receipt.to_dict()
        if as_json:
            typer.echo(json.dumps(body, indent=2))
            return
        moved = ", ".join(f"{k} {v:,}" for k, v in body["moved"].items())
        console.print(
            f"moved user {escape(repr(user_id))} from [bold]{receipt.source}[/] to "
            f"[bold]{receipt.dest}[/] ({receipt.move_id}): {moved}",
            highlight=False,
        )
        if receipt.retrain_deadline_ms is not None:
            console.print(
                f"  their share of {receipt.source}'s aggregates goes with a retrain before "
                f"{body['retrain_deadline']} (`fyp erasure process`)",
                markup=False,
            )
        typer.echo(json.dumps(body, indent=2))

    @user.command("verify-move")
    def verify_move(
        directory: Path = DirArg,
        user_id: str = typer.Argument(..., metavar="USER", help="The user who moved."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Prove nothing of USER remains in the regions they moved away from (stores,
        served logs, artifacts, files, copies) while they live in exactly one region, and
        the retrain of the source finished; exit 1 otherwise (unfinished, pending)."""
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.move_verify import verify_move as check

        with Deployment.open(directory) as d:
            report = check(d, user_id)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            colour = "green" if report.ok else "red"
            console.print(
                f"user {escape(repr(user_id))}: [{colour}]{report.status}[/], homed in "
                f"{', '.join(report.homes) or 'no region'}",
                highlight=False,
            )
            for m in report.moves:
                back = " (moved back since)" if m["moved_back_since"] else ""
                console.print(
                    f"  ledger {m['from']}: {m['move_id']} to {m['to']} at {m['moved_at']}{back}",
                    markup=False,
                )
            if report.unfinished is not None:
                console.print(
                    f"  [red]unfinished[/] move {report.unfinished['move_id']}: finish it with "
                    f"{escape(report.unfinished['finish_with'])}",
                    highlight=False,
                )
            print_remnants(report.remnants, report.to_dict()["pending_retrain"])
            for note in report.notes:
                console.print(f"  note: {note}", markup=False)
        if not report.ok:
            raise typer.Exit(EXIT_PROBLEM)

    @user.command("blocks-check")
    def blocks_check(
        directory: Path = DirArg,
        repair: bool = typer.Option(
            False, "--repair", help="Make the blocked sides agree with the blocks."
        ),
        as_json: bool = JsonOpt,
    ) -> None:
        """Check that every block's two sides agree (the blocker's row, and the blocked
        user's in their home region, which keeps the blocker out of their feeds); exit 1
        on a disagreement (a PUT or DELETE cut short, a restore), unless --repair fixed
        it: the blocker's row is the record."""
        from fyp.catalog.blocks_check import check_blocks
        from fyp.regions.deployment import Deployment

        with Deployment.open(directory) as d:
            report = check_blocks(d, repair)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            colour = "green" if report.ok else "red"
            console.print(
                f"[{colour}]{'ok' if report.ok else 'DISAGREE'}[/]: {report.blocks:,} blocks, "
                f"{report.blocked_sides:,} blocked sides; {len(report.missing):,} blocks "
                f"without their blocked side, {len(report.orphaned):,} blocked sides without "
                f"a block; {report.repaired:,} repaired",
                highlight=False,
            )
        if not report.ok:
            raise typer.Exit(EXIT_PROBLEM)

    @user.command("blocks-settle")
    def blocks_settle(
        directory: Path = DirArg,
        older_than: float = typer.Option(
            30.0,  # fyp.catalog.blocks.SETTLE_AFTER_MS (not imported: the CLI starts light)
            "--older-than",
            min=0,
            metavar="SECONDS",
            help="Only pairs owed at least this long (a younger one may still be its "
            "request's own, which clears it); 0: all.",
        ),
        as_json: bool = JsonOpt,
        wait: bool = WaitOpt,
    ) -> None:
        """Write the other side of every block or unblock that a request cut short left
        owed (--older-than ago or more), from the blocker's row as it stands, and clear it; exit
        1 if some pair could not be settled (it stays owed: run it again). `fyp serve`
        runs it itself when something is owed ([serving] settle_blocks_seconds)."""
        from fyp.catalog.blocks import settle_owed
        from fyp.regions.background import schedule_lock
        from fyp.regions.deployment import Deployment

        with (
            Deployment.open(directory) as d,
            scheduled_run(schedule_lock(d.config.root, "blocks"), "blocks-settle", wait),
        ):
            settled, left = settle_owed(d, int(older_than * 1000))
        if as_json:
            typer.echo(json.dumps({"ok": left == 0, "settled": settled, "still_owed": left}))
        else:
            console.print(
                f"settled {settled:,} owed blocked side(s)"
                + (f"; [red]{left:,} still owed[/] (see the log; run it again)" if left else ""),
                highlight=False,
            )
        if left:
            raise typer.Exit(EXIT_PROBLEM)
