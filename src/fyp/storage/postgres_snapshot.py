"""A PostgreSQL store copied into a SQLite store file, and replaced by one.

Backups, restores and carve-outs are built on SQLite files: a backup's store part is a
SQLite store (sealed, checked, scanned for residency and erasures by code that reads
SQLite, :mod:`fyp.sovereignty.backup`). A PostgreSQL store has the same tables and
columns (:mod:`fyp.storage.postgres_schema`), so a region kept on a server is backed up
as the SQLite store it would be, and restored from one:

- :meth:`PostgresSnapshots.export_sqlite` copies every table into a new SQLite store of
  the region in one ``REPEATABLE READ, READ ONLY`` transaction: what the region held at
  one instant, while its writers go on;
- :meth:`PostgresSnapshots.import_sqlite` replaces every row of the region with the
  file's in one transaction that holds the region's writer lock (``TRUNCATE`` locks
  every table against readers too, until it commits): it happens whole or not at all.

Only the data moves: each side keeps its own ``schema_migrations`` and ``store_meta``
(the region), and a file whose tables or columns differ from the server's is refused
before anything is written. Identity counters end where SQLite's would (the largest key
restored, or ``sqlite_sequence`` for ``AUTOINCREMENT`` tables), so numbers read on
after a restore as after a SQLite one.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from fyp.audit.log import RESTORE_LOAD
from fyp.errors import StorageError
from fyp.storage.base import Store
from fyp.storage.postgres_dialect import driver as _driver

OWN_TABLES = frozenset({"schema_migrations", "store_meta"})
"""Tables each store keeps for itself: never copied either way."""
RESTORED_KEY = "restored_by"  # store_meta: the id of the last restore loaded
_BATCH = 5_000
# the store's "open" lock: every store holds it shared while open (waiting while a
# restore loads the region), a restore exclusively (it refuses while another has it)
OPEN_LOCK = "hashtext(current_schema() || '.fyp-open')"
_SCHEMA_OID = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
_INSERT_TRIGGERS = (  # triggers that fire on INSERT (tgtype bit 2): the change feed's
    "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    f"WHERE c.relnamespace = {_SCHEMA_OID} AND NOT t.tgisinternal "
    "AND (t.tgtype & 4) <> 0 ORDER BY 1, 2"
)
_PARENTS = (  # (table, table it references) for every foreign key of the schema
    "SELECT ch.relname, pa.relname FROM pg_constraint c "
    "JOIN pg_class ch ON ch.oid = c.conrelid JOIN pg_class pa ON pa.oid = c.confrelid "
    f"WHERE c.contype = 'f' AND c.connamespace = {_SCHEMA_OID}"
)
_IDENTITY = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND is_identity = 'YES'"
)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresSnapshots(Store):
    """Copies of ``PostgresStore`` to and from SQLite files (it sets what is declared)."""

    region: str
    _conn: Any
    _lock: threading.RLock

    @abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any: ...

    @abstractmethod
    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]: ...

    @abstractmethod
    def table_names(self) -> list[str]: ...

    @abstractmethod
    def table_columns(self, table: str) -> list[tuple[str, str]]: ...

    # -- the open lock ---------------------------------------------------------------
    def claim_exclusive(self) -> bool:
        """Take the open lock exclusively for this connection's life: False while any
        other connection to the region's store (another process's) holds it."""
        row = self._all(f"SELECT pg_try_advisory_lock({OPEN_LOCK})")
        return bool(row[0][0])

    # -- export ----------------------------------------------------------------------
    def export_sqlite(self, dest: Path, *, lenient: bool = False) -> list[str]:
        """Copy the region into a new SQLite store file ``dest`` (which must not exist).

        ``lenient``: a table that cannot be read is left out of the file (dropped from
        it, so that reading it there fails too) instead of failing the copy; returns
        what was left out and why (for salvaging a damaged region)."""
        from fyp.storage import open_store

        if dest.exists():
            raise StorageError(f"{dest} exists: a snapshot goes into a new file")
        open_store(f"sqlite:///{dest}", self.region, create=True).close()  # its schema
        skipped: dict[str, str] = {}
        psycopg = _driver()
        with closing(sqlite3.connect(dest, isolation_level=None)) as out, self._lock:
            out.execute("PRAGMA synchronous=OFF")
            triggers = out.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger'")
            saved = triggers.fetchall()
            for name, _ in saved:  # (rows are copied as they are, change feed included)
                out.execute(f"DROP TRIGGER {_q(name)}")
            out.execute("BEGIN")
            with self._conn.transaction():
                self._exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                tables = self._file_tables(out)
                if not lenient:
                    self._tables(out)  # the same tables on both sides
                for table in tables:
                    try:
                        cols = self._columns(out, table)
                        with self._conn.transaction():  # a savepoint: one table may fail
                            self._copy_out(out, table, cols)
                    except (psycopg.Error, StorageError) as exc:
                        if not lenient:
                            raise StorageError(
                                f"cannot copy table {table} of region {self.region!r}: {exc}"
                            ) from exc
                        out.execute(f"DELETE FROM {_q(table)}")
                        out.execute(f"DROP TABLE {_q(table)}")
                        skipped[table] = str(exc).strip()
                self._copy_counters_out(out)
            out.execute("COMMIT")
            for _, sql in saved:
                if not set(_on(sql)) & set(skipped):
                    out.execute(sql)
        return [f"{table}: {why}" for table, why in skipped.items()]

    @staticmethod
    def _file_tables(sqlite: sqlite3.Connection) -> list[str]:
        rows = sqlite.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
        return sorted({str(r[0]) for r in rows} - OWN_TABLES)

    def _tables(self, sqlite: sqlite3.Connection) -> list[str]:
        """The tables both sides have, after checking that they have the same ones."""
        mine = set(self.table_names()) - OWN_TABLES
        theirs = set(self._file_tables(sqlite))
        if mine != theirs:
            raise StorageError(
                f"the SQLite snapshot and the PostgreSQL store of region {self.region!r} "
                f"have different tables (only in the snapshot: {sorted(theirs - mine)}, only "
                f"on the server: {sorted(mine - theirs)}): a backup of another schema "
                "version, or tables dropped on the server?"
            )
        return sorted(mine)

    def _columns(self, sqlite: sqlite3.Connection, table: str) -> list[str]:
        mine = [name for name, _ in self.table_columns(table)]
        theirs = [str(r[1]) for r in sqlite.execute(f"PRAGMA table_info({_q(table)})")]
        if set(mine) != set(theirs):
            raise StorageError(
                f"table {table} of region {self.region!r} has columns {sorted(mine)} on the "
                f"server and {sorted(theirs)} in the SQLite snapshot"
            )
        return mine

    def _copy_out(self, sqlite: sqlite3.Connection, table: str, cols: list[str]) -> None:
        names = ", ".join(_q(c) for c in cols)
        types = [t.lower() for _, t in self.table_columns(table)]
        insert = f"INSERT INTO {_q(table)} ({names}) VALUES ({', '.join('?' * len(cols))})"
        select = f"COPY (SELECT {names} FROM {_q(table)}) TO STDOUT (FORMAT BINARY)"
        with self._conn.cursor() as cur, cur.copy(select) as cp:
            cp.set_types(types)
            batch: list[tuple[Any, ...]] = []
            for row in cp.rows():
                batch.append(row)
                if len(batch) >= _BATCH:
                    sqlite.executemany(insert, batch)
                    batch.clear()
            sqlite.executemany(insert, batch)

    def _copy_counters_out(self, sqlite: sqlite3.Connection) -> None:
        """``sqlite_sequence`` of AUTOINCREMENT tables from the server's counters."""
        for table, column in self._all(_IDENTITY):
            sql = sqlite.execute(
                "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)
            ).fetchone()
            if sql is None or "AUTOINCREMENT" not in str(sql[0]).upper():
                continue
            (last,) = self._all(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, %s))",
                (_q(table), column),
            )[0]
            top = sqlite.execute(f"SELECT MAX({_q(column)}) FROM {_q(table)}").fetchone()[0]
            sqlite.execute("DELETE FROM sqlite_sequence WHERE name=?", (table,))
            sqlite.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                (table, max(int(last or 0), int(top or 0))),
            )

    # -- import ----------------------------------------------------------------------
    def import_sqlite(self, src: Path, restore_id: str) -> None:
        """Replace every row of the region with those of the SQLite store file ``src``,
        in one transaction that also records ``restore_id`` (:meth:`restored_by`).

        Checked first, before anything is written: the file belongs to this region and
        has the server's tables and columns. The audit log's guards refuse UPDATE,
        DELETE and TRUNCATE; this load alone sets the transaction-local setting its
        TRUNCATE guard lets through (``fyp.audit.log.RESTORE_LOAD``): its rows are
        replaced like the rest, as a SQLite restore replaces the file holding them (the
        replaced entries are carried back on top,
        :mod:`fyp.sovereignty.restore_reapply`). Triggers that fire on
        INSERT (the catalogue change feed's) are off while the rows go in, so the change
        feed holds the file's rows, not new ones."""
        with closing(sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)) as file:
            row = file.execute("SELECT value FROM store_meta WHERE key='region'").fetchone()
            if row is None or row[0] != self.region:
                raise StorageError(
                    f"the snapshot {src.name} is of region {row[0] if row else None!r}, "
                    f"not {self.region!r}"
                )
            tables = self._tables(file)
            columns = {t: self._columns(file, t) for t in tables}
            with self.transaction(), self._lock:
                triggers = self._all(_INSERT_TRIGGERS)
                for table, name in triggers:
                    self._exec(f"ALTER TABLE {_q(table)} DISABLE TRIGGER {_q(name)}")
                self._exec(f"SET LOCAL {RESTORE_LOAD} = 'on'")  # (ends with the load)
                self._exec(f"TRUNCATE {', '.join(_q(t) for t in tables)}")
                for table in self._parents_first(tables):
                    self._copy_in_rows(file, table, columns[table])
                self._set_counters(file)
                for table, name in triggers:
                    self._exec(f"ALTER TABLE {_q(table)} ENABLE TRIGGER {_q(name)}")
                self._exec(
                    "INSERT INTO store_meta VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (RESTORED_KEY, restore_id),
                )

    def restored_by(self) -> str | None:
        """The id of the last restore that loaded this store (see import_sqlite)."""
        rows = self._all("SELECT value FROM store_meta WHERE key = %s", (RESTORED_KEY,))
        return str(rows[0][0]) if rows else None

    def _parents_first(self, tables: list[str]) -> list[str]:
        parents: dict[str, set[str]] = {t: set() for t in tables}
        for child, parent in self._all(_PARENTS):
            if child in parents and parent != child:
                parents[child].add(str(parent))
        out: list[str] = []
        while len(out) < len(tables):
            ready = [t for t in tables if t not in out and parents[t] <= set(out)]
            if not ready:
                raise StorageError(f"foreign keys of region {self.region!r} form a cycle")
            out += ready
        return out

    def _copy_in_rows(self, file: sqlite3.Connection, table: str, cols: list[str]) -> None:
        names = ", ".join(_q(c) for c in cols)
        with self._conn.cursor() as cur, cur.copy(f"COPY {_q(table)} ({names}) FROM STDIN") as cp:
            for row in file.execute(f"SELECT {names} FROM {_q(table)}"):
                cp.write_row(row)

    def _set_counters(self, file: sqlite3.Connection) -> None:
        """Each identity counter where SQLite's would be: the largest key, or the file's
        ``sqlite_sequence`` entry where the table has one (AUTOINCREMENT)."""
        try:
            seqs = dict(file.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        except sqlite3.OperationalError:  # no AUTOINCREMENT table
            seqs = {}
        for table, column in self._all(_IDENTITY):
            top = self._all(f"SELECT MAX({_q(column)}) FROM {_q(table)}")[0][0]
            last = max(int(top or 0), int(seqs.get(table) or 0))
            called = "true" if last > 0 else "false"  # false: the next value is 1
            self._exec(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), %s::bigint, {called})",
                (_q(table), column, max(last, 1)),
            )


def _on(trigger_sql: str) -> Iterator[str]:
    """The table a SQLite trigger's statement names after ON (for skipped tables)."""
    words = trigger_sql.replace("(", " ").split()
    for i, word in enumerate(words[:-1]):
        if word.upper() == "ON":
            yield words[i + 1].strip('"')
