"""Whole deployments whose served log is on Redis: the feed's (experiment exposures among
them, kept in the store), erasure's and export's own tests run again with every region's
``served_log`` on a database of the test server (``FYP_TEST_REDIS_URL``; CI starts one:
``.ci/run``), and what only a served log outside the store can show: two serving
instances sharing one Redis, keys of users homed elsewhere, a server that stops."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fyp.regions.deployment import Deployment
from redis_server import SERVER, OwnServer, client

pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_REDIS_URL is not set")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from feed.conftest import trained  # noqa: E402, F401
from feed.test_api_feed import *  # noqa: E402, F403
from feed.test_experiment_exposures import *  # noqa: E402, F403
from feed.test_feed_service import *  # noqa: E402, F403
from sovereignty.test_erasure import *  # noqa: E402, F403
from sovereignty.test_export import *  # noqa: E402, F403


def with_served_logs(root: Path, urls: dict[str, str]) -> None:
    """Give each region of the deployment at ``root`` its served log (fyp.toml)."""
    from fyp import config

    config.write_config(config.with_served_logs(config.load_config(root), urls))


@pytest.fixture(autouse=True)
def on_redis(monkeypatch: pytest.MonkeyPatch, redis_urls: list[str]) -> Iterator[None]:
    """Every deployment a test makes keeps each region's served log in a database of
    its own on the test server."""
    served_logs_on(monkeypatch, redis_urls)
    yield


def served_logs_on(monkeypatch: pytest.MonkeyPatch, urls: list[str]) -> None:
    """Make every deployment a test inits keep each region's served log at one of ``urls``."""
    databases = itertools.cycle(urls)
    real = Deployment.init.__func__  # type: ignore[attr-defined]

    def init(
        cls: type[Deployment], root: Any, regions: list[str], *args: Any, **kwargs: Any
    ) -> Deployment:
        real(cls, root, regions, *args, **kwargs).close()
        with_served_logs(Path(root), {r: next(databases) for r in regions})
        return Deployment.open(root)

    monkeypatch.setattr(Deployment, "init", classmethod(init))


def test_the_deployment_under_test_is_on_redis(trained: Deployment) -> None:  # noqa: F811
    from fyp.storage.redis_served_log import RedisServedLog

    assert all(isinstance(trained.served_log(r), RedisServedLog) for r in trained.regions)


# -- what only a served log outside the store shows --------------------------------------
def _redis(deployment: Deployment, region: str) -> Any:
    url = deployment.config.region(region).served_log
    assert url is not None
    return client(url, decode_responses=True)  # a server, or a Sentinel's master


def _small(tmp_path: Path, us_served_log: str | None = None) -> Deployment:
    """Two regions, users ana (us) and bo (eu), a few videos, no model; ``us_served_log``
    puts the served log of us on another server than the test's."""
    from fyp.catalog.models import UserIn, VideoIn
    from fyp.catalog.service import Catalog

    d = Deployment.init(tmp_path / "small", ["us", "eu"])
    catalog = Catalog(d)
    catalog.create_user(UserIn(user_id="ana", home_region="us"))
    catalog.create_user(UserIn(user_id="bo", home_region="eu"))
    for v in range(4):
        catalog.create_video(VideoIn(video_id=f"v{v}", duration_ms=9_000, regions=["us", "eu"]))
    if us_served_log is None:
        return d
    d.close()
    with_served_logs(d.config.root, {"us": us_served_log})
    return Deployment.open(d.config.root)


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_two_api_instances_sharing_one_redis_never_repeat_a_video(
    trained: Deployment,  # noqa: F811
) -> None:
    """Two serving processes (each its own deployment, store connections, Redis client)
    answer one user's pages in turn, without sticky routing: none repeats a video the
    other showed, however close together (the store's group commit needs ~50 ms)."""
    from fastapi.testclient import TestClient

    from fyp.access.keys import KeyStore
    from fyp.serving.app import create_app

    root = trained.config.root
    token = KeyStore(trained).create("feed", ["feed"], None)[1]
    headers = {"Authorization": f"Bearer {token}"}
    with (
        # given the path, each app opens the deployment and closes it (its background
        # threads with it) at shutdown
        TestClient(create_app(root), headers=headers) as a,
        TestClient(create_app(root), headers=headers) as b,
    ):
        shown: list[str] = []
        cursor = None
        for k in range(8):
            client = (a, b)[k % 2]
            params = {"n": 5} | ({"cursor": cursor} if cursor else {})
            r = client.get("/v1/users/u8/feed", params=params)
            assert r.status_code == 200, r.text
            shown += [i["video_id"] for i in r.json()["items"]]
            cursor = r.json()["next_cursor"]
    assert len(shown) == 40 and len(set(shown)) == 40
    counter = _redis(trained, "us").get("fyp:served:us:{u8}:n")
    assert int(counter) >= 8


def test_erasure_deletes_the_served_log_and_verify_scans_redis(tmp_path: Path) -> None:
    from fyp.sovereignty.erasure import Eraser, Receipt, receipt_signature_ok
    from fyp.sovereignty.erasure_verify import verify_erasure

    with _small(tmp_path) as d:
        d.served_log("us").record_served("ana", ["v0", "v1"], _now())
        d.served_log("us").record_served("ana", ["v2"], _now())
        receipt = Eraser(d).erase("ana")
        body = receipt.body()
        assert body["served_log"] == "redis"
        assert body["removed"]["served"] == 3 and body["removed"]["served_log_keys"] == 3
        again = Receipt.from_dict(receipt.to_dict())  # as `fyp erasure verify --receipt`
        assert again.served_log == "redis" and receipt_signature_ok(d, again)
        assert _redis(d, "us").keys("*ana*") == []
        report = verify_erasure(d, "ana", receipt)
        assert report.ok, report.to_dict()
        # a key left behind (on any region's server) is a remnant
        _redis(d, "eu").set("fyp:served:eu:{ana}:n", 4)
        report = verify_erasure(d, "ana")
        assert report.status == "remnants"
        assert [(r.region, r.kind, r.count) for r in report.remnants] == [("eu", "served_log", 1)]


def test_an_erasure_with_its_served_log_down_finishes_with_erasure_process(
    tmp_path: Path, own_redis: OwnServer
) -> None:
    import redis

    from fyp.errors import StorageError
    from fyp.sovereignty.erasure import Eraser
    from fyp.sovereignty.erasure_process import process_region
    from fyp.sovereignty.erasure_verify import verify_erasure

    with _small(tmp_path, own_redis.url) as d:
        d.served_log("us").record_served("ana", ["v0"], _now())
        own_redis.stop()
        with pytest.raises(StorageError, match="fyp erasure process"):
            Eraser(d).erase("ana")
        assert d.store("us").get_user("ana") is None  # the rest is erased
        report = verify_erasure(d, "ana")  # fails closed: the server cannot be scanned
        assert report.status == "remnants"
        # the served log's, and the erasure's mark, left for the next open or process
        assert {r.kind for r in report.remnants} == {"served_log", "file"}
        assert all(".erasing/" in r.where for r in report.remnants if r.kind == "file")
        own_redis.start()  # (it kept nothing on disk: put back what it held)
        redis.Redis.from_url(own_redis.url).set("fyp:served:us:{ana}:p:9", "1|[]")
        assert verify_erasure(d, "ana").status == "remnants"
        process_region(d, "us")  # the ledger's erasure, re-applied where it is missing
        assert verify_erasure(d, "ana").remnants == []


def test_a_regions_store_refuses_its_own_served_log_while_the_log_is_on_redis(
    tmp_path: Path,
) -> None:
    """Code that goes to the store, not through Deployment.served_log, would write pages
    the feed never reads (and read only half of what was shown): a clear server error,
    naming where the log is, without its password; nothing is written."""
    from fyp.errors import ServerError

    with _small(tmp_path, "redis://:s3cret@127.0.0.1:1/0") as d:  # (never reached here)
        store = d.store("us")
        for attempt in (
            lambda: store.record_served("ana", ["v0"], _now()),
            lambda: store.served_since("ana", 0),
        ):
            with pytest.raises(ServerError) as info:
                attempt()
            text = info.value.message
            assert "redis://:***@127.0.0.1:1/0" in text and "s3cret" not in text, text
            assert "[regions.us] served_log" in text and "Deployment.served_log('us')" in text
            assert info.value.status == 500
        assert store.query("SELECT COUNT(*) FROM served_pages") == [(0,)]
        eu = d.served_log("eu")
        assert eu.record_served("bo", ["v1"], _now()) > 0  # the way in: the region's log
        assert eu.served_since("bo", 0) == ["v1"]


def test_fyp_status_says_where_each_served_log_is_and_whether_it_answers(
    tmp_path: Path, own_redis: OwnServer
) -> None:
    from typer.testing import CliRunner

    from fyp.cli.app import app

    with _small(tmp_path, own_redis.url) as d:
        root, eu = d.config.root, d.config.region("eu").served_log

    def status() -> str:
        done = CliRunner().invoke(app, ["status", str(root)])
        assert done.exit_code == 0, done.output  # a report: /readyz is the health check
        return done.output

    out = status()
    assert f"us: store sqlite:///{root / 'regions' / 'us' / 'store.sqlite'}" in out
    assert f"served log on {own_redis.url}, reachable" in out
    assert f"served log on {eu}, reachable" in out
    own_redis.stop()
    out = status()
    assert "redis (unreachable)" in out
    assert f"served log on {own_redis.url}, UNREACHABLE: region 'us': its served log" in out
    assert f"served log on {eu}, reachable" in out
    with_served_logs(root, {"us": "redis://:s3cret@127.0.0.1:1/0"})
    out = status()
    assert "served log on redis://:***@127.0.0.1:1/0, UNREACHABLE" in out
    assert "s3cret" not in out


def test_the_residency_scan_reads_each_regions_redis(tmp_path: Path) -> None:
    from fyp.sovereignty.residency import ResidencyScanner

    with _small(tmp_path) as d:
        d.served_log("us").record_served("ana", ["v0"], _now())
        d.served_log("eu").record_served("bo", ["v1"], _now())
        root = d.config.root
        assert ResidencyScanner(root, scan_backups=False).run().ok
        us = _redis(d, "us")
        us.set("fyp:served:us:{bo}:n", 1)  # bo lives in eu
        us.set("fyp:served:us:{ghost}:p:1", "1|[]")  # nobody's
        us.set("fyp:served:us:oops", "x")  # a key of the prefix whose user cannot be read
        report = ResidencyScanner(root, scan_backups=False).run()
    found = {(f.kind, f.source, f.user_id, f.home_region) for f in report.findings}
    assert found == {
        ("foreign", "served_log", "bo", "eu"),
        ("orphan", "served_log", "ghost", None),
        ("unreadable", "served_log", "-", None),
    }


def test_the_residency_scan_says_a_served_log_does_not_answer(
    tmp_path: Path, own_redis: OwnServer
) -> None:
    from fyp.sovereignty.residency import ResidencyScanner

    _small(tmp_path, own_redis.url).close()
    own_redis.stop()
    report = ResidencyScanner(tmp_path / "small", scan_backups=False).run()
    assert not report.ok
    [finding] = report.findings
    assert (finding.kind, finding.source, finding.region) == ("unreadable", "served_log", "us")
    assert "cannot be scanned" in finding.location and own_redis.url in finding.location


def test_two_regions_on_one_database_named_two_ways_are_caught(tmp_path: Path) -> None:
    """fyp.toml's check compares the URLs; the database's key ``fyp:region`` catches the
    same database named by another host: eu's feed records nothing there, and ``fyp
    status`` and the residency scan say whose database it is."""
    from typer.testing import CliRunner

    from fyp.cli.app import app
    from fyp.errors import StorageError
    from fyp.sovereignty.residency import ResidencyScanner

    with _small(tmp_path) as d:
        root, us = d.config.root, d.config.region("us").served_log
    assert us is not None and "127.0.0.1" in us
    with_served_logs(root, {"eu": us.replace("127.0.0.1", "localhost")})
    with Deployment.open(root) as d:
        d.served_log("us").record_served("ana", ["v0"], _now())
        with pytest.raises(StorageError, match="belongs to region 'us', not 'eu'"):
            d.served_log("eu").record_served("bo", ["v1"], _now())
        assert not _redis(d, "us").keys("fyp:served:eu:*")
    done = CliRunner().invoke(app, ["status", str(root)])
    assert done.exit_code == 0, done.output
    assert "UNREACHABLE: served log" in done.output and "belongs to region 'us'" in done.output
    report = ResidencyScanner(root, scan_backups=False).run()
    assert [(f.kind, f.region) for f in report.findings] == [("unreadable", "eu")]
    assert "belongs to region 'us'" in report.findings[0].location


def test_the_export_holds_the_pages_in_redis(tmp_path: Path) -> None:
    from fyp.sovereignty.export import UserExport

    with _small(tmp_path) as d:
        t = _now()
        d.served_log("us").record_served("ana", ["v0", "v1"], t)
        doc = UserExport(d, "ana").document()
    assert doc["manifest"]["sections"]["served"] == 2
    assert doc["served"] == [
        {"user_id": "ana", "video_id": v, "region": "us", "served_at_ms": t} for v in ("v0", "v1")
    ]


def test_a_restore_drops_the_keys_of_users_the_backup_does_not_hold(tmp_path: Path) -> None:
    from fyp.catalog.models import UserIn
    from fyp.catalog.service import Catalog
    from fyp.sovereignty.backup_writer import BackupWriter
    from fyp.sovereignty.restore import Restorer

    with _small(tmp_path) as d:
        config = d.config
        d.served_log("us").record_served("ana", ["v0"], _now())
    BackupWriter(config, "us").run()
    with Deployment.open(config.root) as d:
        Catalog(d).create_user(UserIn(user_id="cy", home_region="us"))  # after the backup
        d.served_log("us").record_served("cy", ["v1"], _now())
        d.served_log("us").record_served("ana", ["v2"], _now())
    Restorer(config, "us").run()
    with Deployment.open(config.root) as d:
        assert _redis(d, "us").keys("*{cy}*") == []
        assert d.served_log("us").served_since("ana", 0) == ["v0", "v2"]  # not in backups


def test_a_carve_out_keeps_the_served_log_in_its_store(tmp_path: Path) -> None:
    from fyp.config import load_config
    from fyp.sovereignty.carve import carve_out

    with _small(tmp_path) as d:
        for k in range(3):
            counter = d.served_log("us").record_served("ana", [f"v{k}"], _now())
        root = d.config.root
    report = carve_out(root, "us", tmp_path / "carved", with_backups=False)
    assert any("3 pages copied" in n for n in report.notes)
    carved = load_config(tmp_path / "carved")
    assert carved.region("us").served_log is None  # never the original region's server
    with Deployment(carved) as c:
        log = c.served_log("us")
        assert log.served_since("ana", 0) == ["v0", "v1", "v2"]
        version = log.user_version("ana")
        assert version is not None and version[2] == counter
        assert log.record_served("ana", ["v3"], _now()) == counter + 1  # it goes on


def test_feeds_are_503_while_the_served_log_is_down(
    trained: Deployment,  # noqa: F811
    own_redis: OwnServer,
) -> None:
    """A feed cannot keep its no-repeat promise without its served log: it fails with
    the usual error body (503 storage_error, retry later) instead of serving unrecorded
    pages, /readyz says which region, and both recover when the server is back."""
    from fastapi.testclient import TestClient

    from fyp.access.keys import KeyStore
    from fyp.serving.app import create_app

    root = trained.config.root
    token = KeyStore(trained).create("feed", ["feed"], None)[1]
    admin = {
        "Authorization": f"Bearer {KeyStore(trained).create('ops', ['admin'], None)[1]}",
        "X-Fyp-Reason": "test",
    }
    trained.close()
    with_served_logs(root, {"us": own_redis.url})
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(root), headers=headers) as client:
        assert client.get("/v1/users/u4/feed?n=3").status_code == 200
        own_redis.stop()
        for path in ("/v1/users/u4/feed?n=3", "/v1/users/u4/feed?n=3&debug=false"):
            r = client.get(path)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "storage_error" and "served log" in error["message"]
        assert client.get("/v1/users/u5/feed?n=3").status_code == 200  # eu: its own
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["regions"]["us"]["problems"] == [
            "the served log of region 'us' is unavailable"
        ]
        assert ready.json()["regions"]["eu"]["ready"]
        # the export and the erasure fail as clearly, before any output or receipt
        r = client.get("/v1/users/u4/export", headers=admin)
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_error"
        r = client.delete("/v1/users/u6", headers=admin)
        assert r.status_code == 503 and "fyp erasure process" in r.json()["error"]["message"]
        own_redis.start()
        assert client.get("/v1/users/u4/feed?n=3").status_code == 200
        assert client.get("/readyz").status_code == 200
