"""The Redis servers the Redis served log's tests use, and a database of them per test:
one server (``FYP_TEST_REDIS_URL``) and a master behind Redis Sentinel
(``FYP_TEST_REDIS_SENTINEL_URL``, ``redis+sentinel://HOST:PORT,…/SERVICE/DB``); CI starts
both (``.ci/run``, ``.ci/redis.sh``).

Tests run in parallel (pytest-xdist): each worker gets databases of its own, emptied
before and after each test, so one test's keys never show in another's scans. The
servers are the tests' own: databases 1-15 are emptied whatever database the URL names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

SERVER = os.environ.get("FYP_TEST_REDIS_URL", "")
SENTINEL = os.environ.get("FYP_TEST_REDIS_SENTINEL_URL", "")
PER_WORKER = 4  # databases a test may use at once (two deployments of two regions)
needs_redis = pytest.mark.skipif(not SERVER, reason="FYP_TEST_REDIS_URL is not set")
needs_sentinel = pytest.mark.skipif(not SENTINEL, reason="FYP_TEST_REDIS_SENTINEL_URL is not set")


def database_url(db: int, server: str = SERVER) -> str:
    """The test server's URL (or the Sentinel's, ``server``) naming database ``db``."""
    if server.startswith("redis+sentinel://"):  # …/SERVICE/DB
        return f"{server.split('?')[0].rsplit('/', 1)[0]}/{db}"
    return urlunsplit(urlsplit(server)._replace(path=f"/{db}"))


def _worker() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def client(url: str, **kwargs: object) -> Any:
    """A redis-py client of the server (or Sentinel master) at ``url``, as fyp makes one."""
    from fyp.storage.redis_url import connect, parse_redis_url

    return connect(parse_redis_url(url), 2.0, **kwargs)


def flush(url: str) -> None:
    from fyp.storage.redis_url import disconnect

    c = client(url)
    try:
        c.flushdb()
    finally:
        disconnect(c)


def _databases(server: str, variable: str) -> Iterator[list[str]]:
    if not server:
        pytest.skip(f"{variable} is not set")
    pytest.importorskip("redis")
    first = 1 + PER_WORKER * _worker()
    if first + PER_WORKER > 16:
        pytest.skip("more pytest workers than the test server has databases")
    urls = [database_url(db, server) for db in range(first, first + PER_WORKER)]
    for url in urls:
        flush(url)
    yield urls
    for url in urls:
        flush(url)


@pytest.fixture
def redis_urls() -> Iterator[list[str]]:
    """``PER_WORKER`` empty databases of the test server (skips without one)."""
    yield from _databases(SERVER, "FYP_TEST_REDIS_URL")


@pytest.fixture
def sentinel_urls() -> Iterator[list[str]]:
    """``PER_WORKER`` empty databases of the Sentinel's master, as ``redis+sentinel://``
    URLs (skips without ``FYP_TEST_REDIS_SENTINEL_URL``)."""
    yield from _databases(SENTINEL, "FYP_TEST_REDIS_SENTINEL_URL")


def module_database_url() -> str:
    """A database of the test server for a module-scoped fixture (skips without one):
    13 + the pytest worker's number, never one that :func:`redis_urls` empties, emptied
    now (the fixture empties it again when done)."""
    if not SERVER:
        pytest.skip("FYP_TEST_REDIS_URL is not set")
    pytest.importorskip("redis")
    db = 1 + PER_WORKER * 3 + _worker()  # redis_urls takes 1-12 (three workers at most)
    if db >= 16:
        pytest.skip("more pytest workers than the test server has databases")
    url = database_url(db)
    flush(url)
    return url


def stopped_server_url() -> str:
    """A URL no Redis server answers at (a port just closed on loopback)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


class OwnServer:
    """A Redis server of the test's own, to stop and start again (``redis-server``
    from Debian's package, on loopback, nothing on disk)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.url = stopped_server_url()
        self.port = int(urlsplit(self.url).port or 0)
        self.process: object | None = None

    def start(self) -> None:
        import shutil
        import subprocess
        import time

        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (.ci/redis.sh installs it)")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        import subprocess

        process = self.process
        if isinstance(process, subprocess.Popen):
            process.terminate()
            process.wait(10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    """A Redis server of this test's own, started (stop it to see what fails)."""
    if not SERVER:
        pytest.skip("FYP_TEST_REDIS_URL is not set")
    pytest.importorskip("redis")
    server = OwnServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()
