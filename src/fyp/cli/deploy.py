"""Deployment commands: init, serve, status."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from fyp.cli.app import console
from fyp.config import region_list
from fyp.errors import ServerError

if TYPE_CHECKING:
    import uvicorn

    from fyp.config import DeploymentConfig
    from fyp.moderation import Moderator
    from fyp.regions.background import ChildScheduler
    from fyp.regions.deployment import Deployment

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def pin_blas_threads() -> None:
    """One BLAS thread per serving process: parallelism comes from processes, not BLAS."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        directory: Path = DirArg,
        regions: str = typer.Option("us,eu", help="Comma-separated region names."),
        name: str | None = typer.Option(None, help="Deployment name (default: dir name)."),
        store: str | None = typer.Option(
            None,
            help="Store URL with {region} in it, e.g. "
            "postgresql://fyp@db/fyp?schema=fyp_{region} (default: a SQLite file per region).",
        ),
        served_log: str | None = typer.Option(
            None,
            "--served-log",
            help="Redis URL with {region} in it for each region's served log, e.g. "
            "redis://redis-{region}.internal:6379/0, its Sentinels' "
            "redis+sentinel://s1:26379,s2:26379/fyp-{region}/0, or a cluster's "
            "redis+cluster://n1-{region}:6379,n2-{region}:6379; rediss… for TLS "
            "(default: in the region's store).",
        ),
    ) -> None:
        """Create a deployment: fyp.toml, one store per region, an admin key."""
        from fyp.access.keys import ensure_admin_key
        from fyp.regions.deployment import Deployment
        from fyp.storage.postgres_dialect import redact

        with Deployment.init(directory, region_list(regions), name, store, served_log) as d:
            key_file, _ = ensure_admin_key(d)
            console.print(
                f"created deployment [bold]{escape(d.config.name)}[/] in {escape(str(directory))}"
            )
            for r in d.regions:
                url = redact(d.config.resolve_url(d.config.region(r).store))
                console.print(f"  region {r}: {url}", markup=False)
                log = d.config.region(r).served_log
                if log is not None:
                    console.print(f"    served log: {redact(log)}", markup=False, soft_wrap=True)
            console.print(
                f"  admin key (every region, mode 0600): {key_file}\n"
                f'  send it as: -H "Authorization: Bearer $(cat {key_file})"',
                markup=False,
                soft_wrap=True,
            )

    @app.command()
    def serve(
        directory: Path = DirArg,
        host: str = typer.Option("127.0.0.1", help="Interface to bind."),
        port: int = typer.Option(8000, min=1, max=65535, help="Port to bind."),
        root_path: str = typer.Option(
            "", help="Path prefix a reverse proxy serves the API under (e.g. /fyp)."
        ),
        log_level: str = typer.Option(
            "info", help="debug, info, warning or error (records go to stderr, timestamped)."
        ),
        access_log: bool = typer.Option(
            False, "--access-log", help="Also log one line per request (costs throughput)."
        ),
        schedules: bool = typer.Option(
            True,
            "--schedules/--no-schedules",
            help="Run the background schedules (training, erasure retrains, moderation) "
            "on this host; with several hosts, --no-schedules on all but the chosen ones.",
        ),
        workers: int = typer.Option(
            1,
            min=1,
            help="Worker processes serving the port (each loads the models; the "
            "schedules run once, in their supervisor): at most one per core.",
        ),
    ) -> None:
        """Serve the HTTP API (OpenAPI docs at /docs)."""
        from fyp.serving.logs import LEVELS

        if log_level not in LEVELS:
            raise typer.BadParameter(
                f"one of {', '.join(LEVELS)}, got {log_level!r}", param_hint="--log-level"
            )
        if root_path and (not root_path.startswith("/") or root_path.endswith("/")):
            raise typer.BadParameter(
                f"a root path starts with / and does not end with one, got {root_path!r}",
                param_hint="--root-path",
            )
        pin_blas_threads()  # the workers inherit the environment variables too
        if workers > 1:
            from fyp.cli.workers import serve_workers

            serve_workers(
                directory, host, port, workers, root_path, log_level, access_log, schedules
            )
            return
        serve_directory(directory, host, port, root_path, log_level, access_log, schedules)

    @app.command()
    def status(directory: Path = DirArg) -> None:
        """Row counts and schema version of every region's store, where the store and
        the served log are, and whether the served log answers."""
        from fyp.regions.deployment import Deployment
        from fyp.storage.postgres_dialect import redact
        from fyp.storage.served_logs import served_log_state

        with Deployment.open(directory) as d:
            table = Table("region", "schema", "users", "videos", "events", "labels", "served log")
            lines = []
            for r, s in d.stores.items():
                where, problem = served_log_state(d.served_log(r))
                kind = "store" if where == "store" else where.split(":", 1)[0]
                table.add_row(
                    r,
                    str(s.schema_version()),
                    f"{s.count_users():,}",
                    f"{s.count_videos():,}",
                    f"{s.count_events():,}",
                    f"{s.count_labels():,}",
                    kind if problem is None else f"{kind} (unreachable)",
                )
                place = "in the store" if where == "store" else f"on {where}"
                state = "reachable" if problem is None else f"UNREACHABLE: {problem}"
                lines += [f"  {r}: store {redact(s.url)}", f"    served log {place}, {state}"]
            console.print(table)
            for line in lines:  # whole URLs and reasons, which a table cell would cut
                console.print(line, markup=False, soft_wrap=True)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says the server is up: a busy port
    is one line (exit 3), not a "serving on" followed by uvicorn's error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))  # uvicorn listens on it once the app is ready
    except OSError as exc:
        sock.close()
        raise ServerError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", host=host, port=port
        ) from exc
    sock.set_inheritable(True)
    return sock


def build_schedules(
    config: DeploymentConfig, deployment: Deployment, moderator: Moderator
) -> list[ChildScheduler]:
    """The host's background children: erasure deadlines, what changed, what no check
    has judged yet, blocks' other sides still owed (started by the caller)."""
    from fyp.catalog.blocks_check import BlocksScheduler
    from fyp.models.schedule import TrainingScheduler
    from fyp.moderation.schedule import ModerationScheduler
    from fyp.regions.live_config import record_policy_in_force
    from fyp.sovereignty.consent_log import withdrawal_deadline
    from fyp.sovereignty.scheduler import ErasureScheduler

    record_policy_in_force(deployment)  # edited while no host ran: deadlines count from now
    return [
        ErasureScheduler(config, partial(withdrawal_deadline, deployment)),
        TrainingScheduler(config),
        ModerationScheduler(config, moderator.run_reason, moderator.policy_digest),
        BlocksScheduler(config, deployment),
    ]


NO_SCHEDULES = (
    "--no-schedules: this host runs no training, erasure retrain, moderation or "
    "settling of blocks; "
    "another host (or cron) must"
)


def serve_directory(
    directory: Path,
    host: str,
    port: int,
    root_path: str = "",
    log_level: str = "info",
    access_log: bool = False,
    run_schedules: bool = True,
) -> None:
    import uvicorn

    from fyp.serving import logs

    logs.configure(log_level)
    from fyp.serving.app import create_app

    class Server(uvicorn.Server):
        """Starts the schedules once uvicorn handles SIGTERM (a signal before that ends
        the process at once, which would leave a child of theirs running: each runs in
        a session of its own), and ends their children as part of shutdown: after a
        SIGTERM uvicorn raises the signal again once it is done, and the process ends
        right there."""

        def __init__(self, config: uvicorn.Config, schedules: list[ChildScheduler]) -> None:
            super().__init__(config)
            self.schedules = schedules

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                for schedule in self.schedules:
                    schedule.start()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            await asyncio.to_thread(stop_all, self.schedules)

    sock = bind(host, port)  # first: a busy port fails before the models are loaded
    try:
        app = create_app(directory)
    except BaseException:
        sock.close()
        raise
    config = app.state.fyp.deployment.config  # the one the app has in force
    schedules: list[ChildScheduler] = []
    if run_schedules:
        schedules = build_schedules(config, app.state.fyp.deployment, app.state.fyp.moderator)
    else:
        logging.getLogger("fyp.background").info(NO_SCHEDULES)
    app.state.fyp.schedules = schedules  # their counts go to /metrics
    server = Server(uvicorn_config(app, host, port, root_path, access_log), schedules)
    gc.collect()
    gc.freeze()  # start-up objects never need collecting: shorter GC pauses while serving
    console.print(
        f"serving [bold]{directory}[/] on http://{host}:{port}{root_path}  "
        f"(API docs: http://{host}:{port}{root_path}/docs)"
    )
    reloader = app.state.fyp.reloader
    if reloader is not None and hasattr(signal, "SIGHUP"):  # re-read fyp.toml at once
        signal.signal(signal.SIGHUP, lambda _sig, _frame: reloader.wake())
    try:
        server.run(sockets=[sock])
    finally:
        stop_all(schedules)
        sock.close()


def uvicorn_config(
    app: Any, host: str, port: int, root_path: str, access_log: bool
) -> uvicorn.Config:
    """How every serving process runs the app (one, or each worker of several)."""
    import uvicorn

    from fyp.serving.transport import CoalescingHttpToolsProtocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        root_path=root_path,  # the hot routes and the router both match below it
        log_config=None,  # fyp.serving.logs configured uvicorn's loggers too
        access_log=access_log,
        http=CoalescingHttpToolsProtocol,  # one write per response (fyp.serving.transport)
    )


def stop_all(schedules: list[ChildScheduler]) -> None:
    for schedule in schedules:
        schedule.stop()
