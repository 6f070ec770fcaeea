"""Real ``fyp serve`` processes for tests: started on a free port, waited for until they
answer, their log kept in a file (a pipe nobody reads fills up and stalls the server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import tomli_w

START_TIMEOUT_S = 60.0
# ``python -c`` running ``fyp`` with the wall clock moved by argv[1] seconds (a host whose
# clock is off: time.time and time.time_ns, which everything in fyp reads the time from)
_SKEWED = """
import sys, time
offset_ns = int(float(sys.argv.pop(1)) * 1e9)
wall_ns, wall = time.time_ns, time.time
time.time_ns = lambda: wall_ns() + offset_ns
time.time = lambda: wall() + offset_ns / 1e9
from fyp.cli import main
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``fyp serve DIRECTORY`` process on loopback; :meth:`start` returns at once,
    :meth:`wait` until ``/healthz`` answers (the models are loaded before it listens)."""

    def __init__(
        self, directory: Path, log: Path, port: int | None = None, clock_offset_s: float = 0
    ) -> None:
        self.directory = directory
        self.log = log
        self.port = port or free_port()
        self.clock_offset_s = clock_offset_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        fyp = [sys.executable, "-m", "fyp"]
        if self.clock_offset_s:
            fyp = [sys.executable, "-c", _SKEWED, str(self.clock_offset_s)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*fyp, "serve", str(self.directory), "--port", str(self.port)],
                stdout=out,
                stderr=out,
            )
        return self

    def wait(self) -> Server:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy: {self.output()}")

    def output(self) -> str:
        """The end of what the server logged."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """``kill -9``: nothing of the process runs on."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (the server ends its children too), then SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


def start_all(servers: list[Server]) -> list[Server]:
    """Start every server, then wait for each: they load in parallel."""
    for server in servers:
        server.start()
    try:
        return [server.wait() for server in servers]
    except BaseException:
        for server in servers:
            server.kill()
        raise


def edit_config(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change a deployment's fyp.toml as an editor saves it: a new file renamed over the
    old one (a serving process watching it never reads half of it)."""
    path = root / "fyp.toml"
    raw = tomllib.loads(path.read_text("utf-8"))
    change(raw)
    tmp = path.with_name("fyp.toml.tmp")
    tmp.write_text(tomli_w.dumps(raw), "utf-8")
    os.replace(tmp, path)
