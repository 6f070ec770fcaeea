"""Carving out a region whose served log is on Redis into a store on a PostgreSQL
server (``fyp region export DIR R --to OUT --store postgresql://…``): the pages and
counters go into the carved store with the rest of the region, in its one load. Runs
when both ``FYP_TEST_REDIS_URL`` and ``FYP_TEST_POSTGRES_URL`` name servers (the
SQLite-target case is in test_redis_deployment.py)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import SERVER as POSTGRES
from postgres_server import drop_schemas, schema_url

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.config import load_config, with_served_logs, write_config
from fyp.regions.deployment import Deployment
from redis_server import SERVER as REDIS
from redis_server import OwnServer

pytestmark = pytest.mark.skipif(
    not (POSTGRES and REDIS), reason="FYP_TEST_POSTGRES_URL and FYP_TEST_REDIS_URL are not set"
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from region_helpers import cli  # noqa: E402


@pytest.fixture
def prefix() -> Iterator[str]:
    """Schemas of this test's own on the PostgreSQL server, dropped afterwards."""
    name = f"rc{uuid.uuid4().hex[:10]}"
    yield name
    drop_schemas(name)


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


def _deployment(root: Path, served_log: str, store: str | None = None) -> Path:
    """Regions us (ana, bo) and eu (cy), a few videos; us's served log at
    ``served_log``; ``store``: the stores' URL template (default: SQLite files)."""
    with Deployment.init(root, ["us", "eu"], store=store) as d:
        catalog = Catalog(d)
        for user, home in (("ana", "us"), ("bo", "us"), ("cy", "eu")):
            catalog.create_user(UserIn(user_id=user, home_region=home))
        for v in range(4):
            catalog.create_video(VideoIn(video_id=f"v{v}", duration_ms=9_000, regions=["us", "eu"]))
    write_config(with_served_logs(load_config(root), {"us": served_log}))
    return root


def _served(root: Path, pages: dict[str, list[list[str]]]) -> dict[str, int]:
    """Record the pages through us's served log; each user's counter after them."""
    counters = {}
    with Deployment.open(root) as d:
        for user, shown in pages.items():
            for ids in shown:
                counters[user] = d.served_log("us").record_served(user, ids, _now())
    return counters


@pytest.mark.parametrize("source", ["sqlite", "postgresql"])
def test_a_carve_out_to_postgresql_takes_the_served_log_from_redis(
    tmp_path: Path, prefix: str, redis_urls: list[str], source: str
) -> None:
    store = schema_url(f"{prefix}_src_{{region}}") if source == "postgresql" else None
    root = _deployment(tmp_path / "dep", redis_urls[0], store)
    counters = _served(root, {"ana": [["v0", "v1"], ["v2"]], "bo": [["v3"]]})
    out = tmp_path / "us-alone"
    target = schema_url(f"{prefix}_cut_{{region}}")
    code, text = cli("region", "export", str(root), "us", "--to", str(out), "--store", target)
    assert code == 0, text
    words = " ".join(text.split())
    assert "3 pages copied" in words, words
    carved = load_config(out)
    assert carved.region("us").served_log is None  # never the original region's server
    assert carved.region("us").store == schema_url(f"{prefix}_cut_us")
    with Deployment(carved) as c:
        log = c.served_log("us")
        assert log.served_since("ana", 0) == ["v0", "v1", "v2"]
        assert log.served_since("bo", 0) == ["v3"]
        for user, counter in counters.items():
            version = log.user_version(user)
            assert version is not None and version[2] == counter, user
        assert log.record_served("ana", ["v3"], _now()) == counters["ana"] + 1  # it goes on
    with Deployment.open(root) as d:  # the source is left as it was
        assert d.served_log("us").served_since("ana", 0) == ["v0", "v1", "v2"]


def test_a_carve_out_whose_redis_does_not_answer_leaves_the_target_store_empty(
    tmp_path: Path, prefix: str, own_redis: OwnServer
) -> None:
    """The served log is read before the carved store is loaded: a Redis that does not
    answer fails the carve-out with nothing loaded, so it can be run again."""
    root = _deployment(tmp_path / "dep", own_redis.url)
    _served(root, {"ana": [["v0"]]})
    own_redis.stop()
    out = tmp_path / "us-alone"
    target = schema_url(f"{prefix}_cut_{{region}}")
    code, text = cli("region", "export", str(root), "us", "--to", str(out), "--store", target)
    assert code == 3 and "served log on Redis" in text, text
    assert not out.exists()
    own_redis.start()  # (it kept nothing: the page is gone with it)
    code, text = cli("region", "export", str(root), "us", "--to", str(out), "--store", target)
    assert code == 0, text
    with Deployment.open(out) as c:
        assert {u.user_id for u in c.store("us").iter_users()} == {"ana", "bo"}
