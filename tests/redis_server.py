"""The Redis servers the Redis served log's tests use, and a database of them per test:
one server (``FYP_TEST_REDIS_URL``) and a master behind Redis Sentinel
(``FYP_TEST_REDIS_SENTINEL_URL``, ``redis+sentinel://HOST:PORT,…/SERVICE/DB``); CI starts
both (``.ci/run``, ``.ci/redis.sh``). And a Redis Cluster per pytest worker, which the
tests start themselves (:class:`OwnRedisNodes`) when the others run.

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


class OwnRedisNodes:
    """Redis servers of the tests' own (``redis-server`` on loopback, nothing on disk): a
    cluster of ``nodes`` primaries (``--cluster-enabled yes``) or, with ``cluster=False``,
    one server; with ``tls``, spoken to over TLS only (a self-signed certificate made
    with ``openssl``, which the URL names as its CA: ``rediss://`` and
    ``rediss+cluster://``). ``url`` names the first node (a cluster client learns the
    rest from it)."""

    def __init__(
        self,
        directory: str,
        nodes: int = 3,
        cluster: bool = True,
        tls: bool = False,
        replicas: int = 0,
    ):
        self.directory, self.cluster, self.tls = directory, cluster, tls
        self.replicas = replicas  # per primary: ``nodes`` is primaries and replicas
        self.ports: list[int] = []
        while len(self.ports) < (nodes if cluster else 1):
            port = _free_cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        self.cert = f"{directory}/cert.pem"
        scheme = ("rediss" if tls else "redis") + ("+cluster" if cluster else "")
        query = f"?ssl_ca_certs={self.cert}" if tls else ""
        self.url = f"{scheme}://127.0.0.1:{self.ports[0]}{'' if cluster else '/0'}{query}"

    def _cli(self, *args: str) -> list[str]:
        import shutil

        cli = shutil.which("redis-cli")
        assert cli is not None
        return [cli, *(("--tls", "--cacert", self.cert) if self.tls else ()), *args]

    def start(self) -> None:
        import shutil
        import subprocess
        import time

        server = shutil.which("redis-server")
        if server is None or shutil.which("redis-cli") is None:
            pytest.skip("redis-server is not installed (.ci/redis.sh installs it)")
        if self.tls:
            if shutil.which("openssl") is None:
                pytest.skip("openssl is not installed")
            subprocess.run(
                [
                    *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                    *("-keyout", f"{self.directory}/key.pem", "-out", self.cert),
                    *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                ],
                check=True,
                capture_output=True,
            )
        for port in self.ports:
            listen = ("--port", str(port))
            if self.tls:
                listen = ("--port", "0", "--tls-port", str(port))
                listen += ("--tls-cert-file", self.cert)
                listen += ("--tls-key-file", f"{self.directory}/key.pem")
                listen += ("--tls-ca-cert-file", self.cert, "--tls-auth-clients", "no")
                listen += ("--tls-cluster", "yes") if self.cluster else ()
            subprocess.run(
                [
                    server,
                    *("--bind", "127.0.0.1", *listen, "--daemonize", "yes"),
                    *(
                        ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
                        if self.cluster
                        else ()
                    ),
                    *("--save", "", "--appendonly", "no", "--dir", self.directory),
                    *("--repl-diskless-sync-delay", "0"),  # a replica syncs at once, not in 5 s
                    # gossip every ~2.5 s, not 7.5: a primary learns its replica sooner
                    *(("--cluster-node-timeout", "5000") if self.replicas else ()),
                    *("--pidfile", f"{self.directory}/redis-{port}.pid"),
                    *("--logfile", f"{self.directory}/redis-{port}.log"),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60  # a loaded CI machine: replicas sync slowly
        for port in self.ports:  # each answers (a daemon returns before it listens)
            while (
                b"PONG"
                not in subprocess.run(
                    self._cli("-p", str(port), "ping"), capture_output=True
                ).stdout
            ):
                assert time.monotonic() < deadline, f"redis node {port} did not start"
                time.sleep(0.05)
        if not self.cluster:
            return
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            self._cli(
                *("--cluster", "create", *nodes),
                *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
            ),
            check=True,
            capture_output=True,
        )
        while True:  # every node agrees every slot is served
            states = [
                subprocess.run(self._cli("-p", str(p), "cluster", "info"), capture_output=True)
                for p in self.ports
            ]
            if all(b"cluster_state:ok" in s.stdout for s in states) and self._replicated():
                return
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.05)

    def _replicated(self) -> bool:
        """Every replica is in step with its primary, and every primary has its replicas,
        which acknowledge a write (``WAIT``: what a served log's ``wait_replicas`` asks;
        a replica just synced may not acknowledge at once)."""
        import subprocess

        for port in self.ports:
            info = subprocess.run(
                self._cli("-p", str(port), "info", "replication"), capture_output=True
            ).stdout
            if b"role:slave" in info and b"master_link_status:up" not in info:
                return False
            if b"role:master" not in info:
                continue
            if f"connected_slaves:{self.replicas}".encode() not in info:
                return False
            if self.replicas and not self._acknowledged(port):
                return False
        return True

    def _acknowledged(self, port: int) -> bool:
        """Whether the primary's replicas acknowledge a write to one of its slots."""
        import redis
        from redis.crc import key_slot

        assert not self.tls, "a replicated cluster of the tests' is not on TLS"
        with redis.Redis(port=port) as node:
            ranges = node.execute_command("CLUSTER SLOTS")
            owned = [(int(r[0]), int(r[1])) for r in ranges if int(r[2][1]) == port]
            keys = (f"{{ready{i}}}" for i in range(100_000))
            key = next(k for k in keys if any(a <= key_slot(k.encode()) <= b for a, b in owned))
            pipe = node.pipeline(transaction=False)
            pipe.set(key, 1).delete(key).wait(self.replicas, 200)
            try:
                return int(pipe.execute()[-1]) >= self.replicas
            except redis.ResponseError:  # the slot moved meanwhile: not ready yet
                return False

    def replica_of(self, port: int) -> int:
        """The port of the first replica of the primary at ``port``, as the primary says
        (``INFO replication``: at once, where ``CLUSTER SLOTS`` lists a replica only once
        the cluster's gossip has spread it, some seconds later)."""
        import redis

        assert not self.tls, "a replicated cluster of the tests' is not on TLS"
        with redis.Redis(port=port) as node:
            return int(node.info("replication")["slave0"]["port"])

    def stop(self) -> None:
        _stop_daemons(self.directory, self.ports)


def _stop_daemons(directory: str, ports: list[int]) -> None:
    """SIGTERM to each daemon by its pid file (``redis-PORT.pid``), then wait until it
    is gone, not just told to go: its port refuses."""
    import contextlib
    import os
    import signal
    import socket
    import time
    from pathlib import Path

    for port in ports:
        pid = Path(directory, f"redis-{port}.pid")
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
    deadline = time.monotonic() + 10
    for port in ports:
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    break
            time.sleep(0.02)


def _free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (10,000 higher) is free too."""
    import random
    import socket

    while True:
        port = random.randint(20_000, 55_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


def _own(factory: pytest.TempPathFactory, name: str, **how: Any) -> Iterator[OwnRedisNodes]:
    if not SERVER:
        pytest.skip("FYP_TEST_REDIS_URL is not set")
    pytest.importorskip("redis")
    servers = OwnRedisNodes(str(factory.mktemp(name)), **how)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisNodes]:
    """This pytest worker's Redis Cluster, started once (with the other Redis tests: when
    ``FYP_TEST_REDIS_URL`` is set)."""
    yield from _own(tmp_path_factory, "cluster")


@pytest.fixture(scope="session")
def own_replicated_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisNodes]:
    """This worker's Redis Cluster of three primaries with a replica each."""
    yield from _own(tmp_path_factory, "replicated-cluster", nodes=6, replicas=1)


@pytest.fixture(scope="session")
def own_tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisNodes]:
    """The same, over TLS only."""
    yield from _own(tmp_path_factory, "tls-cluster", tls=True)


@pytest.fixture(scope="session")
def own_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisNodes]:
    """One Redis server of this worker's, over TLS only."""
    yield from _own(tmp_path_factory, "tls-server", cluster=False, tls=True)


class OwnTlsSentinel:
    """One Redis Sentinel of the tests' own, over TLS only, watching ``master`` (a TLS
    server of :class:`OwnRedisNodes`, with whose certificate it speaks) as service
    ``fyp``; ``url(db)`` is a ``rediss+sentinel://`` URL of that service."""

    def __init__(self, master: OwnRedisNodes) -> None:
        self.master = master
        self.port = _free_cluster_port()
        self.directory = master.directory

    def url(self, db: int) -> str:
        return f"rediss+sentinel://127.0.0.1:{self.port}/fyp/{db}?ssl_ca_certs={self.master.cert}"

    def start(self) -> None:
        import subprocess
        import time
        from pathlib import Path

        d, cert = self.directory, self.master.cert
        conf = Path(d, f"sentinel-{self.port}.conf")  # Sentinel rewrites it: a file of its own
        conf.write_text(
            f"bind 127.0.0.1\nport 0\ntls-port {self.port}\ntls-cert-file {cert}\n"
            f"tls-key-file {d}/key.pem\ntls-ca-cert-file {cert}\ntls-auth-clients no\n"
            f"tls-replication yes\ndaemonize yes\ndir {d}\n"
            f"pidfile {d}/redis-{self.port}.pid\nlogfile {d}/sentinel-{self.port}.log\n"
            f"sentinel monitor fyp 127.0.0.1 {self.master.ports[0]} 1\n",
            encoding="utf-8",
        )
        import shutil

        server = shutil.which("redis-server")
        assert server is not None
        subprocess.run([server, str(conf), "--sentinel"], check=True, stdout=subprocess.DEVNULL)
        ask = [*self.master._cli("-p", str(self.port)), "sentinel", "get-master-addr-by-name"]
        deadline = time.monotonic() + 20
        while (
            str(self.master.ports[0]).encode()
            not in subprocess.run([*ask, "fyp"], capture_output=True).stdout
        ):
            assert time.monotonic() < deadline, "the TLS Sentinel did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        _stop_daemons(self.directory, [self.port])


@pytest.fixture(scope="session")
def own_tls_sentinel(own_tls_server: OwnRedisNodes) -> Iterator[OwnTlsSentinel]:
    """A Sentinel over TLS only, watching this worker's TLS server."""
    sentinel = OwnTlsSentinel(own_tls_server)
    try:
        sentinel.start()
        yield sentinel
    finally:
        sentinel.stop()


def _emptied(url: str) -> Iterator[str]:
    flush(url)
    yield url
    flush(url)


@pytest.fixture
def cluster_url(own_cluster: OwnRedisNodes) -> Iterator[str]:
    """The worker's cluster, emptied (every primary) before and after the test."""
    yield from _emptied(own_cluster.url)


@pytest.fixture
def tls_cluster_url(own_tls_cluster: OwnRedisNodes) -> Iterator[str]:
    yield from _emptied(own_tls_cluster.url)


@pytest.fixture
def tls_redis_url(own_tls_server: OwnRedisNodes) -> Iterator[str]:
    yield from _emptied(own_tls_server.url)


@pytest.fixture
def tls_sentinel_url(own_tls_sentinel: OwnTlsSentinel) -> Iterator[str]:
    """Database 1 of the TLS server, through the TLS Sentinel (``rediss+sentinel://``)."""
    yield from _emptied(own_tls_sentinel.url(1))


@pytest.fixture
def replicated_cluster_url(own_replicated_cluster: OwnRedisNodes) -> Iterator[str]:
    """The worker's cluster with replicas, emptied before and after the test."""
    yield from _emptied(own_replicated_cluster.url)
