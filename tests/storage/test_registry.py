"""``fyp.storage.open_store``: choose a backend by URL scheme."""

from __future__ import annotations

from pathlib import Path

import pytest

from fyp.errors import ConfigError, StorageError
from fyp.storage import Store, open_store
from fyp.storage.sqlite import SQLiteStore


def test_sqlite_url_opens_a_migrated_sqlite_store(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", "us", create=True)
    try:
        assert isinstance(store, SQLiteStore)
        assert isinstance(store, Store)
        assert store.region == "us"
        assert store.url == f"sqlite:///{tmp_path / 's.sqlite'}"
        assert store.schema_version() >= 1
        assert store.migrate() == []
    finally:
        store.close()


def test_migrate_false_leaves_the_schema_alone(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}", "us", migrate=False, create=True)
    try:
        assert store.migrate() != []  # nothing had been applied yet
    finally:
        store.close()


def test_upper_case_scheme_reaches_the_sqlite_backend(tmp_path: Path) -> None:
    # Dispatch ignores case; the SQLite backend then insists on the canonical prefix.
    with pytest.raises(StorageError, match="not a sqlite URL"):
        open_store(f"SQLITE:///{tmp_path / 's.sqlite'}", "us")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_postgres_urls_reach_the_postgres_backend(scheme: str) -> None:
    """No server listens on port 1: the PostgreSQL store answers, with a StorageError
    naming the region and the URL without its password."""
    with pytest.raises(StorageError, match="cannot connect") as info:
        open_store(f"{scheme}://fyp:pw@127.0.0.1:1/fyp", "us")
    assert info.value.details["region"] == "us"
    assert ":pw@" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["mysql://localhost/fyp", "file:///tmp/x", "/tmp/store.sqlite", "", "s3://bucket/x"]
)
def test_unknown_scheme_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="no store backend"):
        open_store(url, "us")
