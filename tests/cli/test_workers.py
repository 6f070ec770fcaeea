"""``fyp serve --workers N`` (``fyp.cli.workers``): real servers of two worker processes,
found through /proc, their counters through the server's private metrics directory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fyp.cli.workers import _error
from fyp.errors import ConfigError, ServerError, StorageError

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _fyp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fyp", *args], capture_output=True, text=True, check=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> dict[int, bytes]:
    """The processes whose parent is ``pid``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _workers(pid: int) -> set[int]:
    return {p for p, cmd in _children(pid).items() if b"worker_main" in cmd}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Serving:
    """``fyp serve DEP --workers 2 ARGS`` of a new deployment; its output in files, its
    private directory (the metrics files) under ``tmp_path/tmp``."""

    def __init__(self, tmp_path: Path, toml_edits: dict[str, str], child: str, *args: str):
        self.dep = tmp_path / "d"
        assert _fyp("init", str(self.dep), "--regions", "us").returncode == 0
        toml = self.dep / "fyp.toml"
        text = toml.read_text(encoding="utf-8")
        for old, new in toml_edits.items():
            text = text.replace(old, new)
        toml.write_text(text, encoding="utf-8")
        self.key = (self.dep / "admin.key").read_text().strip()
        self.port = _free_port()
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.out, self.err = tmp_path / "out.txt", tmp_path / "err.txt"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys\n"
                    "from fyp.regions.background import ChildScheduler\n"
                    f"ChildScheduler.program = (sys.executable, '-c', {child!r})\n"
                    f"sys.argv = ['fyp', 'serve', {str(self.dep)!r}, '--port', "
                    f"'{self.port}', '--workers', '2', *{args!r}]\n"
                    "from fyp.cli.app import main\n"
                    "main()\n",
                ],
                stdout=out,
                stderr=err,
                env={**os.environ, "TMPDIR": str(self.tmp)},
            )
        deadline = time.monotonic() + 60
        while "serving" not in self.out.read_text():  # once every worker serves
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, "the server never said it was serving"
            time.sleep(0.05)

    def get(self, path: str, key: str | None = None) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
            body: bytes = resp.read()
            return body

    def counted(self, name: str, **labels: str) -> float:
        text = self.get("/metrics", self.key).decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def metrics_files(self) -> dict[str, dict[str, object]]:
        [directory] = self.tmp.glob("fyp-serve-*")
        return {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


HEALTHZ = {"route": "/healthz", "method": "GET", "status": "200"}


def _wait_for(what: str, check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_two_workers_serve_count_together_run_the_schedules_once_and_stop(
    tmp_path: Path,
) -> None:
    """Requests reach both workers and /metrics, whichever worker answers, counts them
    all; training due every 0.3 s runs in the supervisor only; SIGTERM ends everything
    (workers, training child, metrics directory) with exit 0."""
    marker = tmp_path / "ran"
    child = (
        "import os, time\n"
        f"open({str(marker)!r}, 'a').write(f'{{os.getppid()}}\\n')\n"
        "time.sleep(0.2)\n"
    )
    server = Serving(
        tmp_path,
        {
            "every_minutes = 60.0": "every_minutes = 0.005",
            "check_every_minutes = 10.0": "check_every_minutes = 0",
        },
        child,
    )
    try:
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        for _ in range(40):  # a new connection each: the kernel hands them to either worker
            assert json.loads(server.get("/healthz"))["status"] == "ok"
            for worker in workers:
                assert not _children(worker), "a worker started a child: schedules run there"
        _wait_for(
            "/metrics never counted the 40 requests",
            lambda: server.counted("fyp_http_requests_total", **HEALTHZ) == 40,
        )
        answered = {
            name: sum(n for route, *_, n in snap["requests"] if route == "/healthz")  # type: ignore[attr-defined]
            for name, snap in server.metrics_files().items()
            if name != "supervisor"
        }
        assert sorted(answered) == ["w1", "w2"] and sum(answered.values()) == 40
        assert all(answered.values()), f"one worker answered every request: {answered}"
        # the schedules: every training child is the supervisor's, and counted
        assert marker.exists()
        assert set(marker.read_text().split()) == {str(server.proc.pid)}
        _wait_for(  # the supervisor's counts, written about once a second
            "the training runs were not counted",
            lambda: server.counted("fyp_background_runs_total", schedule="fyp-training") >= 1,
        )
        [directory] = server.tmp.glob("fyp-serve-*")
        code = server.stop()
        assert code == 0, server.err.read_text()
        assert not any(_alive(pid) for pid in workers), "a worker outlived the server"
        assert not _children(server.proc.pid)
        assert not directory.exists(), "the metrics directory was left behind"
    finally:
        server.stop()
    runs = len(marker.read_text().split())
    time.sleep(0.5)
    assert len(marker.read_text().split()) == runs  # no schedule left running


def test_a_supervisor_killed_with_sigkill_leaves_a_directory_the_next_start_removes(
    tmp_path: Path,
) -> None:
    """``kill -9`` runs no ``finally``: the metrics directory stays, and its workers stop
    on their own; the next server's start (``shared_directory``) removes it."""
    from fyp.serving.metrics import shared_directory

    server = Serving(tmp_path, {}, "pass")
    try:
        workers = _workers(server.proc.pid)
        [directory] = server.tmp.glob("fyp-serve-*")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        _wait_for("a worker outlived its killed supervisor", lambda: not any(map(_alive, workers)))
        assert directory.exists()
        made = shared_directory(server.port, parent=server.tmp)
        assert not directory.exists()
        assert [p.name for p in server.tmp.glob("fyp-serve-*")] == [made.name]
    finally:
        server.stop()


def test_sighup_reaches_every_worker_and_a_killed_one_is_replaced_keeping_its_counts(
    tmp_path: Path,
) -> None:
    only_on_sighup = {"config_check_seconds = 5.0": "config_check_seconds = 0"}
    server = Serving(tmp_path, only_on_sighup, "pass", "--no-schedules")
    try:
        toml = server.dep / "fyp.toml"
        text = toml.read_text(encoding="utf-8")
        toml.write_text(
            text.replace("[regions.us.policy]\n", '[regions.us.policy]\nbanned_terms = ["x"]\n')
        )
        server.proc.send_signal(signal.SIGHUP)
        _wait_for(  # each worker's own line: both applied the edit
            "SIGHUP did not reach both workers",
            lambda: server.err.read_text().count("fyp-config: applied fyp.toml") == 2,
        )
        for _ in range(10):
            server.get("/healthz")
        _wait_for(
            "10 requests never counted",
            lambda: server.counted("fyp_http_requests_total", **HEALTHZ) == 10,
        )
        first, second = sorted(_workers(server.proc.pid))
        os.kill(first, signal.SIGKILL)
        _wait_for(
            "the killed worker was not replaced",
            lambda: len(workers := _workers(server.proc.pid)) == 2 and first not in workers,
        )
        assert second in _workers(server.proc.pid)
        for _ in range(5):
            server.get("/healthz")
        # the 10 answered before, wherever: none lost with the dead worker
        _wait_for(
            "counts went back", lambda: server.counted("fyp_http_requests_total", **HEALTHZ) == 15
        )
        assert server.stop() == 0
    finally:
        server.stop()
    err = server.err.read_text()
    assert f"(pid {first}) died (signal 9): starting another" in err, err


def test_a_bad_deployment_fails_fast_with_the_workers_error(tmp_path: Path) -> None:
    """A missing store: the supervisor finds it (it opens the deployment for the
    schedules), and with --no-schedules the workers do: the same one line, exit 3,
    no restart loop. A busy port: one line too."""
    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us").returncode == 0
    store = dep / "regions" / "us" / "store.sqlite"
    store.rename(tmp_path / "moved.sqlite")
    for extra in ([], ["--no-schedules"]):
        for _ in range(3):  # a port found free may be taken (a client's) before serve binds it
            port = str(_free_port())
            done = _fyp("serve", str(dep), "--port", port, "--workers", "2", *extra)
            if "Address already in use" not in done.stderr:
                break
        assert done.returncode == 3, done.stderr
        line = done.stderr.strip()
        assert "Traceback" not in line and len(line.splitlines()) == 1, line
        assert "storage_error" in line and "region 'us'" in line and str(store) in line
        assert "serving" not in done.stdout
        assert not store.exists()
    with socket.socket() as busy:  # and a busy port, before anything else
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        done = _fyp("serve", str(dep), "--port", port, "--workers", "2")
    assert done.returncode == 3 and done.stderr.strip().splitlines() == [
        f"error (server_error): cannot listen on 127.0.0.1:{port}: Address already in use"
    ], done.stderr


def test_a_workers_error_comes_back_as_its_own_class() -> None:
    """What a worker reports (its code and message) is raised in the supervisor as the
    same error class: the CLI prints the same line and exits with the same code."""
    error = _error({"error": "region 'us': gone", "code": "storage_error"}, "")
    assert type(error) is StorageError and error.message == "region 'us': gone"
    assert type(_error({"error": "bad", "code": "config_error"}, "")) is ConfigError
    assert type(_error({"error": "x", "code": "no_such_code"}, "")) is ServerError
    quiet = _error(None, "a worker exited (code 3) before it served: see its log")
    assert type(quiet) is ServerError and "before it served" in quiet.message


# A stand-in worker (``WORKER_PROGRAM``): w1 serves, then dies once the file DIE_AFTER
# names exists; every later one (and with EVERY_ONE_FAILS set, w1 too) reports a store
# error before serving.
_STAND_IN = """
import json, os, sys, time
settings = json.loads(sys.argv[1])
status = os.fdopen(settings["status_fd"], "w")
if settings["name"] == "w1" and not os.environ.get("EVERY_ONE_FAILS"):
    status.write(json.dumps({"ready": os.getpid()}) + "\\n")
    status.flush()
    while not os.path.exists(os.environ["DIE_AFTER"]):
        time.sleep(0.01)
    sys.exit(0)
status.write(json.dumps({"error": "region 'us': the store is gone", "code": "storage_error"}))
status.write("\\n")
sys.exit(3)
"""


def _supervisor(tmp_path: Path, count: int) -> tuple[object, socket.socket]:
    from fyp.cli.workers import Supervisor

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return Supervisor({}, sock, count, tmp_path), sock


def test_a_failure_at_start_stops_at_once_with_the_workers_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fyp.cli.workers as workers

    monkeypatch.setattr(workers, "WORKER_PROGRAM", (sys.executable, "-c", _STAND_IN))
    monkeypatch.setenv("EVERY_ONE_FAILS", "1")
    supervisor, sock = _supervisor(tmp_path, 2)
    assert isinstance(supervisor, workers.Supervisor)
    with sock, pytest.raises(StorageError, match="the store is gone"):
        try:
            supervisor.start()
        finally:
            supervisor.terminate()
            supervisor.wait()
    assert supervisor._started == 2  # the two first workers: none started again


def test_replacements_that_keep_failing_stop_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that served and died is replaced; replacements that cannot start are
    tried again after a pause, and the third failure in a row is the server's error."""
    import fyp.cli.workers as workers

    monkeypatch.setattr(workers, "WORKER_PROGRAM", (sys.executable, "-c", _STAND_IN))
    monkeypatch.setenv("DIE_AFTER", str(tmp_path / "die"))
    supervisor, sock = _supervisor(tmp_path, 1)
    assert isinstance(supervisor, workers.Supervisor)
    caplog.set_level("INFO", "fyp.workers")
    with sock:
        try:
            assert supervisor.start()
            (tmp_path / "die").touch()
            started = time.monotonic()
            with pytest.raises(StorageError, match="the store is gone"):
                supervisor.supervise()
            assert time.monotonic() - started >= 1.0 + 2.0  # the pauses between tries
        finally:
            supervisor.terminate()
            supervisor.wait()
    assert supervisor._started == 1 + workers.MAX_START_FAILURES
    text = caplog.text
    assert "worker w1" in text and "died (code 0): starting another" in text
    assert text.count("could not start (code 3): region 'us': the store is gone") == 2
