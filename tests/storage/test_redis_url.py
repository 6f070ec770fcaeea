"""Redis URLs (``fyp.storage.redis_url``): one server or a service behind Redis Sentinel,
parsed once for every command; malformed ones are ConfigErrors that never show the
password. No server needed (tests/storage/test_redis_sentinel.py connects)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fyp.config import (
    CONFIG_FILE,
    RegionConfig,
    check_served_logs,
    load_config,
    served_log_url,
)
from fyp.errors import ConfigError
from fyp.storage.postgres_dialect import redact
from fyp.storage.redis_url import parse_redis_url


def test_a_sentinel_url_names_its_sentinels_service_database_and_credentials() -> None:
    url = (
        "redis+sentinel://app:s%40cret@s1.eu:26380,s2.eu,[fd00::3]:5000/fyp-eu/2"
        "?sentinel_password=w4tch&socket_timeout=0.5&wait_replicas=1"
    )
    target = parse_redis_url(url)
    assert target.sentinel and target.service == "fyp-eu" and target.db == 2
    assert target.hosts == (("s1.eu", 26380), ("s2.eu", 26379), ("fd00::3", 5000))
    assert (target.username, target.password) == ("app", "s@cret")
    assert target.options == (("sentinel_password", "w4tch"), ("socket_timeout", "0.5"))
    assert target.wait_replicas == 1
    assert "cret" not in repr(target) and "w4tch" not in repr(target)
    assert target.where == (
        "redis+sentinel://app:***@s1.eu:26380,s2.eu,[fd00::3]:5000/fyp-eu/2"
        "?sentinel_password=***&socket_timeout=0.5&wait_replicas=1"
    )
    assert parse_redis_url("redis+sentinel://s1/fyp").db == 0


def test_a_tls_sentinel_url_takes_the_ssl_options() -> None:
    url = "rediss+sentinel://:s3cret@s1,s2:5000/fyp/1?ssl_ca_certs=/etc/ca.pem&sentinel_password=w"
    target = parse_redis_url(url)
    assert target.sentinel and target.tls and not target.cluster
    assert target.hosts == (("s1", 26379), ("s2", 5000)) and target.service == "fyp"
    assert target.options == (("ssl_ca_certs", "/etc/ca.pem"), ("sentinel_password", "w"))
    assert target.where == (
        "rediss+sentinel://:***@s1,s2:5000/fyp/1?ssl_ca_certs=/etc/ca.pem&sentinel_password=***"
    )
    # the same Sentinels, service and database over TLS or not: one served log
    with pytest.raises(ConfigError, match="served log of its own"):
        check_served_logs(_regions(us=url, eu="redis+sentinel://s2:5000/fyp/1"))


def test_a_server_url_reads_as_before() -> None:
    plain = parse_redis_url("redis://:s3cret@h:6380/3")
    assert not plain.sentinel and plain.hosts == (("h", 6380),) and plain.db == 3
    assert (plain.password, plain.wait_replicas, plain.service) == ("s3cret", 0, None)
    assert parse_redis_url("rediss://h?ssl_cert_reqs=none").hosts == (("h", 6379),)
    assert parse_redis_url("REDIS://[::1]/").hosts == (("::1", 6379),)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("memcached://:s3cret@h", "scheme 'memcached'"),
        (":s3cret@h/0", "no scheme"),
        ("redis://:s3cret@/0", "no host"),
        ("redis://:s3cret@h:port/0", "is not HOST[:PORT]"),
        ("redis://:s3cret@h:0/0", "is not HOST[:PORT]"),
        ("redis://:s3cret@h/x", "database 'x'"),
        ("redis://:s3cret@h/0/1", "more than a database number"),
        ("redis://:s3cret@h1,h2/0", "several hosts"),
        ("redis://:s3cret@h/0?db=2", "unknown option 'db'"),
        ("redis://:s3cret@h/0?sentinel_password=x", "unknown option 'sentinel_password'"),
        ("redis://:s3cret@h/0?wait_replicas=all", "wait_replicas 'all'"),
        ("redis+sentinel://:s3cret@s1,s2", "no service name"),
        ("redis+sentinel://:s3cret@s1//0", "no service name"),
        ("redis+sentinel://:s3cret@s1,/fyp/0", "host '' is not"),
        ("redis+sentinel://:s3cret@s1/fyp/0/1", "more than a database number"),
        ("rediss+sentinel://:s3cret@s1", "no service name"),
        ("redis+sentinel://:s3cret@s1/fyp?ssl_ca_certs=ca.pem", "unknown option 'ssl_ca_certs'"),
    ],
)
def test_a_malformed_url_is_a_config_error_without_the_password(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match="redis\\+sentinel://") as info:
        parse_redis_url(url)
    assert why in info.value.message and "s3cret" not in info.value.message


def test_served_log_accepts_a_sentinel_url_per_region() -> None:
    raw = "redis+sentinel://:s3cret@s1:26379,s2:26379/fyp-{region}/0"
    assert served_log_url("eu", raw) == "redis+sentinel://:s3cret@s1:26379,s2:26379/fyp-eu/0"
    with pytest.raises(ConfigError, match=r"^\[regions.eu\] served_log: no service") as info:
        served_log_url("eu", "redis+sentinel://:s3cret@s1:26379")
    assert "s3cret" not in info.value.message


def _regions(**logs: str) -> dict[str, RegionConfig]:
    return {
        name: RegionConfig(name=name, store=f"sqlite:///{name}.sqlite", served_log=url)
        for name, url in logs.items()
    }


def test_two_regions_never_share_a_served_log_however_it_is_written() -> None:
    with pytest.raises(ConfigError, match="served log of its own"):
        check_served_logs(  # one Sentinel in common, one service, one database
            _regions(us="redis+sentinel://s1,s2/fyp/1", eu="redis+sentinel://s2:26379,s3/fyp/1")
        )
    with pytest.raises(ConfigError, match="served log of its own"):
        check_served_logs(_regions(us="redis://r:6379/1", eu="redis://R/1"))
    check_served_logs(  # another database, another service: another served log
        _regions(
            us="redis+sentinel://s1,s2/fyp/1",
            eu="redis+sentinel://s1,s2/fyp/2",
            ap="redis+sentinel://s1,s2/fyp-ap/1",
            sa="redis://r:6379/1",
        )
    )


def test_fyp_toml_takes_a_sentinel_url(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(
        '[regions.us]\nstore = "sqlite:///us.sqlite"\n'
        'served_log = "redis+sentinel://s1,s2/fyp-{region}/0?wait_replicas=1"\n',
        encoding="utf-8",
    )
    assert load_config(tmp_path).region("us").served_log == (
        "redis+sentinel://s1,s2/fyp-us/0?wait_replicas=1"
    )


def test_fyp_init_with_a_sentinel_served_log_never_shows_its_passwords(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fyp.cli.app import app

    url = "redis+sentinel://:s3cret@s1:26379,s2:26379/fyp-{region}/0?sentinel_password=w4tch"
    out = CliRunner().invoke(app, ["init", str(tmp_path / "d"), "--served-log", url])
    assert out.exit_code == 0, out.output
    assert (
        "served log: redis+sentinel://:***@s1:26379,s2:26379/fyp-us/0?sentinel_password=***"
        in out.output
    )
    assert "s3cret" not in out.output and "w4tch" not in out.output
    assert load_config(tmp_path / "d").region("eu").served_log == url.replace("{region}", "eu")
    assert redact(url) == (
        "redis+sentinel://:***@s1:26379,s2:26379/fyp-{region}/0?sentinel_password=***"
    )


def test_a_cluster_url_is_checked_when_the_config_is_read() -> None:
    target = parse_redis_url("redis+cluster://a:7000,b?socket_timeout=1")
    assert target.cluster and target.hosts == (("a", 7000), ("b", 6379)) and target.db == 0
    tls = parse_redis_url("rediss+cluster://a,b:7001?ssl_ca_certs=/ca.pem")
    assert tls.cluster and tls.tls and tls.options == (("ssl_ca_certs", "/ca.pem"),)
    assert parse_redis_url("redis+cluster://a?wait_replicas=1").wait_replicas == 1
    for bad, why in (
        ("redis+cluster://a/2", "database 0 only"),
        ("redis://a,b", "only redis+sentinel:// and redis+cluster://"),
        ("redis+cluster://a?ssl_ca_certs=/ca.pem", "unknown option 'ssl_ca_certs'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(why)):
            parse_redis_url(bad)
