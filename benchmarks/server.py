"""Run a real server process for a benchmark and drive it with wrk."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(
    args: list[str], port: int, health: str = "/healthz", ready: str | None = None
) -> Iterator[str]:
    """Start ``python ARGS`` and yield its base URL once ``health`` answers 200 (and,
    given ``ready``, its output says so: ``fyp serve --workers`` prints ``serving`` once
    every worker serves, while ``health`` answers as soon as one does)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                try:
                    if httpx.get(url + health, timeout=0.5).status_code == 200 and (
                        ready is None or ready.encode() in _read(out)
                    ):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(40)


def _read(out: Any) -> bytes:
    """What the server wrote so far (``pread``: the server writes at the shared offset)."""
    fd = out.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str, script: Path | None, seconds: int, connections: int, key: str = ""
) -> dict[str, Any]:
    """Run wrk with one thread (the server keeps the other core) and parse its report.

    ``key`` is the API key the Lua scripts send (as ``FYP_KEY``)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for HTTP benchmarks: apt-get install wrk")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    env = {**os.environ, "FYP_KEY": key}
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True, env=env).stdout
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(lat["50"]),
        "p90_ms": _ms(lat["90"]),
        "p99_ms": _ms(lat["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }
