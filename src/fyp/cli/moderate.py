"""Moderation commands: ``fyp moderate`` (automated checks) and ``fyp audit verify``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fyp.cli.app import WaitOpt, console, scheduled_run
from fyp.errors import ConfigError, InvalidRequest

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")
EXIT_PROBLEM = 1


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table("counted", "what", "n", title=f"region {summary['region']}")
    for state, n in summary["by_state"].items():
        table.add_row("verdict", state, f"{n:,}")
    for rule, n in summary["by_rule"].items():
        table.add_row("rule", rule, f"{n:,}")
    for rule, n in summary["rule_failures"].items():
        table.add_row("rule failed", rule, f"{n:,}")
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def moderate(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Only this region (default: all)."),
        limit: int | None = typer.Option(None, min=1, help="At most this many videos."),
        recheck_creators: bool = typer.Option(
            False, "--recheck-creators", help="Also re-check creator ages of judged videos."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        policy_digest: str | None = typer.Option(
            None,
            "--policy-digest",
            help="Judge only if each region's moderation policy has this digest (what "
            "the serving process starting the run has in force); else judge nothing, exit 3.",
        ),
        wait: bool = WaitOpt,
    ) -> None:
        """Count users' reports since the last run, then run the automated moderation
        checks over each region's pending videos.

        A fresh import is pending (not in any For You feed) until this has run: clean
        videos are approved, the rest rejected, restricted or queued for a human. Each
        region's run holds its `.schedule-moderation.lock`, as a server's scheduled run
        does."""
        from fyp.moderation import Moderator
        from fyp.regions.background import schedule_lock
        from fyp.regions.deployment import Deployment

        with Deployment.open(directory) as d:
            moderator = Moderator(d)
            regions = [region] if region else d.regions
            for r in regions:
                d.store(r)
                if policy_digest is not None and moderator.policy_digest(r) != policy_digest:
                    raise ConfigError(
                        f"the moderation policy of region {r!r} in fyp.toml (digest "
                        f"{moderator.policy_digest(r)}) is not the one expected "
                        f"({policy_digest}): the server starting this run has not applied "
                        "that edit of fyp.toml (it does within [serving] "
                        "config_check_seconds, or its log says why it refused it); "
                        "nothing was judged",
                        region=r,
                    )
            summaries = []
            for r in regions:
                lock = schedule_lock(d.config.region_dir(r), "moderation")
                with scheduled_run(lock, f"moderation of region {r}", wait):
                    summary = moderator.run(r, limit).to_dict()
                    if recheck_creators:
                        summary["creators_rechecked_changed"] = moderator.recheck_creators(r)
                summary["totals"] = moderator.cell(r).mod.count_by_state()
                summaries.append(summary)
        if as_json:
            typer.echo(json.dumps({"runs": summaries}, ensure_ascii=False, indent=2))
            return
        for s in summaries:
            console.print(
                f"region [bold]{s['region']}[/]: {s['written']:,} verdicts written "
                f"({s['examined'] - s['policy_rechecked']:,} pending examined, "
                f"{s['policy_rechecked']:,} verdicts re-judged under a changed policy, "
                f"{s['skipped']:,} skipped, {s['review_jobs']:,} sent to human review) "
                f"in {s['seconds']:.2f} s"
            )
            r = s["reports"]
            if r["videos_counted"]:
                console.print(
                    f"  users' reports: {r['videos_counted']:,} reported videos counted, "
                    f"{r['report_jobs']:,} report reviews opened, {r['held']:,} held out of "
                    f"For You until a human decides"
                )
            if s["written"]:
                console.print(_summary_table(s))
            totals = ", ".join(f"{k} {v:,}" for k, v in sorted(s["totals"].items()))
            console.print(f"  catalogue now: {totals or 'empty'}")

    audit = typer.Typer(name="audit", help="Check the per-region audit logs.", no_args_is_help=True)
    app.add_typer(audit, name="audit")

    @audit.command("verify")
    def verify(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Only this region (default: all)."),
        expect_head: str | None = typer.Option(
            None,
            help="SEQ:HASH printed by an earlier verify of one region's log; catches a "
            "cut-off tail. Each region's log has its own head: needs --region when the "
            "deployment has more than one region.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
    ) -> None:
        """Verify each region's audit hash chain; exit 1 on any edited, deleted or
        reordered entry, on a log whose append-only triggers or recorded head are gone, and
        on an erasure or move it records that the region's erasure ledger lacks."""
        from fyp.audit.log import AuditLog
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.ledger import ledger_problems

        with Deployment.open(directory) as d:
            regions = [region] if region else d.regions
            if expect_head is not None and len(regions) > 1:
                # one region's head checked against every region reported false tampering
                raise InvalidRequest(
                    "--expect-head needs --region: each region's audit log has its own "
                    f"head (this deployment has {', '.join(d.regions)})",
                    field="expect_head",
                )
            reports = [AuditLog(d.store(r)).verify(expect_head) for r in regions]
            for rep in reports:  # and the erasure ledger holds what the log says it should
                rep.problems += ledger_problems(d.config, d.store(rep.region), rep.region)
        if as_json:
            typer.echo(json.dumps({"reports": [r.to_dict() for r in reports]}, indent=2))
        else:
            for rep in reports:
                state = "[green]intact[/]" if rep.ok else f"[red]{len(rep.problems)} problem(s)[/]"
                console.print(
                    f"region [bold]{rep.region}[/]: {rep.entries:,} entries, chain {state}, "
                    f"head {rep.head_seq}:{rep.head_hash}"
                )
                for p in rep.problems:
                    where = f"entry {p.seq}" if p.seq else "log"
                    console.print(f"  {where}: {p.kind}: {p.message}", markup=False)
        if not all(r.ok for r in reports):
            raise typer.Exit(EXIT_PROBLEM)
