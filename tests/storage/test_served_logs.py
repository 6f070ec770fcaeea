"""The served log contract against every backend: the region's store (SQLite always,
PostgreSQL when ``FYP_TEST_POSTGRES_URL`` is set) and Redis (``FYP_TEST_REDIS_URL``),
the latter beside a SQLite store and beside a PostgreSQL one, a Redis master found
through Sentinel (``FYP_TEST_REDIS_SENTINEL_URL``), with and without waiting for its
replica on every write, a Redis Cluster of three primaries (``redis+cluster://``), and
one server, a cluster and a Sentinel's master spoken to over TLS only (``rediss://``,
``rediss+cluster://``, ``rediss+sentinel://``; the last four started by the tests with
the other Redis ones)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import SERVER as POSTGRES
from postgres_server import drop_schemas, schema_url

from contracts.served_log_contract import WINDOW_MS, ServedLogContract
from fyp.storage import Store, open_store
from fyp.storage.served_logs import ServedLog, StoreServedLog, open_served_log

needs_postgres = pytest.mark.skipif(not POSTGRES, reason="FYP_TEST_POSTGRES_URL is not set")


class _Opened:
    """What a test opened, closed at its end."""

    @pytest.fixture(autouse=True)
    def _close_opened(self) -> Iterator[None]:
        self.stores: list[Store] = []
        self.logs: list[ServedLog] = []
        yield
        for log in self.logs:
            log.close()
        for store in self.stores:
            store.close()

    def sqlite_store(self, name: str) -> Store:
        path = self.tmp / f"{name}.sqlite"
        store = open_store(f"sqlite:///{path}", "us", create=not path.exists())
        self.stores.append(store)
        return store

    def postgres_store(self, name: str) -> Store:
        store = open_store(schema_url(f"{self.prefix}_{name}"), "us", create=True)
        self.stores.append(store)
        return store

    def keep(self, log: ServedLog) -> ServedLog:
        self.logs.append(log)
        return log


class TestSQLiteStoreServedLog(_Opened, ServedLogContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.tmp = tmp_path

    def open_log(self, name: str = "main") -> ServedLog:
        return StoreServedLog(self.sqlite_store(name))


@needs_postgres
class TestPostgresStoreServedLog(_Opened, ServedLogContract):
    @pytest.fixture(autouse=True)
    def _schemas(self) -> Iterator[None]:
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        yield
        drop_schemas(self.prefix)

    def open_log(self, name: str = "main") -> ServedLog:
        return StoreServedLog(self.postgres_store(name))


class TestRedisServedLog(_Opened, ServedLogContract):
    """Redis beside a SQLite store."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, redis_urls: list[str]) -> None:
        self.tmp, self.url = tmp_path, redis_urls[0]

    def open_log(self, name: str = "main") -> ServedLog:
        store = self.sqlite_store(name)
        return self.keep(open_served_log(self.url, "us", store, WINDOW_MS))


@needs_postgres
class TestRedisServedLogOnPostgres(_Opened, ServedLogContract):
    """Redis beside a PostgreSQL store."""

    @pytest.fixture(autouse=True)
    def _server(self, redis_urls: list[str]) -> Iterator[None]:
        self.prefix, self.url = f"t{uuid.uuid4().hex[:12]}", redis_urls[0]
        yield
        drop_schemas(self.prefix)

    def open_log(self, name: str = "main") -> ServedLog:
        store = self.postgres_store(name)
        return self.keep(open_served_log(self.url, "us", store, WINDOW_MS))


class TestSentinelServedLog(_Opened, ServedLogContract):
    """Redis through Sentinel (``redis+sentinel://``) beside a SQLite store."""

    options = ""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, sentinel_urls: list[str]) -> None:
        self.tmp, self.url = tmp_path, sentinel_urls[0] + self.options

    def open_log(self, name: str = "main") -> ServedLog:
        store = self.sqlite_store(name)
        return self.keep(open_served_log(self.url, "us", store, WINDOW_MS))


class TestSentinelServedLogWaitingForItsReplica(TestSentinelServedLog):
    """Every write followed by ``WAIT 1`` (a pipeline, ``EVAL``: another code path)."""

    options = "?wait_replicas=1"


class TestClusterServedLog(_Opened, ServedLogContract):
    """A Redis Cluster (``redis+cluster://``) beside a SQLite store."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, cluster_url: str) -> None:
        self.tmp, self.url = tmp_path, cluster_url

    def open_log(self, name: str = "main") -> ServedLog:
        store = self.sqlite_store(name)
        return self.keep(open_served_log(self.url, "us", store, WINDOW_MS))


class TestClusterServedLogWaitingForReplicas(TestClusterServedLog):
    """A cluster whose primaries have a replica each, every write followed by ``WAIT 1``
    on its slot's primary (``wait_replicas=1``: another code path)."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, replicated_cluster_url: str) -> None:
        self.tmp, self.url = tmp_path, replicated_cluster_url + "?wait_replicas=1"


class TestTlsClusterServedLog(TestClusterServedLog):
    """A Redis Cluster over TLS only (``rediss+cluster://``, its CA in ``ssl_ca_certs``)."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, tls_cluster_url: str) -> None:
        self.tmp, self.url = tmp_path, tls_cluster_url


class TestTlsServedLog(TestClusterServedLog):
    """One Redis server over TLS only (``rediss://``)."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, tls_redis_url: str) -> None:
        self.tmp, self.url = tmp_path, tls_redis_url


class TestTlsSentinelServedLog(TestClusterServedLog):
    """A master found through a Sentinel, both over TLS only (``rediss+sentinel://``)."""

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path, tls_sentinel_url: str) -> None:
        self.tmp, self.url = tmp_path, tls_sentinel_url
