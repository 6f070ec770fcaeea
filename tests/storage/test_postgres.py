"""The PostgreSQL store: the store contract, run when ``FYP_TEST_POSTGRES_URL`` names a
server (CI starts one: ``.ci/run``), plus what is particular to this backend.

Each test gets schemas of its own (``?schema=``), dropped afterwards, so tests can run in
parallel on one database.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from postgres_server import SERVER, drop_schemas, schema_url

from contracts.exposure_contract import ExposureContract
from contracts.store_contract import T0, StoreContract, make_row, make_user
from fyp.audit.log import AUDIT_TRUNCATE_MIGRATION, RESTORE_LOAD, TRUNCATE_GUARD, AuditLog
from fyp.errors import InvalidRequest, StorageError
from fyp.storage import Store, open_store
from fyp.storage.postgres import PostgresStore

psycopg = pytest.importorskip("psycopg") if SERVER else None
pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")


class TestPostgresStore(ExposureContract):
    integrity_errors = (psycopg.IntegrityError,) if psycopg else ()

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self.opened: list[Store] = []
        store = self.open_database("main")
        yield store
        for s in self.opened:
            s.close()
        drop_schemas(self.prefix)

    def open_database(self, name: str, region: str = "us", *, migrate: bool = True) -> Store:
        store = open_store(
            schema_url(f"{self.prefix}_{name}"), region, migrate=migrate, create=True
        )
        self.opened.append(store)
        return store

    def raw_insert(self, store: Store, table: str, values: dict[str, Any]) -> None:
        assert psycopg is not None
        assert isinstance(store, PostgresStore)
        schema = store.schema
        with psycopg.connect(SERVER, autocommit=True) as conn:
            cols = ", ".join(values)
            marks = ", ".join(["%s"] * len(values))
            conn.execute(
                f'INSERT INTO "{schema}".{table} ({cols}) VALUES ({marks})',
                list(values.values()),
            )

    def raw_execute(self, store: Store, sql: str) -> None:
        assert psycopg is not None
        assert isinstance(store, PostgresStore)
        with psycopg.connect(SERVER) as conn:  # one transaction, committed on success
            conn.execute(f'SET LOCAL search_path TO "{store.schema}"')
            conn.execute(sql)

    audit_log_edits = (*StoreContract.audit_log_edits, "TRUNCATE audit_log")

    # -- PostgreSQL specifics -------------------------------------------------------
    def test_a_missing_schema_is_an_error_unless_creating(self, store: Store) -> None:
        with pytest.raises(StorageError, match="missing"):
            open_store(schema_url(f"{self.prefix}_absent"), "us")

    def test_text_with_a_nul_is_a_client_error_and_the_store_goes_on(self, store: Store) -> None:
        """psycopg refuses a NUL before sending it: found by fuzzing the API (a 500)."""
        with pytest.raises(InvalidRequest, match="NUL"):
            store.existing_users(["a\x00b"])
        with pytest.raises(InvalidRequest, match="NUL"):
            store.insert_user(make_user("nul", country="a\x00b"))
        store.insert_user(make_user("nul", country="ab"))  # the connection is still usable
        assert store.existing_users(["nul"]) == {"nul"}

    def test_the_password_never_appears_in_errors(self) -> None:
        with pytest.raises(StorageError) as info:
            open_store("postgresql://fyp:s3cret@127.0.0.1:1/nowhere", "us")
        assert "s3cret" not in str(info.value) and "***" in str(info.value)

    def test_only_a_transaction_that_says_it_is_a_restore_load_truncates_the_audit_log(
        self, store: Store
    ) -> None:
        """The guard lets TRUNCATE through under ``SET LOCAL fyp.restore_load`` (what a
        restore's load sets), and the setting ends with that transaction: the next
        TRUNCATE on the same connection is refused again."""
        assert psycopg is not None and isinstance(store, PostgresStore)
        AuditLog(store).append("reviewer", "verdict", "v1")
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{store.schema}"')
            with conn.transaction():
                conn.execute(f"SET LOCAL {RESTORE_LOAD} = 'on'")
                conn.execute("TRUNCATE audit_log")
            assert conn.execute("SELECT COUNT(*) FROM audit_log").fetchone() == (0,)
            AuditLog(store).append("reviewer", "verdict", "v2")
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute("TRUNCATE audit_log")
            with pytest.raises(psycopg.Error, match="append-only"):  # a session SET
                conn.execute(f"SET {RESTORE_LOAD} = 'off'")  # is not 'on' either
                conn.execute("TRUNCATE audit_log")
        assert [e.subject for e in AuditLog(store).entries()] == ["v2"]

    def test_a_store_made_before_the_truncate_guard_gets_it_when_opened(self, store: Store) -> None:
        assert psycopg is not None and isinstance(store, PostgresStore)
        self.raw_execute(
            store,
            f"DROP TRIGGER {TRUNCATE_GUARD} ON audit_log; DROP FUNCTION {TRUNCATE_GUARD}(); "
            f"DELETE FROM schema_migrations WHERE version = {AUDIT_TRUNCATE_MIGRATION.version}",
        )
        assert not AuditLog(store).triggers_present()
        again = self.open_database("main", migrate=False)
        assert again.migrate() == [AUDIT_TRUNCATE_MIGRATION.version]
        assert AuditLog(again).triggers_present()
        with pytest.raises(psycopg.Error, match="append-only"):
            self.raw_execute(again, "TRUNCATE audit_log")

    def test_migration_28_records_each_pairs_latest_action(self, store: Store) -> None:
        """As on SQLite (tests/storage/test_sqlite.py): a store left at migration 27."""
        from fyp.catalog.blocks import NOT_BLOCKED_EITHER_WAY
        from fyp.catalog.follow_order import FOLLOW_ORDER_MIGRATION, user_actions
        from fyp.catalog.follows import follows_function
        from storage.test_sqlite import FOLLOW_ACTIONS_AFTER_28, OLD_FOLLOWS

        assert isinstance(store, PostgresStore)
        self.raw_execute(
            store,
            "DROP TABLE follow_actions; "
            + follows_function(NOT_BLOCKED_EITHER_WAY)
            + f"DELETE FROM schema_migrations WHERE version = {FOLLOW_ORDER_MIGRATION.version}",
        )
        self.raw_execute(store, OLD_FOLLOWS)
        again = self.open_database("main", migrate=False)
        assert again.migrate() == [FOLLOW_ORDER_MIGRATION.version]
        assert user_actions(again, "ana") == FOLLOW_ACTIONS_AFTER_28
        assert sorted(again.followed_creators("ana")) == ["bob", "dee"]

    def test_bulk_events_keep_their_order_and_skip_stored_ids(self, store: Store) -> None:
        store.bulk_insert_users([make_user("u1")])
        assert store.bulk_insert_events([make_row(f"e{i}", ts_ms=T0 + i) for i in range(50)]) == 50
        again = [make_row(f"e{i}", ts_ms=T0 + i) for i in range(40, 60)]
        assert store.bulk_insert_events(again) == 10
        assert [e.event_id for e in store.iter_events()] == [f"e{i}" for i in range(60)]

    def test_two_processes_serving_one_user_never_share_a_page_number(self, store: Store) -> None:
        """Two stores (two serving processes) record pages of one user at once: every
        page lands, numbered 1..n without gaps or repeats."""
        store.insert_user(make_user("u1"))
        other = self.open_database("main")
        per_thread = 40

        def serve(s: Store, tag: str) -> None:
            for k in range(per_thread):
                s.record_served("u1", [f"{tag}{k}"], T0 + k)

        threads = [
            threading.Thread(target=serve, args=(s, t)) for s, t in ((store, "a"), (other, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.served_since("u1", 0)) == 2 * per_thread
        assert store.user_version("u1")[2] == 2 * per_thread  # type: ignore[index]
