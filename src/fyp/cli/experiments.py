"""``fyp experiments report``: how each arm of an experiment engaged, per region."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fyp.cli.app import console, fail
from fyp.errors import FypError

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _table(region: dict[str, Any]) -> Table:
    """Metrics down, arms across: control's mean, then each variant's mean, its
    difference with its 95% CI, and the p-value."""
    from fyp.experiments.report import METRICS

    arms = region["arms"]
    table = Table(title=f"region {region['region']}", title_justify="left")
    table.add_column("metric", no_wrap=True)
    for arm in arms:
        table.add_column(f"{arm['variant']} ({arm['users']} users)", justify="right")
        if arm["variant"] != "control":
            table.add_column("Δ vs control [95% CI]", justify="right")
            table.add_column("p", justify="right")
    for metric in METRICS:
        row = [metric]
        for arm in arms:
            m = arm["metrics"][metric]
            row.append(_number(m["mean"]))
            if arm["variant"] != "control":
                ci = m["ci95"]
                interval = "" if ci is None else f" [{ci[0]:+.4f}, {ci[1]:+.4f}]"
                diff = "" if m["difference"] is None else f"{m['difference']:+.4f}"
                row += [diff + interval, _number(m["p_value"])]
        table.add_row(*row)
    return table


def _srm_line(srm: dict[str, Any]) -> str:
    """The sample-ratio check under a region's table: exposed users per arm against
    what the shares expect, the p-value, and a warning under the threshold."""
    arms = ", ".join(
        f"{arm} {n} (expected {srm['expected'][arm]:.1f})" for arm, n in srm["observed"].items()
    )
    p = "n/a" if srm["p_value"] is None else f"{srm['p_value']:.4g}"
    chi2 = "" if srm["chi2"] is None else f"chi2 = {srm['chi2']:.4f}, "
    line = f"sample ratio: {arms}; {chi2}p = {p}"
    if srm["warning"]:
        line += f"\n[bold red]WARNING: {srm['warning']}[/]"
    return line


def register(app: typer.Typer) -> None:
    experiments = typer.Typer(
        name="experiments",
        help="Online experiments (A/B tests) of the ranking.",
        no_args_is_help=True,
    )
    app.add_typer(experiments, name="experiments")

    @experiments.command("report")
    def report(
        directory: Path = DirArg,
        name: str = typer.Argument(..., help="The experiment ([experiments.NAME] of fyp.toml)."),
        region: str | None = typer.Option(None, help="Only this region of the experiment."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Per region and arm: the users first exposed in it, their per-user rates from
        then on, each variant against control (difference, 95% CI, Welch's p-value),
        and the sample-ratio check of the arms' sizes against the shares."""
        from fyp.experiments.report import report as experiment_report
        from fyp.regions.deployment import Deployment

        try:
            with Deployment.open(directory) as d:
                found = experiment_report(d, name, region)
        except FypError as exc:
            raise fail(exc) from None
        if as_json:
            typer.echo(json.dumps(found, indent=2))
            return
        shares = ", ".join(f"{v} {s:g}" for v, s in found["variants"].items())
        until = f" until {found['end']}" if found["end"] else ""
        console.print(
            f"experiment [bold]{found['experiment']}[/] since {found['start']}{until}: {shares}"
        )
        for r in found["regions"]:
            console.print(_table(r))
            console.print(_srm_line(r["srm"]), highlight=False)
