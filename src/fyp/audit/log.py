"""Each region's append-only, hash-chained audit log.

Every moderation action is one entry in the audit log of the region where it took
effect, kept in a table of that region's own store (an action about a region's
catalogue is that region's record). Entry ``n`` carries the hash of entry ``n - 1``;
its own hash is sha256 over a canonical JSON of the entry (sequence number, time,
actor, action, subject, details and that previous hash). Editing, deleting or
reordering any entry breaks the chain at that point, which :meth:`AuditLog.verify`
finds.

Triggers refuse UPDATE and DELETE on the table (and, on PostgreSQL, TRUNCATE but in a
restore's load), but they only stop mistakes: anyone holding the file, or SQL access
to the server, can drop them. The hash chain is the real guarantee, and
cutting entries off the end is only caught against a head (sequence number and hash)
recorded elsewhere: the ``audit_head`` row catches a careless truncation, and
``verify(expect_head=...)`` checks a head that was exported earlier.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, runtime_checkable

from fyp.errors import ConfigError, InvalidRequest
from fyp.storage.migrations import Migration

GENESIS = "0" * 64
"""The ``prev_hash`` of the first entry of every log."""

AUDIT_MIGRATION = Migration(
    11,
    "audit log: append-only, hash-chained, one per region",
    """
    CREATE TABLE audit_log (
        seq            INTEGER PRIMARY KEY,
        region         TEXT NOT NULL CHECK (region = '{region}'),
        ts_ms          INTEGER NOT NULL,
        actor          TEXT NOT NULL,
        action         TEXT NOT NULL,
        subject        TEXT NOT NULL,
        details        TEXT NOT NULL,
        prev_hash      TEXT NOT NULL,
        hash           TEXT NOT NULL UNIQUE
    );
    CREATE INDEX audit_log_subject ON audit_log (subject, seq);

    CREATE TABLE audit_head (
        region         TEXT PRIMARY KEY CHECK (region = '{region}'),
        seq            INTEGER NOT NULL,
        hash           TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)

TRIGGERS = {
    "audit_log_no_update": "CREATE TRIGGER IF NOT EXISTS audit_log_no_update "
    "BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "audit_log_no_delete": "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete "
    "BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
}
AUDIT_TRIGGERS_MIGRATION = Migration(
    13,
    "audit log: append-only triggers, in every store from its migration on",
    "\n".join(f"{sql};" for sql in TRIGGERS.values()),
    postgres="""
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
    """
    + "\n".join(
        f"CREATE TRIGGER {name} BEFORE {name.rsplit('_', 1)[1].upper()} ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();"
        for name in TRIGGERS
    ),
)
"""Until this migration a log got its triggers when first opened for writing, so a
store nobody had audited yet had none."""

TRUNCATE_GUARD = "audit_log_no_truncate"
RESTORE_LOAD = "fyp.restore_load"
"""The transaction-local setting (``SET LOCAL fyp.restore_load = 'on'``) under which
the PostgreSQL guard lets ``TRUNCATE audit_log`` through: only a restore's (or a
carve-out's) load into the region sets it (``PostgresSnapshots.import_sqlite``)."""
AUDIT_TRUNCATE_MIGRATION = Migration(
    21,
    "audit log: TRUNCATE refused but for a restore's load (PostgreSQL)",
    # SQLite has no TRUNCATE: its analogue, DELETE without WHERE, is refused by
    # migration 13's DELETE trigger (SQLite's truncate optimisation is off for a table
    # with a DELETE trigger), so there is nothing to add; the version is recorded there
    # too, so both backends' versions keep meaning the same schema.
    "",
    # Row triggers do not fire on TRUNCATE; this statement trigger does. Like the others
    # it stops mistakes, not someone with SQL access (who can drop it or set the
    # setting): the hash chain and ``fyp audit verify --expect-head`` catch that.
    postgres=f"""
    CREATE FUNCTION {TRUNCATE_GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(current_setting('{RESTORE_LOAD}', true), '') <> 'on' THEN
            RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: TRUNCATE is '
                || 'refused (only a restore''s load replaces its rows)';
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER {TRUNCATE_GUARD} BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION {TRUNCATE_GUARD}();
    """,
)
_COLS = "seq, region, ts_ms, actor, action, subject, details, prev_hash, hash"


@runtime_checkable
class SQLStore(Protocol):
    """The SQL access a region store offers packages that keep their own tables."""

    region: str

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def trigger_names(self, table: str) -> set[str]: ...

    def table_names(self) -> list[str]:
        """The store's tables (not views), by name."""
        ...

    def table_columns(self, table: str) -> list[tuple[str, str]]:
        """(name, declared type) of each column of ``table``, in order."""
        ...

    def prepare_erasure(self) -> None:
        """Before an erasure deletes: have the backend destroy deleted rows, not only
        unlink them, where it can."""
        ...

    def purge_deleted(self) -> None:
        """Make rows deleted so far unrecoverable from the store's own files as far as
        the backend allows (an erasure's last step)."""
        ...

    def purge_owed(self) -> bool:
        """Finish a purge that an earlier erasure could not (True), if one is owed;
        StorageError if it still cannot."""
        ...


_OFFERS_SQL: dict[type, bool] = {}


def offers_sql(store: object) -> TypeGuard[SQLStore]:
    """``isinstance(store, SQLStore)``, worked out once per store class: a runtime
    protocol check inspects every member each time (13 µs), and the feed asks on each
    user's first request (``fyp.feed.profile``)."""
    kind = type(store)
    known = _OFFERS_SQL.get(kind)
    if known is None:
        known = _OFFERS_SQL[kind] = isinstance(store, SQLStore)
    return known


def sql_store(store: object) -> SQLStore:
    """The store as an :class:`SQLStore`, or a ConfigError naming what is missing."""
    if not offers_sql(store):
        raise ConfigError(
            f"{type(store).__name__} offers no SQL access: moderation and audit need a "
            "store with query/execute/transaction (the SQLite store has them)"
        )
    return store


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8, no NaN. Hashes depend on it."""
    return json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )


Record = tuple[str, str, str, Mapping[str, Any] | None, int | None]
"""An entry to append: actor, action, subject, details, ts_ms (None: now)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    region: str
    ts_ms: int
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """What the hash covers: everything but the hash itself."""
        return {
            "seq": self.seq,
            "region": self.region,
            "ts_ms": self.ts_ms,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}


def entry_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(body)).encode("utf-8")).hexdigest()


HEAD = re.compile(r"[0-9]+:[0-9a-f]{64}")
"""A head as ``verify`` prints it, ``SEQ:HASH``."""


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # edited | deleted | reordered | truncated | unreadable | unguarded | headless
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass
class VerifyReport:
    region: str
    entries: int
    head_seq: int
    head_hash: str
    triggers: bool
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "triggers": self.triggers,
            "problems": [p.to_dict() for p in self.problems],
        }


class AuditLog:
    """The audit log of one region store. Appends join the caller's transaction."""

    def __init__(self, store: object) -> None:
        self.store = sql_store(store)
        self.region = self.store.region

    def _parse(self, row: tuple[Any, ...]) -> AuditEntry:
        return AuditEntry(
            seq=int(row[0]),
            region=str(row[1]),
            ts_ms=int(row[2]),
            actor=str(row[3]),
            action=str(row[4]),
            subject=str(row[5]),
            details=json.loads(row[6]),
            prev_hash=str(row[7]),
            hash=str(row[8]),
        )

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        ts_ms: int | None = None,
    ) -> AuditEntry:
        """Add one entry after the current last one, atomically with the caller's writes."""
        return self.append_many([(actor, action, subject, details, ts_ms)])[0]

    def append_many(self, items: Sequence[Record]) -> list[AuditEntry]:
        """Chain several ``(actor, action, subject, details, ts_ms)`` entries in one write."""
        for actor, action, *_ in items:
            if not actor or not action:
                raise InvalidRequest("an audit entry needs an actor and an action")
        entries: list[AuditEntry] = []
        rows: list[tuple[Any, ...]] = []
        with self.store.transaction():
            last = self.store.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            seq, prev = (int(last[0][0]), str(last[0][1])) if last else (0, GENESIS)
            for actor, action, subject, details, ts_ms in items:
                seq += 1
                details_json = canonical_json(dict(details or {}))
                body = {
                    "seq": seq,
                    "region": self.region,
                    "ts_ms": now_ms() if ts_ms is None else ts_ms,
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    # parsed back from JSON, so what is hashed is exactly what is stored
                    "details": json.loads(details_json),
                    "prev_hash": prev,
                }
                entry = AuditEntry(**body, hash=entry_hash(body))
                entries.append(entry)
                rows.append(
                    (
                        seq,
                        self.region,
                        entry.ts_ms,
                        actor,
                        action,
                        subject,
                        details_json,
                        prev,
                        entry.hash,
                    )
                )
                prev = entry.hash
            if rows:
                self.store.executemany(
                    f"INSERT INTO audit_log ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", rows
                )
                self.store.execute(
                    "INSERT INTO audit_head (region, seq, hash) VALUES (?,?,?) "
                    "ON CONFLICT (region) DO UPDATE SET seq=excluded.seq, hash=excluded.hash",
                    (self.region, seq, prev),
                )
        return entries

    def entries(
        self, subject: str | None = None, action: str | None = None, after_seq: int = 0
    ) -> Iterator[AuditEntry]:
        """Entries in chain order, optionally of one subject and/or action."""
        where: list[str] = ["seq > ?"]
        params: list[Any] = [after_seq]
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if action is not None:
            where.append("action = ?")
            params.append(action)
        rows = self.store.query(
            f"SELECT {_COLS} FROM audit_log WHERE {' AND '.join(where)} ORDER BY seq", params
        )
        for row in rows:
            yield self._parse(row)

    def entries_of(self, subjects: Sequence[str], action: str | None = None) -> list[AuditEntry]:
        """Entries of any of ``subjects`` (optionally of one action), in chain order: one
        indexed query per chunk of subjects."""
        out: list[AuditEntry] = []
        wanted = sorted(set(subjects))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT {_COLS} FROM audit_log WHERE subject IN ({marks})"
            params: list[Any] = list(chunk)
            if action is not None:
                sql += " AND action = ?"
                params.append(action)
            out += [self._parse(row) for row in self.store.query(sql, params)]
        return sorted(out, key=lambda e: e.seq)

    def head(self) -> tuple[int, str]:
        rows = self.store.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    def triggers_present(self) -> bool:
        """Whether the guards the store's migrations gave the table are all there (on
        PostgreSQL also the TRUNCATE guard; SQLite has no TRUNCATE)."""
        wanted = set(TRIGGERS)
        if not getattr(self.store, "url", "sqlite:").startswith("sqlite:"):
            wanted.add(TRUNCATE_GUARD)
        return wanted <= self.store.trigger_names("audit_log")

    def verify(self, expect_head: str | None = None) -> VerifyReport:
        """Walk the chain; every edited, deleted or reordered entry becomes a problem.

        ``expect_head`` is ``"SEQ:HASH"`` from an earlier report: the log must still
        contain that entry unchanged (this is what catches a cut-off tail)."""
        rows = self.store.query(f"SELECT {_COLS} FROM audit_log ORDER BY seq")
        problems: list[Problem] = []
        hashes = {str(r[8]): int(r[0]) for r in rows}
        prev_hash, expected_seq = GENESIS, 1
        for row in rows:
            seq = int(row[0])
            try:
                entry = self._parse(row)
            except (ValueError, TypeError) as exc:
                problems.append(Problem(seq, "unreadable", f"entry {seq} is not readable: {exc}"))
                prev_hash, expected_seq = str(row[8]), seq + 1
                continue
            if seq != expected_seq:
                problems.append(
                    Problem(
                        seq,
                        "deleted",
                        f"entries {expected_seq}..{seq - 1} are missing before entry {seq}",
                    )
                )
            if entry.hash != entry_hash(entry.body()):
                problems.append(
                    Problem(seq, "edited", f"entry {seq} does not match its hash (edited)")
                )
            if entry.prev_hash != prev_hash:
                linked = hashes.get(entry.prev_hash)
                if linked is not None:
                    problems.append(
                        Problem(
                            seq,
                            "reordered",
                            f"entry {seq} follows entry {linked} in the chain, not the "
                            "entry stored before it (reordered)",
                        )
                    )
                elif seq == expected_seq:
                    problems.append(
                        Problem(
                            seq,
                            "deleted",
                            f"entry {seq} links to an entry that is no longer in the log "
                            "(the entry before it was deleted or edited)",
                        )
                    )
            prev_hash, expected_seq = entry.hash, seq + 1
        head_seq, head_hash = (int(rows[-1][0]), str(rows[-1][8])) if rows else (0, GENESIS)
        recorded = self.store.query(
            "SELECT seq, hash FROM audit_head WHERE region = ?", (self.region,)
        )
        if rows and not recorded:  # every append records the head: someone removed it
            problems.append(
                Problem(
                    0,
                    "headless",
                    "the recorded head (table audit_head) is missing: a cut-off tail would "
                    "go unseen (pass --expect-head from an earlier run)",
                )
            )
        triggers = self.triggers_present()
        if not triggers:  # every migrated store has them: someone dropped them
            problems.append(
                Problem(
                    0,
                    "unguarded",
                    "the append-only triggers of audit_log are missing: entries can be "
                    "changed without an error (the chain above is still checked)",
                )
            )
        anchors = [("recorded head", f"{recorded[0][0]}:{recorded[0][1]}")] if recorded else []
        if expect_head:
            if HEAD.fullmatch(expect_head) is None:  # as the API's pattern: no -5, no short hash
                raise InvalidRequest(
                    "the expected head must be SEQ:HASH (a whole number, a colon, 64 hex "
                    f"digits), got {expect_head!r}",
                    field="expect_head",
                )
            anchors.append(("expected head", expect_head))
        for label, anchor in anchors:
            problems.extend(self._check_anchor(label, anchor, rows))
        return VerifyReport(
            region=self.region,
            entries=len(rows),
            head_seq=head_seq,
            head_hash=head_hash,
            triggers=triggers,
            problems=problems,
        )

    @staticmethod
    def _check_anchor(label: str, anchor: str, rows: list[tuple[Any, ...]]) -> list[Problem]:
        seq_text, _, want = anchor.partition(":")
        try:
            seq = int(seq_text)
        except ValueError:  # the recorded head (the expected one was checked on the way in)
            return [Problem(0, "headless", f"the {label} is not SEQ:HASH: {anchor!r}")]
        if seq == 0:
            return []
        stored = {int(r[0]): str(r[8]) for r in rows}
        if seq not in stored:
            return [
                Problem(
                    seq,
                    "truncated",
                    f"the {label} is entry {seq}, which is no longer in the log (cut off)",
                )
            ]
        if stored[seq] != want:
            return [Problem(seq, "edited", f"entry {seq} differs from the {label}")]
        return []
