"""The served log on a Redis master found through Sentinel (``redis+sentinel://``), against
real servers (``FYP_TEST_REDIS_SENTINEL_URL``; CI starts a master, a replica and three
Sentinels: ``.ci/redis.sh sentinel``). The contract runs in test_served_logs.py; here:

- the sovereignty commands that reach a served log by URL (erasure and its verification,
  the residency scan, export, restore, carve-out, a move) with both regions' logs behind
  the Sentinels: the tests of test_redis_deployment.py and test_redis_move.py again;
- failovers, each on servers of the test's own (``.ci/redis.sh sentinel DIR 1 2``: a
  master, two replicas, one Sentinel): the client follows the master the Sentinel names
  (also from a demoted master that answers ``READONLY``), what was acknowledged with
  ``wait_replicas`` survives, and what cannot be kept is refused (503), never
  acknowledged and lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.store_contract import make_user
from fyp.errors import StorageError
from fyp.storage import Store, open_store
from fyp.storage.redis_served_log import TIMEOUT_S, RedisServedLog
from fyp.storage.served_logs import open_served_log
from redis_server import needs_sentinel, stopped_server_url

pytestmark = needs_sentinel
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from region_helpers import built  # noqa: E402, F401

from storage.test_redis_deployment import (  # noqa: E402
    served_logs_on,
    test_a_carve_out_keeps_the_served_log_in_its_store,
    test_a_restore_drops_the_keys_of_users_the_backup_does_not_hold,
    test_erasure_deletes_the_served_log_and_verify_scans_redis,
    test_the_export_holds_the_pages_in_redis,
    test_the_residency_scan_reads_each_regions_redis,
)
from storage.test_redis_move import (  # noqa: E402
    deployment_on,
    test_the_pages_move_to_the_destinations_redis,
)

__all__ = [
    "test_a_carve_out_keeps_the_served_log_in_its_store",
    "test_a_restore_drops_the_keys_of_users_the_backup_does_not_hold",
    "test_erasure_deletes_the_served_log_and_verify_scans_redis",
    "test_the_export_holds_the_pages_in_redis",
    "test_the_pages_move_to_the_destinations_redis",
    "test_the_residency_scan_reads_each_regions_redis",
]
SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "redis.sh"


# -- the sovereignty commands, each region's served log behind the Sentinels --------------
@pytest.fixture(autouse=True)
def on_redis(monkeypatch: pytest.MonkeyPatch, sentinel_urls: list[str]) -> Iterator[None]:
    served_logs_on(monkeypatch, sentinel_urls)
    yield


@pytest.fixture
def dep(built: Path, tmp_path: Path, sentinel_urls: list[str]) -> Iterator[Path]:  # noqa: F811
    yield deployment_on(built, tmp_path, sentinel_urls)


# -- failovers ------------------------------------------------------------------------------
class Servers:
    """A master, two replicas and one Sentinel (service ``fyp``) of the test's own: after
    a failover the new master has a replica too."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""

    def start(self) -> None:
        done = subprocess.run(
            [str(SCRIPT), "sentinel", str(self.directory), "1", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.url = done.stdout.strip().partition("=")[2]  # export FYP_TEST_…=URL

    def stop(self) -> None:
        subprocess.run([str(SCRIPT), "stop", str(self.directory)], timeout=60, check=False)

    def sentinel(self) -> Any:
        import redis

        port = int(self.url.split("://")[1].split("/")[0].rpartition(":")[2])
        return redis.Redis(port=port, decode_responses=True)

    def master(self) -> int:
        """The master the Sentinel names to clients (redis-py asks ``SENTINEL MASTERS``,
        which names the new one only once the failover is over)."""
        return int(self.sentinel().sentinel_masters()["fyp"]["port"])

    def server(self, port: int) -> Any:
        import redis

        return redis.Redis(port=port, decode_responses=True)

    def kill(self, port: int) -> None:
        """SIGKILL: no shutdown, nothing handed to the replica on the way out (its pid
        file goes too: ``redis.sh stop`` must not signal whoever gets the pid next)."""
        pidfile = self.directory / f"redis-{port}.pid"
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        pidfile.unlink()

    def wait(self, what: str, ok: Any, timeout_s: float = 20) -> Any:
        import redis

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = ok()
                if value:
                    return value
            except redis.RedisError:  # a server being failed over
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout_s} s")
            time.sleep(0.05)

    def new_master(self, old: int) -> int:
        """Once the Sentinel names another master, and that one has a replica that
        acknowledges writes (what a write waiting for one needs)."""

        def promoted() -> int | None:
            port = self.master()
            if port == old:
                return None
            pipe = self.server(port).pipeline(transaction=False)
            pipe.set("test:ready", 1).delete("test:ready").wait(1, 100)
            return port if pipe.execute()[-1] >= 1 else None

        new: int = self.wait("new master", promoted)
        return new


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/redis.sh installs it)")
    pytest.importorskip("redis")
    own = Servers(tmp_path_factory.mktemp("sentinel"))
    own.start()
    yield own
    own.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", "us", create=True)
    for user in ("ana", "bo"):
        s.insert_user(make_user(user))
    yield s
    s.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def opened(url: str, store: Store) -> RedisServedLog:
    log = open_served_log(url, "us", store, 600_000)
    assert isinstance(log, RedisServedLog)
    return log


def dead_first(url: str) -> str:
    """The URL with a Sentinel that does not answer listed first: the next is asked."""
    dead = stopped_server_url().split("://")[1].split("/")[0]
    return url.replace("://", f"://{dead},", 1)


def test_a_failover_is_followed_and_nothing_acknowledged_is_lost(
    servers: Servers, store: Store
) -> None:
    """``SENTINEL FAILOVER``: a replica is promoted, the other follows it. The client's
    pooled connection still reaches the old master, which takes the page but has no
    replica left to hold it: the client asks the Sentinels again and writes the page to
    the new master. Every page acknowledged before is there, numbered on."""
    waiting = opened(dead_first(servers.url) + "?wait_replicas=1", store)
    t, started = now_ms(), time.monotonic()
    acknowledged = [waiting.record_served("ana", [f"v{k}"], t + k) for k in range(5)]
    # the Sentinel that does not answer is skipped, not waited on (a wait is TIMEOUT_S;
    # 1 s, for five acknowledged writes too, was tight on a loaded machine)
    assert time.monotonic() - started < TIMEOUT_S
    old = servers.master()
    servers.sentinel().execute_command("SENTINEL", "FAILOVER", "fyp")
    new = servers.new_master(old)
    after = waiting.record_served("ana", ["v5"], t + 5)
    assert after == acknowledged[-1] + 1
    assert servers.server(new).exists(f"fyp:served:us:{{ana}}:p:{after}") == 1
    assert waiting.served_since("ana", 0) == [f"v{k}" for k in range(6)]
    waiting.close()


def test_a_killed_master_is_replaced_and_its_acknowledged_pages_stay(
    servers: Servers, store: Store
) -> None:
    """The master is killed (SIGKILL). Until the Sentinel promotes a replica, requests
    fail (503) and none is acknowledged; then every page written with
    ``wait_replicas=1`` is there and the numbering goes on. With no replica left, a log
    that waits for one refuses to write (503) rather than acknowledge what a failover
    would lose; a log that does not wait writes on."""
    waiting = opened(servers.url + "?wait_replicas=1", store)
    eager = opened(servers.url, store)  # no WAIT: the other path (EVALSHA)
    t = now_ms()
    acknowledged = [waiting.record_served("ana", [f"v{k}"], t + k) for k in range(5)]
    eager.record_served("bo", ["w0"], t)
    old = servers.master()
    servers.kill(old)
    with pytest.raises(StorageError) as info:  # the Sentinel has not noticed yet
        waiting.record_served("ana", ["lost"], t + 9)
    assert info.value.status == 503 and "'us'" in info.value.message
    new = servers.new_master(old)
    assert waiting.served_since("ana", 0) == [f"v{k}" for k in range(5)]
    version = waiting.user_version("ana")
    assert version is not None and version[2] == acknowledged[-1]
    after = waiting.record_served("ana", ["v5"], t + 5)
    assert after == acknowledged[-1] + 1
    assert eager.record_served("bo", ["w1"], t + 1) > 0  # it follows too
    servers.kill(int(servers.server(new).info("replication")["slave0"]["port"]))
    started = time.monotonic()
    with pytest.raises(StorageError, match="0 of the 1 replicas") as info:
        waiting.record_served("ana", ["v6"], t + 6)
    assert info.value.status == 503 and time.monotonic() - started < 2
    assert eager.record_served("ana", ["v7"], t + 7) > after
    waiting.close()
    eager.close()


def test_a_demoted_master_refusing_writes_is_left_for_the_new_one(
    servers: Servers, store: Store
) -> None:
    """Once a failover is over, the old master is a replica and refuses writes
    (``READONLY``) on the connections the clients still hold to it: each client asks
    the Sentinel again and writes to the new master, as a script (``EVALSHA``, never
    loaded there) and as ``EVAL`` with its ``WAIT`` (``wait_replicas``)."""
    eager = opened(servers.url, store)
    waiting = opened(servers.url + "?wait_replicas=1", store)
    t = now_ms()
    first = [eager.record_served("ana", ["v0"], t), waiting.record_served("bo", ["w0"], t)]
    old = servers.master()
    servers.sentinel().execute_command("SENTINEL", "FAILOVER", "fyp")
    new = servers.new_master(old)
    servers.wait(
        "a demoted master", lambda: servers.server(old).info("replication")["role"] == "slave"
    )
    import redis

    with pytest.raises(redis.ReadOnlyError):  # what the connections held to it get now
        servers.server(old).set("fyp:test", 1)
    assert eager.record_served("ana", ["v1"], t + 1) == first[0] + 1
    assert waiting.record_served("bo", ["w1"], t + 1) == first[1] + 1
    assert servers.server(new).exists(f"fyp:served:us:{{ana}}:p:{first[0] + 1}") == 1
    assert eager.served_since("ana", 0) == ["v0", "v1"]
    assert waiting.served_since("bo", 0) == ["w0", "w1"]
    eager.close()
    waiting.close()
