"""The embedded SQLite store: the store contract plus SQLite-specific behaviour."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.exposure_contract import ExposureContract
from contracts.store_contract import T0, make_row, make_user
from fyp.config import DeploymentConfig, new_config
from fyp.errors import ConfigError, StorageError, UnknownUser
from fyp.storage import Store, open_store
from fyp.storage.sqlite import BULK_REINDEX_ROWS, SQLiteStore


def sqlite_url(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def raw_connect(store: Store) -> sqlite3.Connection:
    assert isinstance(store, SQLiteStore)
    return sqlite3.connect(store.path)


class TestSQLiteStore(ExposureContract):
    integrity_errors = (sqlite3.IntegrityError,)

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        self.root = tmp_path
        self.opened: list[Store] = []
        store = self.open_database("main")
        yield store
        for s in self.opened:
            s.close()

    def open_database(self, name: str, region: str = "us", *, migrate: bool = True) -> Store:
        store = open_store(
            sqlite_url(self.root / f"{name}.sqlite"), region, migrate=migrate, create=True
        )
        self.opened.append(store)
        return store

    def raw_insert(self, store: Store, table: str, values: dict[str, Any]) -> None:
        conn = raw_connect(store)
        try:
            cols = ", ".join(values)
            marks = ", ".join("?" * len(values))
            with conn:
                conn.execute(
                    f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values())
                )
        finally:
            conn.close()

    def raw_execute(self, store: Store, sql: str) -> None:
        conn = raw_connect(store)
        try:
            with conn:
                conn.execute(sql)
        finally:
            conn.close()

    def test_unmigrated_store_reports_schema_version_zero(self, store: Store) -> None:
        super().test_unmigrated_store_reports_schema_version_zero(store)

    # -- SQLite specifics ---------------------------------------------------------
    def test_the_refusal_is_a_check_constraint(self, store: Store) -> None:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            self.raw_insert(
                store,
                "users",
                {"user_id": "eve", "home_region": "eu", "created_at_ms": T0, "updated_at_ms": T0},
            )

    def test_wal_mode_is_on(self, store: Store) -> None:
        conn = raw_connect(store)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()

    def test_foreign_keys_are_enforced(self, store: Store) -> None:
        assert isinstance(store, SQLiteStore)
        assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1

    def test_a_bulk_load_into_an_empty_table_indexes_afterwards(self, store: Store) -> None:
        """The secondary index is dropped for the load and rebuilt in the same transaction;
        a load that fails (a foreign row) rolls back with the index in place."""
        assert isinstance(store, SQLiteStore)
        n = BULK_REINDEX_ROWS
        store.bulk_insert_users([make_user("u1")])
        index = "SELECT sql FROM sqlite_master WHERE name = 'events_user'"
        before = store.query(index)
        with pytest.raises(UnknownUser):
            store.bulk_insert_events([make_row(f"e{i}", "u1" if i else "nobody") for i in range(n)])
        assert store.query(index) == before and store.count_events() == 0
        assert store.bulk_insert_events([make_row(f"e{i}", ts_ms=T0 + i) for i in range(n)]) == n
        assert store.query(index) == before
        plan = store.query("EXPLAIN QUERY PLAN SELECT seq FROM events WHERE user_id = 'u1'")
        assert "events_user" in str(plan)
        assert [e.event_id for e in store.user_events("u1", limit=2)] == [f"e{n - 1}", f"e{n - 2}"]

    def test_synchronous_defaults_to_normal(self, store: Store) -> None:
        assert isinstance(store, SQLiteStore)
        assert store.synchronous == "normal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL

    @pytest.mark.parametrize("mode", ["full", "FULL"])
    def test_synchronous_from_the_url(self, tmp_path: Path, mode: str) -> None:
        store = open_store(
            sqlite_url(tmp_path / "s.sqlite", f"synchronous={mode}"), "us", create=True
        )
        try:
            assert isinstance(store, SQLiteStore)
            assert store.synchronous == "full"
            assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            # The query string is not part of the file name.
            assert Path(store.path) == tmp_path / "s.sqlite"
            assert (tmp_path / "s.sqlite").is_file()
        finally:
            store.close()

    def test_unknown_synchronous_mode_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(StorageError, match="synchronous"):
            open_store(sqlite_url(tmp_path / "s.sqlite", "synchronous=sometimes"), "us")

    @pytest.mark.parametrize("url", ["sqlite://two-slashes.db", "sqlite:relative.db", "sqlite:"])
    def test_malformed_sqlite_url_is_refused(self, tmp_path: Path, url: str) -> None:
        with pytest.raises(StorageError):
            SQLiteStore(url, "us")

    def test_unopenable_path_is_a_storage_error(self, tmp_path: Path) -> None:
        with pytest.raises(StorageError):
            open_store(sqlite_url(tmp_path), "us")  # a directory, not a database file

    def test_path_under_a_regular_file_is_a_storage_error(self, tmp_path: Path) -> None:
        (tmp_path / "afile").write_text("not a directory")
        with pytest.raises(StorageError):
            open_store(sqlite_url(tmp_path / "afile" / "store.sqlite"), "us", create=True)

    def test_empty_path_is_refused(self) -> None:
        with pytest.raises(StorageError):
            SQLiteStore("sqlite:///", "us")

    @pytest.mark.parametrize("region", ["US", "a b", "../x", "", "x'); DROP TABLE users; --"])
    def test_bad_region_name_is_refused_before_reaching_sql(
        self, tmp_path: Path, region: str
    ) -> None:
        with pytest.raises(ConfigError):
            SQLiteStore(sqlite_url(tmp_path / "s.sqlite"), region)
        assert not (tmp_path / "s.sqlite").exists()

    def test_in_memory_store(self) -> None:
        store = open_store("sqlite:///:memory:", "us")
        try:
            store.insert_user(make_user("u1"))
            assert store.count_users() == 1
            assert store.schema_version() >= 1
        finally:
            store.close()

    def test_a_missing_store_file_is_not_created_unless_asked(self, tmp_path: Path) -> None:
        """A store moved away, a volume not mounted or a misspelt URL must not come back
        as a new empty store (the region would serve as if it had no users)."""
        path = tmp_path / "gone" / "store.sqlite"
        with pytest.raises(StorageError, match=r"store of region 'us' is missing") as info:
            open_store(sqlite_url(path), "us")
        assert str(path) in info.value.message
        assert not path.exists() and not path.parent.exists()

    def test_missing_parent_directories_are_created(self, tmp_path: Path) -> None:
        path = tmp_path / "a" / "b" / "store.sqlite"
        store = open_store(sqlite_url(path), "us", create=True)
        store.close()
        assert path.is_file()

    def test_relative_url_is_relative_to_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        store = open_store("sqlite:///rel/store.sqlite", "us", create=True)
        store.close()
        assert (tmp_path / "rel" / "store.sqlite").is_file()


class TestResolveUrl:
    """Relative store and backup URLs are resolved against the deployment root."""

    @pytest.fixture
    def config(self, tmp_path: Path) -> DeploymentConfig:
        return new_config(tmp_path / "dep", ["us"])

    def test_relative_sqlite_url_resolves_under_root(self, config: DeploymentConfig) -> None:
        url = config.resolve_url("sqlite:///regions/us/store.sqlite")
        assert url == f"sqlite:///{config.root / 'regions' / 'us' / 'store.sqlite'}"
        assert url.startswith("sqlite:////")

    def test_dotdot_is_normalised(self, config: DeploymentConfig) -> None:
        url = config.resolve_url("sqlite:///regions/../other/x.sqlite")
        assert url == f"sqlite:///{config.root / 'other' / 'x.sqlite'}"

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:////abs/path/store.sqlite",
            "sqlite:///:memory:",
            "file:///abs/backups",
            "postgresql://db.example/fyp",
            "s3://bucket/prefix",
        ],
    )
    def test_absolute_and_foreign_urls_are_unchanged(
        self, config: DeploymentConfig, url: str
    ) -> None:
        assert config.resolve_url(url) == url

    def test_relative_file_url_resolves_under_root(self, config: DeploymentConfig) -> None:
        assert config.resolve_url("file://backups/us") == f"file://{config.root / 'backups/us'}"

    def test_query_string_survives_resolution(self, config: DeploymentConfig) -> None:
        url = config.resolve_url("sqlite:///s.sqlite?synchronous=full")
        assert url == f"sqlite:///{config.root / 's.sqlite'}?synchronous=full"

    def test_resolved_url_does_not_depend_on_the_working_directory(
        self, config: DeploymentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        store = open_store(
            config.resolve_url("sqlite:///regions/us/store.sqlite"), "us", create=True
        )
        store.close()
        assert (config.root / "regions" / "us" / "store.sqlite").is_file()
        assert not (elsewhere / "regions").exists()


def test_migration_statements_split_like_sqlite_parses_them() -> None:
    from fyp.storage.migrations import split_statements

    script = """
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); UPDATE c SET y = 1; END;
    CREATE INDEX i ON a (x);
    """
    assert [s.split()[1] for s in split_statements(script)] == ["TABLE", "TRIGGER", "INDEX"]
    assert split_statements("  ;\n") == []


def _store_at(path: Path, version: int) -> sqlite3.Connection:
    """A raw store with the core migrations up to ``version`` applied, as an older fyp
    left it."""
    from fyp.storage.migrations import split_statements, sqlite_migrations

    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, "
        "applied_at_ms INTEGER)"
    )
    for m in sqlite_migrations():
        if m.version <= version:
            for statement in split_statements(m.sql.format(region="us")):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
    return conn


def test_per_video_label_rows_migrate_into_one_set_per_user(tmp_path: Path) -> None:
    """A store written before migration 3 keeps every held-out label."""
    path = tmp_path / "old.sqlite"
    conn = _store_at(path, 1)
    conn.execute(
        "INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms) "
        "VALUES ('u1', 'us', 0, 0), ('u2', 'us', 0, 0)"
    )
    conn.executemany(
        "INSERT INTO labels (dataset, split, user_id, video_id) VALUES (?,?,?,?)",
        [
            ("ds", "test", "u1", "v2"),
            ("ds", "test", "u1", "v1"),
            ("ds", "val", "u1", "v3"),
            ("ds", "test", "u2", "v1"),
        ],
    )
    conn.commit()
    conn.close()
    store = open_store(sqlite_url(path), "us", create=True)
    try:
        assert store.count_labels() == 4
        assert [(r.user_id, r.video_id) for r in store.iter_labels("ds", "test")] == [
            ("u1", "v1"),
            ("u1", "v2"),
            ("u2", "v1"),
        ]
        assert [r.video_id for r in store.iter_labels("ds", "val")] == ["v3"]
    finally:
        store.close()


def test_per_video_served_rows_migrate_into_pages(tmp_path: Path) -> None:
    """A store written before migration 5 keeps its served log and counters: each
    (user, time) becomes one page, numbered down to 0 below the counter's future pages."""
    path = tmp_path / "old.sqlite"
    conn = _store_at(path, 4)
    conn.execute(
        "INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms, served_seq) "
        "VALUES ('u1', 'us', 0, 0, 2), ('u2', 'us', 0, 0, 0)"
    )
    conn.executemany(
        "INSERT INTO served (user_id, video_id, served_at_ms) VALUES (?,?,?)",
        [("u1", "v1", 100), ("u1", "v2", 100), ("u1", "v3", 200), ("u2", "v1", 50)],
    )
    conn.commit()
    conn.close()
    store = open_store(sqlite_url(path), "us", create=True)
    try:
        assert sorted(store.served_since("u1", 0)) == ["v1", "v2", "v3"]
        assert store.served_since("u1", 150) == ["v3"]
        assert store.served_since("u2", 0) == ["v1"]
        assert store.user_version("u1") == (0, -1, 2)  # the counter is untouched
        assert store.record_served("u1", ["v2", "v4"], 300) == 3
        assert sorted(store.served_since("u1", 150)) == ["v2", "v3", "v4"]
        raw = raw_connect(store)
        pages = raw.execute(
            "SELECT user_id, page_seq, served_at_ms, video_ids FROM served_pages ORDER BY 1, 2"
        ).fetchall()
        view = raw.execute("SELECT COUNT(*) FROM served WHERE user_id='u1'").fetchone()[0]
        raw.close()
        assert pages == [
            ("u1", -1, 100, '["v1","v2"]'),
            ("u1", 0, 200, '["v3"]'),
            ("u1", 3, 300, '["v2","v4"]'),
            ("u2", 0, 50, '["v1"]'),
        ]
        assert view == 5  # the old shape, one row per video served
    finally:
        store.close()


def test_follow_events_written_before_migration_24_become_follows(tmp_path: Path) -> None:
    """The follows table starts with every follow the events held (a creator once; not
    oneself; not a video whose creator's name is gone)."""
    from fyp.catalog.follows import user_follows

    path = tmp_path / "old.sqlite"
    conn = _store_at(path, 23)
    conn.execute(
        "INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms) "
        "VALUES ('ana', 'us', 0, 0), ('bob', 'us', 0, 0)"
    )
    conn.executemany(
        "INSERT INTO videos (video_id, region, creator_id, duration_ms, regions, "
        "created_at_ms, updated_at_ms) VALUES (?, 'us', ?, 1000, '[\"us\"]', 0, 0)",
        [("v1", "bob"), ("v2", "bob"), ("v3", "ana"), ("v4", "[elsewhere]")],
    )
    conn.executemany(
        "INSERT INTO events (event_id, user_id, video_id, type, ts_ms) VALUES (?, ?, ?, ?, ?)",
        [
            ("e1", "ana", "v2", "follow", 50),
            ("e2", "ana", "v1", "follow", 20),
            ("e3", "ana", "v3", "follow", 30),
            ("e4", "ana", "v4", "follow", 40),
            ("e5", "bob", "v3", "like", 60),
        ],
    )
    conn.commit()
    conn.close()
    store = open_store(sqlite_url(path), "us", create=True)
    try:
        assert store.schema_version() >= 24
        assert [(f.creator_id, f.since_ms) for f in user_follows(store, "ana")] == [("bob", 20)]
        assert user_follows(store, "bob") == []
    finally:
        store.close()


def test_a_store_made_before_migration_30_gets_the_following_tabs_newest_first_index(
    tmp_path: Path,
) -> None:
    """The Following tab's query reads the followed creators' videos from the index alone,
    the newest-first one (migration 30), which takes the place of migration 25's."""
    from fyp.audit.log import sql_store
    from fyp.storage.following_sql import sqlite_query

    path = tmp_path / "old.sqlite"
    conn = _store_at(path, 27)
    conn.commit()
    conn.close()
    store = open_store(sqlite_url(path), "us", create=True)
    try:
        assert store.schema_version() >= 30
        sql = sql_store(store)
        indexes = {r[0] for r in sql.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "videos_creator_newest" in indexes and "videos_creator_time" not in indexes
        for after in (None, (5, "v")):
            query, params = sqlite_query("ana", after, 11, 0)
            plan = sql.query("EXPLAIN QUERY PLAN " + query, params)
            steps = " / ".join(str(r[-1]) for r in plan)
            assert "USING COVERING INDEX videos_creator_newest" in steps, steps
    finally:
        store.close()


# What an older fyp left (migration 27): ana's follow events on bob's v1 arrived out of
# order (the follow at 20 last, so it stands), she followed cy's v2 at 40 and the API
# ended it, followed dee through the API at 50, blocked cy at 60, followed herself
OLD_FOLLOWS = """
    INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms)
        VALUES ('ana', 'us', 0, 0), ('bob', 'us', 0, 0), ('cy', 'us', 0, 0), ('dee', 'us', 0, 0);
    INSERT INTO videos (video_id, region, creator_id, duration_ms, regions, created_at_ms,
        updated_at_ms) VALUES ('v1', 'us', 'bob', 1000, '["us"]', 0, 0),
        ('v2', 'us', 'cy', 1000, '["us"]', 0, 0), ('v3', 'us', 'dee', 1000, '["us"]', 0, 0),
        ('v4', 'us', 'ana', 1000, '["us"]', 0, 0);
    INSERT INTO events (event_id, user_id, video_id, type, ts_ms) VALUES
        ('e1', 'ana', 'v1', 'follow', 10), ('e2', 'ana', 'v1', 'unfollow', 30),
        ('e3', 'ana', 'v1', 'follow', 20), ('e4', 'ana', 'v2', 'follow', 40),
        ('e5', 'ana', 'v4', 'follow', 70);
    DELETE FROM follows WHERE creator_id = 'cy';
    INSERT INTO follows (user_id, creator_id, since_ms) VALUES ('ana', 'dee', 50);
    INSERT INTO blocks (user_id, creator_id, since_ms) VALUES ('ana', 'cy', 60);
"""
# each pair's latest time, and whether it is followed (the table as it was)
FOLLOW_ACTIONS_AFTER_28 = [
    {"creator_id": "bob", "acted_ms": 30, "following": True},
    {"creator_id": "dee", "acted_ms": 50, "following": True},
    {"creator_id": "cy", "acted_ms": 60, "following": False},
]


def test_migration_28_records_each_pairs_latest_action(tmp_path: Path) -> None:
    """The follows stay as they were; each pair followed, unfollowed or blocked gets the
    latest time the store knows, so an older event sent late changes nothing."""
    from fyp.catalog.follow_order import user_actions
    from fyp.catalog.follows import user_follows

    path = tmp_path / "old.sqlite"
    conn = _store_at(path, 27)
    conn.executescript(OLD_FOLLOWS)
    conn.close()
    store = open_store(sqlite_url(path), "us", create=True)
    try:
        assert user_actions(store, "ana") == FOLLOW_ACTIONS_AFTER_28
        assert [(f.creator_id, f.since_ms) for f in user_follows(store, "ana")] == [
            ("bob", 20),
            ("dee", 50),
        ]
    finally:
        store.close()
