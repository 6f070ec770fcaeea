"""``fyp serve DIR --workers N``: N worker processes on one port, under a supervisor.

Feed serving is CPU-bound Python: one process uses one core. The supervisor (the
``fyp serve`` process) binds the port, then starts N workers, each a fresh interpreter
(``subprocess``: fork and exec at once) that is handed the listening socket and a pipe
back, builds its own app (``create_app``: models, stores, reloader) and serves on the
socket; the kernel gives each connection to one of them. Spawned, not forked, because
the supervisor has things open that must not be shared: its own deployment (the
schedules read the stores), their threads and locks. A fork would copy SQLite
connections (SQLite forbids using one across a fork) and held locks into every worker;
an exec'd worker gets only the two descriptors it is given.

The supervisor keeps what runs once per host:

- the background schedules (``build_schedules``: training, erasure, moderation, blocks), with
  a deployment and a ``Moderator`` of its own (policies, no models) and a config
  reloader that tells them of edits of ``fyp.toml``;
- the workers: one that dies is logged and replaced; one that fails before it serves
  (the app cannot be created) stops the whole server with that worker's error, at
  once at start, after :data:`MAX_START_FAILURES` in a row later;
- signals: SIGTERM and SIGINT stop every worker gracefully (uvicorn's shutdown) and
  the schedules' children, then exit 0; SIGHUP makes every worker, and the supervisor,
  re-read ``fyp.toml`` at once;
- the directory where the workers share their counters for ``/metrics``
  (``fyp.serving.metrics.SharedCounts``), removed at exit (one a ``kill -9`` left is
  removed by the next server's start, ``shared_directory``).

A worker whose supervisor is gone (``kill -9``) stops itself within a second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fyp.errors import FypError, ServerError

if TYPE_CHECKING:
    from fyp.config import DeploymentConfig
    from fyp.serving.metrics import ServerMetrics

log = logging.getLogger("fyp.workers")
WORKER_PROGRAM: tuple[str, ...] = (
    sys.executable,
    "-c",
    "from fyp.cli.workers import worker_main; worker_main()",
)
"""What a worker runs, before its one argument (its settings, as JSON)."""
SHARE_EVERY_S = 1.0  # how often a worker writes its counters, and looks for its supervisor
MAX_START_FAILURES = 3  # replacements in a row that fail before serving: the server stops
STOP_GRACE_S = 30.0  # a worker still running this long after SIGTERM is killed
POLL_S = 0.2


@dataclass
class _Worker:
    name: str  # w1, w2, …: never reused, so a dead worker's counters file stays its own
    process: subprocess.Popen[bytes]
    status: int  # the read end of its pipe: one JSON line "ready", or its error
    buffer: bytes = b""
    ready: bool = False
    error: dict[str, Any] | None = None


@dataclass
class Supervisor:
    """Starts, watches, replaces and stops the workers of one server."""

    settings: dict[str, Any]
    sock: socket.socket
    count: int
    metrics_dir: Path
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False
    hup: bool = False
    failures: int = 0  # starts in a row that ended before serving
    _started: int = 0
    _due: list[float] = field(default_factory=list)  # when to start a replacement
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def spawn(self) -> _Worker:
        self._started += 1
        name = f"w{self._started}"
        read, write = os.pipe()
        settings = {
            **self.settings,
            "fd": self.sock.fileno(),
            "status_fd": write,
            "name": name,
            "metrics_dir": str(self.metrics_dir),
        }
        try:
            process = subprocess.Popen(
                [*WORKER_PROGRAM, json.dumps(settings)], pass_fds=(self.sock.fileno(), write)
            )
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)  # the worker's now: EOF when it exits
        os.set_blocking(read, False)
        worker = _Worker(name, process, read)
        self._selector.register(read, selectors.EVENT_READ, worker)
        self.workers.append(worker)
        log.debug(f"worker {name} started (pid {process.pid})")  # before it says anything
        return worker

    def start(self) -> bool:
        """Start the workers and wait until every one serves (True), or a stop signal
        (False). Raises the error of a worker that could not start."""
        for _ in range(self.count):
            self.spawn()
        while not self.stopping:
            self.poll(starting=True)
            if len(self.workers) == self.count and all(w.ready for w in self.workers):
                return True
        return False

    def supervise(self, tick: Any = None) -> None:
        """Watch the workers until a stop signal; ``tick()`` about once a second."""
        last = 0.0
        while not self.stopping:
            self.poll(starting=False)
            if tick is not None and time.monotonic() - last >= SHARE_EVERY_S:
                last = time.monotonic()
                tick()

    def poll(self, starting: bool) -> None:
        """One round: read what the workers said, handle those that died, start the
        replacements that are due."""
        for key, _ in self._selector.select(POLL_S):
            self._read(key.data)
        for worker in list(self.workers):
            code = worker.process.poll()
            if code is not None:
                self._died(worker, code, starting)
        now = time.monotonic()
        for due in [d for d in self._due if d <= now]:
            self._due.remove(due)
            if not self.stopping:
                self.spawn()

    def _read(self, worker: _Worker) -> bool:
        """Read what the worker said; False once there is nothing more to read now."""
        if worker.status < 0:  # read to its end already
            return False
        try:
            data = os.read(worker.status, 65536)
        except BlockingIOError:
            return False
        if not data:
            self._close(worker)
            return False
        worker.buffer += data
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            said = json.loads(line)
            if "ready" in said:
                worker.ready = True
                self.failures = 0
                log.info(f"worker {worker.name} (pid {worker.process.pid}) is serving")
            elif "error" in said:
                worker.error = said
        return True

    def _close(self, worker: _Worker) -> None:
        if worker.status >= 0:
            self._selector.unregister(worker.status)
            os.close(worker.status)
            worker.status = -1

    def _died(self, worker: _Worker, code: int, starting: bool) -> None:
        while self._read(worker):  # what it said before it exited
            pass
        self._close(worker)
        self.workers.remove(worker)
        if self.stopping:  # a Ctrl-C reaches the workers too
            return
        how = f"signal {-code}" if code < 0 else f"code {code}"
        if worker.ready:
            log.warning(
                f"worker {worker.name} (pid {worker.process.pid}) died ({how}): starting another"
            )
            self._due.append(time.monotonic())
            return
        self.failures += 1
        error = _error(worker.error, f"a worker exited ({how}) before it served: see its log")
        if starting or self.failures >= MAX_START_FAILURES:
            raise error
        log.error(
            f"worker {worker.name} (pid {worker.process.pid}) could not start ({how}): "
            f"{error.message}; trying again"
        )
        self._due.append(time.monotonic() + 0.5 * 2**self.failures)

    def forward_hup(self) -> None:
        """Every worker serving re-reads fyp.toml now (one still starting reads it anyway)."""
        for worker in self.workers:
            if worker.ready and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def terminate(self) -> None:
        """SIGTERM to every worker: uvicorn's graceful shutdown."""
        self.stopping = True
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)

    def wait(self, grace_s: float = STOP_GRACE_S) -> None:
        """Until every worker has exited (killed past ``grace_s``); then nothing is left."""
        deadline = time.monotonic() + grace_s
        for worker in self.workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(f"worker {worker.name} (pid {worker.process.pid}): killed")
                worker.process.kill()
                worker.process.wait()
            self._close(worker)
        self.workers.clear()
        self._selector.close()


def _error(said: dict[str, Any] | None, otherwise: str) -> FypError:
    """The error a worker reported, as the same class (same code, same exit)."""
    if said is None:
        return ServerError(otherwise)
    code, message = str(said.get("code", "")), str(said["error"])
    pending: list[type[FypError]] = [FypError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls(message)
        pending += cls.__subclasses__()
    return ServerError(message)


class HostSchedules:
    """The host's schedules, run by the supervisor on a deployment of its own (its
    stores and moderation policies, no model), with a reloader that applies edits of
    ``fyp.toml`` to them as a worker's applies them to its app."""

    def __init__(self, config: DeploymentConfig, sha256: str) -> None:
        from fyp.cli.deploy import build_schedules
        from fyp.moderation import Moderator
        from fyp.regions.deployment import Deployment
        from fyp.serving.reload import ConfigReloader

        self.deployment = Deployment(config)
        try:
            moderator = Moderator(self.deployment)  # a bad policy: its error, no worker
        except BaseException:
            self.deployment.close()
            raise
        self.schedules = build_schedules(config, self.deployment, moderator)
        self.reloader = ConfigReloader(self.deployment, [moderator], sha256)
        self.reloader.listeners.append(self._tell)

    def _tell(self, old: DeploymentConfig, new: DeploymentConfig) -> None:
        for schedule in self.schedules:
            schedule.config_changed(old, new)

    def start(self) -> None:
        self.reloader.start()
        for schedule in self.schedules:
            schedule.start()

    def stop(self) -> None:
        """End the schedules' children (up to their grace), then close."""
        from fyp.cli.deploy import stop_all

        stop_all(self.schedules)
        self.reloader.stop()
        self.deployment.close()


def serve_workers(
    directory: Path,
    host: str,
    port: int,
    count: int,
    root_path: str = "",
    log_level: str = "info",
    access_log: bool = False,
    run_schedules: bool = True,
) -> None:
    """``fyp serve --workers COUNT``: returns once every worker has stopped."""
    from fyp.cli.app import console
    from fyp.cli.deploy import NO_SCHEDULES, bind
    from fyp.config import read_config
    from fyp.serving import logs
    from fyp.serving.metrics import SharedCounts, schedule_rows, shared_directory

    logs.configure(log_level)
    sock = bind(host, port)  # first: a busy port fails before anything starts
    host_schedules: HostSchedules | None = None
    metrics_dir: Path | None = None
    supervisor: Supervisor | None = None
    handlers: dict[int, Any] = {}
    try:
        config, sha256 = read_config(directory)  # a bad fyp.toml: its error, no worker
        if run_schedules:
            host_schedules = HostSchedules(config, sha256)
        schedules = host_schedules.schedules if host_schedules is not None else []
        metrics_dir = shared_directory(port)  # mode 0700; a killed server's removed
        shared = SharedCounts(metrics_dir, "supervisor")
        started = time.time()

        def share() -> None:  # what the workers add to their counts at a scrape
            shared.write({"schedules": schedule_rows(schedules), "started": started})

        share()
        settings = {
            "directory": str(directory),
            "host": host,
            "port": port,
            "root_path": root_path,
            "log_level": log_level,
            "access_log": access_log,
        }
        supervisor = Supervisor(settings, sock, count, metrics_dir)
        handlers = _catch_signals(supervisor)
        if not supervisor.start():
            return
        console.print(
            f"serving [bold]{directory}[/] on http://{host}:{port}{root_path} with {count} "
            f"workers  (API docs: http://{host}:{port}{root_path}/docs)"
        )
        if host_schedules is not None:
            host_schedules.start()
        else:
            logging.getLogger("fyp.background").info(NO_SCHEDULES)

        def tick() -> None:
            if supervisor is not None and supervisor.hup:
                supervisor.hup = False
                supervisor.forward_hup()
                if host_schedules is not None:
                    host_schedules.reloader.wake()
            share()

        supervisor.supervise(tick)
    finally:
        if supervisor is not None:
            supervisor.terminate()
        if host_schedules is not None:
            host_schedules.stop()  # meanwhile the workers finish their requests
        if supervisor is not None:
            supervisor.wait()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _catch_signals(supervisor: Supervisor) -> dict[int, Any]:
    def stop(_sig: int, _frame: FrameType | None) -> None:
        supervisor.stopping = True

    def hup(_sig: int, _frame: FrameType | None) -> None:
        supervisor.hup = True

    old: dict[int, Any] = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGHUP"):
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, hup)
    return old


# -- a worker -------------------------------------------------------------------------


def worker_main() -> None:
    """A worker process (:data:`WORKER_PROGRAM`): build the app, say so, serve."""
    settings = json.loads(sys.argv[1])
    status = os.fdopen(settings["status_fd"], "w", encoding="utf-8", buffering=1)
    from fyp.cli.deploy import pin_blas_threads
    from fyp.serving import logs

    pin_blas_threads()
    logs.configure(settings["log_level"])
    sock = socket.socket(fileno=settings["fd"])
    try:
        _serve(settings, sock, status)
    except FypError as exc:
        _tell(status, {"error": exc.message, "code": exc.code})
        raise SystemExit(3) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        log.exception("worker %s could not start", settings["name"])
        _tell(status, {"error": f"a worker could not start: {exc!r}", "code": "server_error"})
        raise SystemExit(3) from None


def _serve(settings: dict[str, Any], sock: socket.socket, status: Any) -> None:
    import gc

    import uvicorn

    from fyp.cli.deploy import uvicorn_config
    from fyp.serving.app import create_app
    from fyp.serving.metrics import SharedCounts

    parent = os.getppid()
    app = create_app(Path(settings["directory"]))
    metrics: ServerMetrics = app.state.fyp.metrics
    metrics.shared = SharedCounts(Path(settings["metrics_dir"]), settings["name"])
    reloader = app.state.fyp.reloader
    if reloader is not None and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda _sig, _frame: reloader.wake())
    stop = threading.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                threading.Thread(
                    target=_share, args=(metrics, parent, stop), name="fyp-share", daemon=True
                ).start()
                _tell(status, {"ready": os.getpid()})

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            stop.set()
            metrics.flush()  # the last counts: they keep counting once this worker is gone

    server = Server(
        uvicorn_config(
            app, settings["host"], settings["port"], settings["root_path"], settings["access_log"]
        )
    )
    gc.collect()
    gc.freeze()
    server.run(sockets=[sock])


def _share(metrics: ServerMetrics, parent: int, stop: threading.Event) -> None:
    """Write the worker's counters about once a second; stop the worker if its
    supervisor is gone (it was killed: nobody would stop this one)."""
    while not stop.wait(SHARE_EVERY_S):
        try:
            metrics.flush()
        except OSError as exc:  # the directory is gone: the server is stopping
            log.warning("worker: cannot share the metrics: %s", exc)
        if os.getppid() != parent:
            log.error("worker: the supervisor (pid %d) is gone: stopping", parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _tell(status: Any, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone
        status.write(json.dumps(message) + "\n")
