"""``fyp init``, ``serve`` and ``status``: their input, a missing store, a busy port, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize("root_path", ["fyp", "/fyp/"])
def test_a_malformed_root_path_is_refused(tmp_path: Path, root_path: str) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--root-path", root_path])
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())  # unwrap rich's error panel
    assert "a root path starts with / and does not end with one" in words


def test_bad_input_to_init_serve_and_status_exits_2_in_one_line(tmp_path: Path) -> None:
    for args in (
        ["status", str(tmp_path / "nowhere")],
        ["init", str(tmp_path / "x"), "--regions", "US"],
        ["serve", str(tmp_path), "--port", "99999"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fyp", *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()  # nothing created for a bad region name
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "status", str(tmp_path / ("a-rather-long-name" * 6))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1  # no wrapping


def test_an_error_message_keeps_its_brackets(tmp_path: Path) -> None:
    """rich read ``[regions.eu.policy]`` in a message as markup and dropped it, so a
    config error no longer said where the mistake was."""
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "init", str(tmp_path / "d"), "--regions", "us,eu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    toml = tmp_path / "d" / "fyp.toml"
    text = toml.read_text(encoding="utf-8")
    assert "[regions.eu.policy]\n" in text
    text = text.replace("[regions.eu.policy]\n", '[regions.eu.policy]\nbanned_term = ["x"]\n')
    toml.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "moderate", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert "[regions.eu.policy]" in done.stderr, done.stderr


def _fyp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fyp", *args], capture_output=True, text=True, check=False
    )


def _one_line(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert done.returncode == code, done.stderr
    line = done.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1, line
    for word in words:
        assert word in line, line
    return line


def test_init_refuses_a_file_and_bad_region_lists_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    _one_line(_fyp("init", str(tmp_path / "afile")), 2, "is a file, not a directory")
    _one_line(_fyp("init", str(tmp_path / "d"), "--regions", "us,us"), 2, "us more than once")
    _one_line(_fyp("init", str(tmp_path / "d"), "--regions", ""), 2, "names no region")
    _one_line(_fyp("init", str(tmp_path / "d"), "--regions", " , "), 2, "names no region")
    assert not (tmp_path / "d").exists()


def test_a_missing_store_stops_every_command_but_region_add(tmp_path: Path) -> None:
    """``mv store.sqlite elsewhere; fyp status`` showed the region with 0 users (a new
    empty file) and ``fyp serve`` served it: now both refuse, naming region and path."""
    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us,eu").returncode == 0
    store = dep / "regions" / "us" / "store.sqlite"
    store.rename(tmp_path / "moved.sqlite")
    for args in (["status", str(dep)], ["serve", str(dep), "--port", "18503"]):
        _one_line(_fyp(*args), 3, "storage_error", "region 'us'", str(store))
        assert not store.exists()
    _one_line(_fyp("region", "add", str(dep), "eu"), 2, "region 'eu' already has a store")
    done = _fyp("region", "add", str(dep), "us")
    assert done.returncode == 0, done.stderr
    assert store.is_file() and "fyp keys create" in done.stdout
    assert _fyp("status", str(dep)).returncode == 0


def test_status_counts_rows_and_says_where_each_regions_store_and_served_log_are(
    tmp_path: Path,
) -> None:
    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us,eu").returncode == 0
    done = runner.invoke(app, ["status", str(dep)])
    assert done.exit_code == 0, done.output
    for region in ("us", "eu"):
        store = dep.resolve() / "regions" / region / "store.sqlite"
        assert f"  {region}: store sqlite:///{store}\n    served log in the store, reachable" in (
            done.output
        )
    assert "served log" in done.output.splitlines()[1]  # the table's column


def test_a_busy_port_is_one_line_before_anything_says_serving(tmp_path: Path) -> None:
    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us").returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))  # a port nothing else holds, then busy: ours
        busy.listen()
        port = busy.getsockname()[1]
        done = _fyp("serve", str(dep), "--port", str(port))
    _one_line(done, 3, f"cannot listen on 127.0.0.1:{port}")
    assert "serving" not in done.stdout


def _serve_training_often(
    tmp_path: Path, port: int, child: str, *args: str, setup: str = ""
) -> subprocess.Popen[str]:
    """``fyp serve`` of a new deployment that trains every 0.3 s, each run being
    ``python -c CHILD`` in place of ``fyp train``; ``setup``: code run in the server
    first (``ChildScheduler`` imported)."""
    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us").returncode == 0
    toml = dep / "fyp.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace("every_minutes = 60.0", "every_minutes = 0.005")
    text = text.replace("check_every_minutes = 10.0", "check_every_minutes = 0")
    toml.write_text(text, encoding="utf-8")
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from fyp.regions.background import ChildScheduler\n"
            f"ChildScheduler.program = (sys.executable, '-c', {child!r})\n"
            f"{setup}\n"
            f"sys.argv = ['fyp', 'serve', {str(dep)!r}, '--port', '{port}', *{args!r}]\n"
            "from fyp.cli.app import main\n"
            "main()\n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_ends_the_training_child_the_server_started(tmp_path: Path) -> None:
    """``kill -TERM`` to ``fyp serve`` left its scheduled ``fyp train`` child running (it
    published a model 9 s later). The child here stands in for a long training run."""
    marker = tmp_path / "child.pid"
    child = (
        "import os, pathlib, time\n"
        f"pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    server = _serve_training_often(tmp_path, 18505, child)
    pid = None
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()):
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "no child started"
            time.sleep(0.05)
        pid = int(marker.read_text())
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pid = None  # gone with the server
        assert pid is None, "the child outlived the server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if pid is not None:  # the old behaviour: clean up the child this test started
            os.kill(pid, signal.SIGKILL)


def test_schedules_start_only_once_sigterm_is_handled(tmp_path: Path) -> None:
    """The schedules started before uvicorn took over SIGTERM: a SIGTERM in between
    ended the server at once, leaving a child of theirs running (in a session of its
    own), as the test above saw now and then under load. Each schedule must start with
    uvicorn's handler in place."""
    seen = tmp_path / "handlers"
    setup = (
        "import signal\n"
        "_start = ChildScheduler.start\n"
        "def start(self):\n"
        f"    open({str(seen)!r}, 'a').write(repr(signal.getsignal(signal.SIGTERM)) + '\\n')\n"
        "    _start(self)\n"
        "ChildScheduler.start = start\n"
    )
    server = _serve_training_often(tmp_path, 18509, "pass", setup=setup)
    try:
        deadline = time.monotonic() + 30
        while not seen.exists():
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "no schedule started"
            time.sleep(0.05)
        time.sleep(0.2)  # every schedule of the server has started by now
        handlers = seen.read_text().splitlines()
        assert handlers and all("handle_exit" in h for h in handlers), handlers
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_no_schedules_runs_no_child_on_this_host(tmp_path: Path) -> None:
    """``--no-schedules`` pins background work to other hosts: training due every
    0.3 s starts no child here in 1.5 s of serving."""
    marker = tmp_path / "ran"
    server = _serve_training_often(
        tmp_path, 18507, f"open({str(marker)!r}, 'a').write('x')", "--no-schedules"
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # up: answering
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the server never answered"
            try:
                with urllib.request.urlopen("http://127.0.0.1:18507/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(1.5)
        assert not marker.exists()
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert "--no-schedules: this host runs no training" in err


def test_the_server_moderates_an_upload_without_an_operator(tmp_path: Path) -> None:
    """An upload made while ``fyp serve`` runs is judged by the server's moderation
    child (``[moderation] every_seconds``), with no ``fyp moderate`` from anyone."""
    from fyp.catalog.models import UserIn, VideoIn
    from fyp.catalog.service import Catalog
    from fyp.moderation.service import cell
    from fyp.regions.deployment import Deployment

    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us").returncode == 0
    toml = dep / "fyp.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace("every_minutes = 60.0", "every_minutes = 0")
    text = text.replace("check_every_minutes = 10.0", "check_every_minutes = 0")
    text = text.replace("every_seconds = 30.0", "every_seconds = 0.2")
    toml.write_text(text, encoding="utf-8")
    server = subprocess.Popen(
        [sys.executable, "-m", "fyp", "serve", str(dep), "--port", "18506"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Deployment.open(dep) as d:
            catalog = Catalog(d)
            catalog.create_user(UserIn(user_id="c1", home_region="us", birth_year=1990))
            catalog.create_video(
                VideoIn(video_id="up1", creator_id="c1", duration_ms=9_000, regions=["us"])
            )
            mod = cell(d.store("us")).mod
            deadline = time.monotonic() + 60
            while (record := mod.get("up1")) is None or record.state == "pending":
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the upload was never judged"
                time.sleep(0.1)
            assert record.state == "approved" and record.decided_by != "catalog"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)


def test_the_access_log_has_a_line_per_request(tmp_path: Path) -> None:
    dep = tmp_path / "d"
    assert _fyp("init", str(dep), "--regions", "us").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["serve", str(dep), "--port", str(port), "--access-log", "--no-schedules"]
    server = subprocess.Popen(
        [sys.executable, "-m", "fyp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the server never answered"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        for _ in range(5):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                pass
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    access = [line for line in err.splitlines() if "uvicorn.access" in line]
    # the probe's answer (after any refused connections) and these five, each a line
    assert sum('"GET /healthz HTTP/1.1" 200' in line for line in access) == 6, access


def test_a_failed_init_leaves_nothing_and_a_retry_works(tmp_path: Path) -> None:
    """A bad --store scheme exited 3 and, like an unreachable store, left fyp.toml and
    region folders without an admin key behind: the retry was refused already_exists."""
    target = tmp_path / "x"
    for store, code in (
        ("mysql://x/{region}", 2),  # bad input
        (f"sqlite:///{tmp_path}/file/{{region}}.db", 3),  # a store that cannot be opened
        ("postgresql://nobody@127.0.0.1:1/fyp?schema=fyp_{region}", 3),  # psycopg: 2 lines
    ):
        (tmp_path / "file").write_text("x")
        done = subprocess.run(
            [sys.executable, "-m", "fyp", "init", str(target), "--store", store],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == code, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert not target.exists()
    result = runner.invoke(app, ["init", str(target), "--regions", "us"])
    assert result.exit_code == 0, result.output
    assert (target / "admin.key").is_file()
