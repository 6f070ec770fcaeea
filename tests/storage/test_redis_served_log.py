"""What is particular to the Redis served log (the contract runs in test_served_logs.py):
keys that name the region and the user, pages that expire with the seen window, a
counter that starts from the store's, nothing left of a user erased mid-write, and
clear errors from a server that is down. Against a real server (``FYP_TEST_REDIS_URL``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.store_contract import make_user
from fyp.config import served_log_url
from fyp.errors import ConfigError, StorageError, UnknownUser
from fyp.storage import Store, open_store
from fyp.storage.postgres_dialect import redact
from fyp.storage.redis_served_log import RedisServedLog, parse_key
from fyp.storage.served_logs import open_served_log
from redis_server import OwnServer


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", "us", create=True)
    s.insert_user(make_user("ana"))
    s.insert_user(make_user("a:b.c-1"))  # every character an id may hold
    yield s
    s.close()


@pytest.fixture
def url(redis_urls: list[str]) -> str:
    return redis_urls[0]


def opened(url: str, store: Store, window_ms: int = 600_000) -> RedisServedLog:
    log = open_served_log(url, "us", store, window_ms)
    assert isinstance(log, RedisServedLog)
    return log


def test_keys_name_the_region_and_the_user(url: str, store: Store) -> None:
    log = opened(url, store)
    t = now_ms()
    a = log.record_served("ana", ["v1"], t)
    b = log.record_served("a:b.c-1", ["v2"], t)
    keys = sorted(k for k, _ in log.user_keys())
    assert keys == [
        "fyp:served:us:{a:b.c-1}:n",
        f"fyp:served:us:{{a:b.c-1}}:p:{b}",
        "fyp:served:us:{ana}:n",
        f"fyp:served:us:{{ana}}:p:{a}",
    ]
    assert {u for _, u in log.user_keys()} == {"ana", "a:b.c-1"}
    assert parse_key("fyp:served:eu:{x}:p:12") == ("eu", "x")
    assert parse_key("fyp:served:eu:x:n") is None
    assert log.keys_naming("ana") == ["fyp:served:us:{ana}:n", f"fyp:served:us:{{ana}}:p:{a}"]
    log.close()


def test_a_database_belongs_to_the_region_that_opened_it_first(
    url: str, store: Store, tmp_path: Path
) -> None:
    """Two regions naming one database differently (here by host name) pass fyp.toml's
    check, which compares URLs; the database's own key tells them apart: the second
    region's process refuses it, writing nothing, until the key is deleted."""
    import redis

    us = opened(url, store)
    us.record_served("ana", ["v1"], now_ms())
    same = url.replace("127.0.0.1", "localhost")
    assert same != url
    eu_store = open_store(f"sqlite:///{tmp_path / 'eu.sqlite'}", "eu", create=True)
    eu_store.insert_user(make_user("bo", "eu"))
    eu = open_served_log(same, "eu", eu_store, 600_000)
    for call in (
        lambda: eu.user_version("bo"),
        lambda: eu.record_served("bo", ["v2"], now_ms()),
        lambda: list(eu.user_keys()),
        eu.check,
    ):
        with pytest.raises(StorageError, match="belongs to region 'us', not 'eu'") as info:
            call()
        assert info.value.details == {"served_log_region": "us", "region": "eu"}
    raw = redis.Redis.from_url(url, decode_responses=True)
    assert raw.get("fyp:region") == "us"
    assert not raw.keys("fyp:served:eu:*")  # nothing of eu's was written
    assert us.served_since("ana", 0) == ["v1"]  # us goes on
    raw.delete("fyp:region")  # given away: the next region to open it claims it
    assert eu.record_served("bo", ["v2"], now_ms()) > 0
    assert raw.get("fyp:region") == "eu"
    raw.close()
    for log in (us, eu):
        log.close()
    eu_store.close()


def test_pages_expire_with_the_seen_window_and_the_counter_stays(url: str, store: Store) -> None:
    import redis

    log = opened(url, store, window_ms=400)
    t = now_ms()
    first = log.record_served("ana", ["v1"], t)
    ttl = redis.Redis.from_url(url).pttl(f"fyp:served:us:{{ana}}:p:{first}")
    assert 0 < ttl <= 400
    assert log.served_since("ana", t - 1_000) == ["v1"]
    time.sleep(0.6)
    assert log.served_since("ana", 0) == []  # Redis forgot it: no sweeper ran
    assert log.pages("ana") == []
    version = log.user_version("ana")
    assert version is not None and version[2] == first
    assert log.record_served("ana", ["v2"], now_ms()) == first + 1
    assert log.forgets_by_itself
    log.close()


def test_the_counter_starts_from_the_stores(url: str, store: Store) -> None:
    """A region whose served log moves from its store to Redis does not count from 0
    again (the state cache and the orders ranked ahead key on the counter)."""
    t = now_ms()
    for k in range(3):
        store.record_served("ana", [f"old{k}"], t - 100 + k)
    assert store.user_version("ana") == (*store.user_version("ana")[:2], 3)  # type: ignore[index]
    log = opened(url, store)
    assert log.user_version("ana") == store.user_version("ana")
    first = log.record_served("ana", ["new"], t)
    assert first > 3 and log.record_served("ana", ["newer"], t) == first + 1
    assert [p.page_seq for p in log.pages("ana")] == [first, first + 1]
    # the pages the store holds from before still count, until they age out there
    assert log.served_since("ana", 0) == ["old0", "old1", "old2", "new", "newer"]
    assert log.served_since("ana", t - 99) == ["old1", "old2", "new", "newer"]
    log.close()


def test_a_server_that_lost_its_data_never_counts_the_same_again(
    own_redis: OwnServer, store: Store
) -> None:
    """A restart without persistence empties Redis: the counter starts again above
    anything it handed out (the state cache and orders ranked ahead key on it)."""
    log = opened(own_redis.url, store)
    seen = [log.record_served("ana", ["v1"], now_ms()) for _ in range(3)]
    own_redis.stop()
    own_redis.start()
    assert log.served_since("ana", 0) == []  # the pages are lost with it
    version = log.user_version("ana")
    assert version is not None and version[2] == 0  # the store's: nothing Redis holds
    assert log.record_served("ana", ["v2"], now_ms()) > max(seen)
    log.close()


def test_a_counter_below_the_stores_is_numbered_again_above_it(url: str, store: Store) -> None:
    """A counter Redis held from before the store counted on (the served log moved to
    the store and back): the page is numbered above the store's counter."""
    import redis

    redis.Redis.from_url(url).set("fyp:served:us:{ana}:n", 2)
    for k in range(5):
        store.record_served("ana", [f"old{k}"], now_ms())
    log = opened(url, store)
    assert log.user_version("ana") == store.user_version("ana")  # 5, not 2
    assert log.record_served("ana", ["new"], now_ms()) == 6
    assert [p.page_seq for p in log.pages("ana")] == [6]
    assert log.keys_naming("ana") == ["fyp:served:us:{ana}:n", "fyp:served:us:{ana}:p:6"]
    log.close()


def test_a_user_erased_while_their_page_is_written_keeps_nothing(url: str, store: Store) -> None:
    """The page goes in after the check that the user exists, and the user leaves the
    store before the erasure clears Redis: the recording process itself removes it."""

    class ErasedMidWrite(RedisServedLog):
        def _script(self, name: str, keys: list[str], args: list[object]) -> object:
            out = super()._script(name, keys, args)
            if name == "_record":
                self.store.delete_user("ana")  # the erasure's store part, just now
            return out

    log = ErasedMidWrite(url, "us", store, 600_000)
    with pytest.raises(UnknownUser):
        log.record_served("ana", ["v1"], now_ms())
    assert log.keys_naming("ana") == []
    log.close()


def test_erase_removes_every_key_of_the_user(url: str, store: Store) -> None:
    log = opened(url, store)
    t = now_ms()
    log.record_served("ana", ["v1", "v2"], t)
    log.record_served("ana", ["v3"], t + 1)
    log.record_served("a:b.c-1", ["v1"], t)
    assert log.erase("ana") == (3, 3)  # three videos; two pages and the counter
    assert log.keys_naming("ana") == []
    assert log.served_since("a:b.c-1", 0) == ["v1"]
    assert log.erase("ana") == (0, 0)
    log.close()


def test_a_stopped_server_is_a_storage_error_naming_region_and_server(
    own_redis: OwnServer, store: Store
) -> None:
    log = opened(own_redis.url, store)
    log.record_served("ana", ["v1"], now_ms())
    own_redis.stop()
    for call in (
        lambda: log.user_version("ana"),
        lambda: log.record_served("ana", ["v2"], now_ms()),
        lambda: log.served_since("ana", 0),
        log.check,
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.status == 503
        assert "'us'" in info.value.message and own_redis.url in info.value.message
    own_redis.start()  # back (empty: it kept nothing on disk): serving goes on
    assert log.record_served("ana", ["v3"], now_ms()) > 0
    assert log.served_since("ana", 0) == ["v3"]
    log.close()


def test_passwords_never_show_and_bad_urls_are_config_errors(store: Store) -> None:
    assert redact("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact("rediss://u:s3cret@host/1") == "rediss://u:***@host/1"
    log = opened("redis://:s3cret@127.0.0.1:1/0", store)
    with pytest.raises(StorageError) as info:
        log.check()
    assert "s3cret" not in info.value.message and "***" in info.value.message
    with pytest.raises(ConfigError, match="served log"):
        open_served_log("memcached://x", "us", store, 1)
    for bad in ("redis://127.0.0.1:1/notanumber", "redis:///0", "redis://h:port/0", "http://h"):
        with pytest.raises(ConfigError, match="served_log"):
            served_log_url("us", bad)
    assert served_log_url("eu", "redis://r-{region}:6379/2") == "redis://r-eu:6379/2"


def test_a_write_waiting_for_a_replica_the_server_lacks_is_refused(url: str, store: Store) -> None:
    """``wait_replicas=1`` on a server without replicas: nothing is acknowledged that a
    failover would lose (a 503 naming the shortfall), reads go on."""
    log = opened(url + "?wait_replicas=1", store)
    with pytest.raises(StorageError, match="0 of the 1 replicas") as info:
        log.record_served("ana", ["v1"], now_ms())
    assert info.value.status == 503 and "wait_replicas" in info.value.message
    assert log.user_version("ana") is not None
    log.close()


# -- configuration: [regions.R] served_log, fyp init --served-log ---------------------------
def test_served_log_in_fyp_toml(tmp_path: Path) -> None:
    from fyp.config import CONFIG_FILE, load_config

    def config(body: str) -> None:
        (tmp_path / CONFIG_FILE).write_text(body, encoding="utf-8")

    config(
        '[regions.us]\nstore = "sqlite:///us.sqlite"\nserved_log = "redis://r-{region}:6379/1"\n'
        '[regions.eu]\nstore = "sqlite:///eu.sqlite"\n'
    )
    loaded = load_config(tmp_path)
    assert loaded.region("us").served_log == "redis://r-us:6379/1"
    assert loaded.region("eu").served_log is None
    assert "served_log" not in loaded.region("eu").to_dict()  # absent: in the store
    config(
        '[regions.us]\nstore = "sqlite:///us.sqlite"\nserved_log = "redis://r:6379/1"\n'
        '[regions.eu]\nstore = "sqlite:///eu.sqlite"\nserved_log = "redis://r:6379/1"\n'
    )
    with pytest.raises(ConfigError, match="served log of its own"):
        load_config(tmp_path)
    config('[regions.us]\nstore = "sqlite:///us.sqlite"\nserved_log = "memcached://r"\n')
    with pytest.raises(ConfigError, match="redis://"):
        load_config(tmp_path)
    config('[regions.us]\nstore = "sqlite:///us.sqlite"\nserved_logs = "redis://r"\n')
    with pytest.raises(ConfigError, match="served_log"):  # a misspelt key names the right one
        load_config(tmp_path)


def test_fyp_init_with_a_served_log_per_region(tmp_path: Path) -> None:
    import subprocess
    import sys

    from typer.testing import CliRunner

    from fyp.cli.app import app
    from fyp.config import load_config

    runner = CliRunner()
    url = "redis://:s3cret@redis-{region}.internal:6379/0"
    out = runner.invoke(app, ["init", str(tmp_path / "d"), "--served-log", url])
    assert out.exit_code == 0, out.output
    assert "served log: redis://:***@redis-us.internal:6379/0" in out.output
    assert "s3cret" not in out.output
    config = load_config(tmp_path / "d")
    assert config.region("eu").served_log == "redis://:s3cret@redis-eu.internal:6379/0"
    done = subprocess.run(  # the command line's error handling: one line, exit 2
        [sys.executable, "-m", "fyp", "init", str(tmp_path / "e"), "--served-log", "redis://r"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "{region}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "e").exists()
