"""A region's served log on a Redis Cluster (``redis+cluster://``): the tests' own
cluster of three primaries (``redis_server.OwnRedisNodes``), with the region's users'
keys spread over all of them, so every scan (erasure, its verification, the residency
scan) must visit each primary and every page's script runs on its user's node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fyp.regions.deployment import Deployment
from redis_server import SERVER, OwnRedisNodes, client
from storage.test_redis_deployment import _now, _small, served_logs_on

pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_REDIS_URL is not set")
USERS = 30


@pytest.fixture(autouse=True)
def eu_on_redis(monkeypatch: pytest.MonkeyPatch, redis_urls: list[str]) -> Iterator[None]:
    """eu keeps its served log on a database of the test server, us on the cluster."""
    served_logs_on(monkeypatch, redis_urls)
    yield


def _on_cluster(tmp_path: Path, cluster_url: str) -> Deployment:
    from fyp.catalog.models import UserIn
    from fyp.catalog.service import Catalog

    d = _small(tmp_path, cluster_url)
    catalog = Catalog(d)
    for u in range(USERS):
        catalog.create_user(UserIn(user_id=f"u{u}", home_region="us"))
    return d


def _nodes_holding(cluster_url: str) -> int:
    c = client(cluster_url)
    try:
        return sum(1 for node in c.get_primaries() if c.dbsize(target_nodes=node))
    finally:
        c.close()


def test_pages_are_served_recorded_and_read_on_the_cluster(
    tmp_path: Path, cluster_url: str
) -> None:
    with _on_cluster(tmp_path, cluster_url) as d:
        log = d.served_log("us")
        t = _now()
        for u in range(USERS):
            assert log.record_served(f"u{u}", ["v0", "v1"], t) > 0
            log.record_served(f"u{u}", ["v2"], t + 1)
        assert all(log.served_since(f"u{u}", t - 1) == ["v0", "v1", "v2"] for u in range(USERS))
        assert _nodes_holding(cluster_url) == 3  # the users' keys are on every primary
        assert len(list(log.user_keys())) == USERS * 3  # a counter and two pages each


def test_erasure_and_its_verification_scan_every_primary(tmp_path: Path, cluster_url: str) -> None:
    from fyp.sovereignty.erasure import Eraser
    from fyp.sovereignty.erasure_verify import verify_erasure

    with _on_cluster(tmp_path, cluster_url) as d:
        log = d.served_log("us")
        for u in range(USERS):
            log.record_served(f"u{u}", ["v0"], _now())
        receipt = Eraser(d).erase("u7")
        assert receipt.body()["removed"]["served_log_keys"] == 2
        assert verify_erasure(d, "u7", receipt).ok
        c = client(cluster_url, decode_responses=True)
        try:
            c.set("fyp:served:us:{u7}:p:9", "1|[]")  # left behind, on u7's node
        finally:
            c.close()
        report = verify_erasure(d, "u7")
        assert [(r.region, r.kind, r.count) for r in report.remnants] == [("us", "served_log", 1)]


def test_the_residency_scan_reads_the_cluster(tmp_path: Path, cluster_url: str) -> None:
    from fyp.sovereignty.residency import ResidencyScanner

    with _on_cluster(tmp_path, cluster_url) as d:
        for u in range(USERS):
            d.served_log("us").record_served(f"u{u}", ["v0"], _now())
        root = d.config.root
    assert ResidencyScanner(root, scan_backups=False).run().ok
    c = client(cluster_url)
    try:
        c.set("fyp:served:us:{bo}:n", 1)  # bo lives in eu
    finally:
        c.close()
    report = ResidencyScanner(root, scan_backups=False).run()
    found = {(f.kind, f.source, f.user_id, f.home_region) for f in report.findings}
    assert found == {("foreign", "served_log", "bo", "eu")}


def test_a_cluster_that_does_not_answer_is_a_storage_error(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """redis-py's cluster client raises ``RedisClusterException`` (not a ``RedisError``)
    when no node answers: it must reach callers as the served log's StorageError (a
    503), as a standalone server's failure does, not as a 500."""
    from fyp.errors import StorageError

    own = OwnRedisNodes(str(tmp_path_factory.mktemp("stopped-cluster")))
    own.start()
    try:
        with _on_cluster(tmp_path, own.url) as d:
            log = d.served_log("us")
            log.record_served("ana", ["v0"], _now())
            own.stop()
            for call in (
                lambda: log.record_served("ana", ["v1"], _now()),
                lambda: log.served_since("ana", 0),
                lambda: log.user_version("ana"),
            ):
                with pytest.raises(StorageError, match="served log on Redis"):
                    call()
        # a process that starts while the cluster is down: the client cannot even connect
        with Deployment.open(tmp_path / "small") as d, pytest.raises(StorageError):
            d.served_log("us").served_since("ana", 0)
    finally:
        own.stop()


def test_a_cluster_named_by_another_node_is_refused_to_a_second_region(
    tmp_path: Path, own_cluster: OwnRedisNodes, cluster_url: str
) -> None:
    """us names the cluster by its first node, eu by its second: fyp.toml's check
    (which compares URLs) passes, the cluster's own key refuses eu."""
    from fyp.errors import StorageError
    from storage.test_redis_deployment import with_served_logs

    with _on_cluster(tmp_path, cluster_url) as d:
        d.served_log("us").record_served("u1", ["v0"], _now())
        root = d.config.root
    other = f"redis+cluster://127.0.0.1:{own_cluster.ports[1]}"
    with_served_logs(root, {"eu": other})
    with Deployment.open(root) as d:
        assert d.config.region("eu").served_log == other
        with pytest.raises(StorageError, match="belongs to region 'us', not 'eu'"):
            d.served_log("eu").record_served("bo", ["v1"], _now())
        assert d.served_log("us").served_since("u1", 0) == ["v0"]
    c = client(cluster_url)
    try:
        assert not list(c.scan_iter(match="fyp:served:eu:*"))
    finally:
        c.close()


# -- wait_replicas on a cluster: each write waits on its slot's primary ----------------------
def _cli(own: OwnRedisNodes, port: int, *args: str) -> str:
    import subprocess

    done = subprocess.run(own._cli("-p", str(port), *args), capture_output=True, check=True)
    return done.stdout.decode()


def _in_step(own: OwnRedisNodes) -> None:
    """Wait until every primary has its replica again, each in step."""
    import time

    deadline = time.monotonic() + 60
    while not own._replicated():
        assert time.monotonic() < deadline, "the cluster's replicas did not catch up"
        time.sleep(0.05)


def test_a_write_waiting_for_replicas_a_cluster_lacks_is_refused(
    tmp_path: Path, cluster_url: str
) -> None:
    from fyp.errors import StorageError

    with (
        _on_cluster(tmp_path, cluster_url + "?wait_replicas=1") as d,
        pytest.raises(StorageError, match="on 0 of the 1 replicas it waits for"),
    ):
        d.served_log("us").record_served("u1", ["v0"], _now())


def test_every_acknowledged_write_is_on_its_primarys_replica(
    tmp_path: Path, own_replicated_cluster: OwnRedisNodes, replicated_cluster_url: str
) -> None:
    import redis

    with _on_cluster(tmp_path, replicated_cluster_url + "?wait_replicas=1") as d:
        log = d.served_log("us")
        pages = {f"u{u}": log.record_served(f"u{u}", ["v0"], _now()) for u in range(USERS)}
        c = client(replicated_cluster_url)
        try:
            for user, seq in pages.items():
                key = f"fyp:served:us:{{{user}}}:p:{seq}"
                replica = own_replicated_cluster.replica_of(c.get_node_from_key(key).port)
                with redis.Redis(port=replica) as r:
                    r.execute_command("READONLY")
                    assert r.get(key) is not None, (user, replica)
            assert _nodes_holding(replicated_cluster_url) == 3
        finally:
            c.close()
        assert log.erase("u1") == (1, 2)  # a delete waits too
        assert log.forget_served_before(_now() + 1) == USERS - 1  # across slots
        assert not log.pages("u2")


@pytest.mark.parametrize("waits", ["", "?wait_replicas=1"])
def test_a_primary_that_fails_over_is_followed(
    tmp_path: Path, own_replicated_cluster: OwnRedisNodes, replicated_cluster_url: str, waits: str
) -> None:
    """``CLUSTER FAILOVER`` on the replica of the user's slot: the client still writes
    to the old primary, which answers MOVED; the write goes to the new one (with
    ``wait_replicas``, waiting for its replica, the old primary: fyp's own path;
    without, redis-py's)."""
    with _on_cluster(tmp_path, replicated_cluster_url + waits) as d:
        log = d.served_log("us")
        log.record_served("u1", ["v0"], _now())
        c = client(replicated_cluster_url)
        try:
            primary = c.get_node_from_key("{u1}").port
        finally:
            c.close()
        replica = own_replicated_cluster.replica_of(primary)
        import time

        # the primary takes part in a manual failover, and the other primaries vote for
        # the replica, only once gossip told each that the node is its replica (in a new
        # cluster, some seconds after the sync); a failover not done in 5 s is dropped
        own = own_replicated_cluster
        deadline = time.monotonic() + 90
        me = _cli(own, replica, "cluster", "myid").strip()
        mine = _cli(own, primary, "cluster", "myid").strip()
        while not all(me in _cli(own, p, "cluster", "replicas", mine) for p in own.ports):
            assert time.monotonic() < deadline, "the cluster does not know the replica"
            time.sleep(0.05)
        while "role:master" not in _cli(own, replica, "info", "replication"):
            assert time.monotonic() < deadline, "the failover did not happen"
            assert "OK" in _cli(own, replica, "cluster", "failover")
            asked = time.monotonic()
            while time.monotonic() - asked < 6:
                if "role:master" in _cli(own, replica, "info", "replication"):
                    break
                time.sleep(0.05)
        _in_step(own_replicated_cluster)
        log.record_served("u1", ["v1"], _now())
        assert log.served_since("u1", 0) == ["v0", "v1"]


@pytest.mark.parametrize("waits", ["", "?wait_replicas=1"])
def test_a_slot_that_migrates_is_followed(
    tmp_path: Path, own_replicated_cluster: OwnRedisNodes, replicated_cluster_url: str, waits: str
) -> None:
    """The user's slot migrating to another primary (``SETSLOT … MIGRATING`` /
    ``IMPORTING``): a new user's first page is answered ASK by the source, and written
    (``ASKING``) on the target (with ``wait_replicas``, waiting for the target's
    replica)."""
    own = own_replicated_cluster
    with _on_cluster(tmp_path, replicated_cluster_url + waits) as d:
        log = d.served_log("us")
        key = "fyp:served:us:{u2}:n"
        c = client(replicated_cluster_url)
        try:
            slot = str(c.keyslot(key))
            source = c.get_node_from_key(key)
            target = next(n for n in c.get_primaries() if n.name != source.name)
        finally:
            c.close()
        ids = {n.port: _cli(own, n.port, "cluster", "myid").strip() for n in (source, target)}
        _cli(own, target.port, "cluster", "setslot", slot, "importing", ids[source.port])
        _cli(own, source.port, "cluster", "setslot", slot, "migrating", ids[target.port])
        seq = log.record_served("u2", ["v0"], _now())
        import redis

        with redis.Redis(port=target.port) as node:  # the page is on the target
            pipe = node.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.get(f"fyp:served:us:{{u2}}:p:{seq}")
            assert pipe.execute()[1] is not None
        for port in own.ports:  # the migration ends: every node says the slot is the target's
            if "role:master" in _cli(own, port, "info", "replication"):
                _cli(own, port, "cluster", "setslot", slot, "node", ids[target.port])
        _in_step(own)
        assert log.served_since("u2", 0) == ["v0"]
