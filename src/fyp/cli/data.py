"""Data commands: import real data sets, build and serve the demo deployment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fyp.cli.app import console
from fyp.config import region_list

if TYPE_CHECKING:
    from fyp.datasets.demo import Demo
    from fyp.datasets.kuairec_ear import ImportReport

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml; create it with fyp init).")

# Help texts go through rich markup: a literal "[" is written "\\[".
EAR_HELP = """Import KuaiRec-EAR: real KuaiRec positives with a fully observed test set.

--data is the folder holding kuairec-ear/ and kuairec/ (e.g. ../shared/data), or
kuairec-ear/ itself with the side tables in a sibling kuairec/.

Home region of a user: regions\\[int(user_id) % len(regions)], regions in fyp.toml
order (a user already in the deployment keeps their home). Every video is published
to every region, with a placeholder duration of 15 s (the data has none). train and
valid rows become play events (long plays, synthetic timestamps in file order); test
rows are stored as held-out labels (dataset kuairec-ear, split test), never as events.
Re-running the import adds nothing.
"""

OFFICIAL_HELP = """Import KuaiRec 2.0 in its official layout (big_matrix.csv, small_matrix.csv).

--data holds the matrices (columns user_id,video_id,play_duration,video_duration,time,
date,timestamp,watch_ratio) and optionally the side tables (there or in a sibling
kuairec/). Every row is a play event with its real watch time and timestamp; users are
homed by regions\\[int(user_id) % len(regions)]. With --split-protocol, big-matrix pairs
that are in the small matrix are left out, and the small matrix becomes the test set:
regions/REGION/datasets/kuairec-small.csv (user_id,video_id,watch_ratio) per home
region, with its positives (watch_ratio >= 2) also stored as labels (dataset kuairec).
"""


class RichProgress:
    """The importers' progress protocol drawn with rich (no refresh thread: forks safely)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def start(self, description: str, total: int | None) -> None:
        previous = next((t for t in self.bar.tasks if t.id == self.task), None)
        if previous is not None and previous.total is None:  # an open-ended scan is done
            self.bar.update(previous.id, total=previous.completed)
        self.task = self.bar.add_task(description, total=total)
        self.bar.refresh()

    def advance(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)
            self.bar.refresh()


def print_report(report: ImportReport) -> None:
    table = Table(
        "region",
        "users",
        "videos",
        "events",
        "labels",
        title=f"{report.dataset}: new rows (store totals)",
    )
    for region, new in report.written.items():
        total = report.totals.get(region, new)
        table.add_row(
            region,
            *(
                f"{getattr(new, k):,} ({getattr(total, k):,})"
                for k in ("users", "videos", "events", "labels")
            ),
        )
    console.print(table)
    for note in report.notes:
        console.print(f"  {note}", markup=False, soft_wrap=True)
    console.print(
        f"[bold]{report.rows:,}[/] interaction rows in {report.seconds:.2f} s: "
        f"[bold]{report.rows_per_s:,.0f} rows/s[/]"
    )


def print_examples(demo: Demo, host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    home = demo.regions[0]
    console.print("\nTry it (in another terminal once the server is up):")
    console.print(
        f"  KEY=$(cat {demo.admin_key_file})   # the demo's admin key (mode 0600)",
        markup=False,
        soft_wrap=True,
    )
    auth = '-H "Authorization: Bearer $KEY"'
    console.print(
        f"  curl -s -X POST {base}/v1/users {auth} -H 'content-type: application/json' \\\n"
        f'       -d \'{{"user_id": "alice", "home_region": "{home}"}}\'',
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"  curl -s -X POST {base}/v1/events {auth} -H 'content-type: application/json' \\\n"
        f'       -d \'{{"event_id": "alice-1", "user_id": "alice", '
        f'"video_id": "{demo.example_video}", "type": "play", "watch_ms": 12000}}\'',
        markup=False,
        soft_wrap=True,
    )
    why = "-H 'X-Fyp-Reason: trying the demo'"  # operator reads of user data are audited
    console.print(f"  curl -s {base}/v1/users/alice {auth} {why}", markup=False, soft_wrap=True)
    console.print(
        f"  curl -s '{base}/v1/users/{demo.example_user}/feed?n=5' {auth} {why}",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"  API docs: {base}/docs", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    imports = typer.Typer(
        name="import", help="Import a real data set into a deployment.", no_args_is_help=True
    )
    app.add_typer(imports, name="import")

    @imports.command("kuairec-ear", help=EAR_HELP)
    def import_ear(
        directory: Path = DirArg,
        data: Path = typer.Option(..., "--data", help="Folder with kuairec-ear/ and kuairec/."),
        sequential: bool = typer.Option(
            False,
            "--sequential",
            help="Write regions one after another, not one worker process per region "
            "(faster when the machine's cores are already busy).",
        ),
    ) -> None:
        from fyp.datasets.kuairec_ear import import_kuairec_ear
        from fyp.regions.deployment import Deployment

        with Deployment.open(directory) as d, RichProgress() as progress:
            report = import_kuairec_ear(
                d, data, progress=progress, parallel=False if sequential else None
            )
        print_report(report)

    @imports.command("kuairec", help=OFFICIAL_HELP)
    def import_official(
        directory: Path = DirArg,
        data: Path = typer.Option(..., "--data", help="Folder with big/small_matrix.csv."),
        split_protocol: bool = typer.Option(
            False,
            "--split-protocol",
            help="Train on big minus small pairs; the small matrix becomes the test set.",
        ),
    ) -> None:
        from fyp.datasets.official import import_kuairec
        from fyp.regions.deployment import Deployment

        with Deployment.open(directory) as d, RichProgress() as progress:
            report = import_kuairec(d, data, split_protocol=split_protocol, progress=progress)
        print_report(report)

    @app.command()
    def demo(
        directory: Path = typer.Option(
            Path("demo-deployment"), "--dir", help="Where to build (or reuse) the demo."
        ),
        serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve it afterwards."),
        host: str = typer.Option("127.0.0.1", help="Interface to bind."),
        port: int = typer.Option(8000, min=1, max=65535, help="Port to bind."),
        regions: str = typer.Option("us,eu", help="Regions of a new demo deployment."),
    ) -> None:
        """Build a demo deployment from the bundled real KuaiRec sample, then serve it."""
        from fyp.cli.deploy import pin_blas_threads, serve_directory
        from fyp.datasets.demo import build_demo

        if serve:
            pin_blas_threads()
        names = region_list(regions)
        with RichProgress() as progress:
            built = build_demo(directory, names, progress=progress)
        print_report(built.report)
        for region, version in built.model_versions.items():
            console.print(f"trained region {region}: model {version}")
        console.print(
            "data: KuaiRec (Gao et al., CIKM 2022), CC BY-SA 4.0; see "
            "fyp/datasets/sample/ATTRIBUTION.md"
        )
        print_examples(built, host, port)
        if serve:
            serve_directory(directory, host, port)
