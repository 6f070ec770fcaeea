"""The audit log: hash chain, append-only triggers, tamper detection, `fyp audit verify`."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.audit.log import (
    GENESIS,
    TRIGGERS,
    AuditLog,
    SQLStore,
    canonical_json,
    entry_hash,
    offers_sql,
)
from fyp.cli.app import app
from fyp.errors import ConfigError
from fyp.regions.deployment import Deployment

runner = CliRunner()


def store_path(d: Deployment, region: str) -> str:
    return d.config.resolve_url(d.config.region(region).store)[len("sqlite:///") :]


def filled(d: Deployment, region: str = "us", n: int = 6) -> AuditLog:
    log = AuditLog(d.store(region))
    for k in range(n):
        log.append(f"reviewer{k % 2}", "verdict", f"v{k}", {"state": "approved", "k": k})
    return log


def tamper(d: Deployment, region: str, *statements: str, guards_back: bool = True) -> None:
    """Raw SQL on the file, as someone holding it would: triggers dropped first, and put
    back after (a careful forger would; a dropped guard is itself a finding)."""
    conn = sqlite3.connect(store_path(d, region))
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    for sql in statements:
        conn.execute(sql)
    if guards_back:
        for sql in TRIGGERS.values():
            conn.execute(sql)
    conn.commit()
    conn.close()


def kinds(log: AuditLog) -> set[str]:
    return {p.kind for p in log.verify().problems}


def test_entries_chain_by_hash(deployment: Deployment) -> None:
    log = filled(deployment)
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    for e in entries:
        assert e.hash == entry_hash(e.body())
        assert len(e.hash) == 64
    report = log.verify()
    assert report.ok and report.entries == 6 and report.triggers
    assert (report.head_seq, report.head_hash) == (6, entries[-1].hash)
    assert next(iter(log.entries(subject="v3"))).details == {"state": "approved", "k": 3}


def test_hash_is_sha256_of_canonical_json_with_prev_hash(deployment: Deployment) -> None:
    import hashlib

    e = AuditLog(deployment.store("eu")).append("a", "x", "s", {"b": [1, "二"], "a": None})
    body = {
        "seq": 1,
        "region": "eu",
        "ts_ms": e.ts_ms,
        "actor": "a",
        "action": "x",
        "subject": "s",
        "details": {"a": None, "b": [1, "二"]},
        "prev_hash": GENESIS,
    }
    assert e.hash == hashlib.sha256(canonical_json(body).encode()).hexdigest()
    assert canonical_json({"b": 1, "a": "二"}) == '{"a":"二","b":1}'


def test_logs_are_per_region(deployment: Deployment) -> None:
    filled(deployment, "us", 3)
    filled(deployment, "eu", 2)
    assert AuditLog(deployment.store("us")).head()[0] == 3
    assert AuditLog(deployment.store("eu")).head()[0] == 2


def test_a_new_store_is_append_only_before_anything_is_audited(tmp_path: Path) -> None:
    """The triggers came with the first AuditLog opened for writing; a store nobody had
    audited yet had none. Now a migration creates them."""
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        path = d.config.region_dir("us") / "store.sqlite"
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert {"audit_log_no_update", "audit_log_no_delete"} <= names
    finally:
        conn.close()


def test_triggers_refuse_update_and_delete(deployment: Deployment) -> None:
    filled(deployment)
    conn = sqlite3.connect(store_path(deployment, "us"))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 1")
    conn.close()


def test_edited_entry_is_found(deployment: Deployment) -> None:
    log = filled(deployment)
    tamper(
        deployment,
        "us",
        """UPDATE audit_log SET details = '{"k":3,"state":"rejected"}' WHERE seq = 4""",
    )
    report = log.verify()
    assert not report.ok and report.triggers
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "edited")]


def test_a_log_without_its_guards_or_its_head_fails(deployment: Deployment) -> None:
    """Every migrated store has the append-only triggers and every append records the
    head: either gone means someone went behind the log, and the check used to pass
    (a note for the triggers, nothing for the head)."""
    log = filled(deployment)
    tamper(deployment, "us", guards_back=False)  # nothing changed but the guards
    report = log.verify()
    assert not report.triggers and [(p.seq, p.kind) for p in report.problems] == [(0, "unguarded")]
    conn = sqlite3.connect(store_path(deployment, "us"))
    for sql in [*TRIGGERS.values(), "DELETE FROM audit_head"]:  # guards back, head gone
        conn.execute(sql)
    conn.commit()
    conn.close()
    assert [(p.seq, p.kind) for p in log.verify().problems] == [(0, "headless")]
    log.append("r", "verdict", "v9", {})  # the next append records the head again
    assert log.verify().ok
    empty = AuditLog(deployment.store("eu"))
    assert empty.verify().ok  # a log nobody wrote has no head to miss


def test_edited_and_rehashed_entry_breaks_the_next_link(deployment: Deployment) -> None:
    log = filled(deployment)
    tamper(
        deployment,
        "us",
        # always change the first hex digit (a plain 'f' would be a no-op 1 time in 16)
        "UPDATE audit_log SET actor = 'mallory', hash = "
        "(CASE WHEN substr(hash, 1, 1) = 'f' THEN 'e' ELSE 'f' END) || substr(hash, 2) "
        "WHERE seq = 2",
    )
    assert {"edited", "deleted"} <= kinds(log)


def test_deleted_entry_is_found(deployment: Deployment) -> None:
    log = filled(deployment)
    tamper(deployment, "us", "DELETE FROM audit_log WHERE seq = 3")
    problems = log.verify().problems
    assert [(p.seq, p.kind) for p in problems] == [(4, "deleted")]


def test_deleted_tail_is_found_by_the_recorded_head(deployment: Deployment) -> None:
    log = filled(deployment)
    tamper(deployment, "us", "DELETE FROM audit_log WHERE seq = 6")
    assert kinds(log) == {"truncated"}


def test_cut_tail_and_head_is_found_by_an_exported_head(deployment: Deployment) -> None:
    log = filled(deployment)
    exported = f"{log.verify().head_seq}:{log.verify().head_hash}"
    tamper(
        deployment,
        "us",
        "DELETE FROM audit_log WHERE seq >= 5",
        "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4)",
    )
    assert log.verify().ok  # a careful attacker fixes the recorded head as well ...
    assert {p.kind for p in log.verify(expect_head=exported).problems} == {"truncated"}


def test_reordered_entries_are_found(deployment: Deployment) -> None:
    log = filled(deployment)
    tamper(
        deployment,
        "us",
        "UPDATE audit_log SET seq = -1 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = -1",
    )
    assert "reordered" in kinds(log)


def test_audit_needs_a_sql_store() -> None:
    with pytest.raises(ConfigError, match="SQL access"):
        AuditLog(object())


def test_offers_sql_answers_as_the_protocol_check_does(deployment: Deployment) -> None:
    """Worked out once per class, and the same answer as ``isinstance`` each time."""

    class Partial:  # some of the protocol's members, not all
        region = "us"

        def query(self, sql: str) -> list[tuple[object, ...]]:
            return []

    store = deployment.store("us")
    for candidate in (store, store, Partial(), Partial(), object()):
        assert offers_sql(candidate) is isinstance(candidate, SQLStore)
    assert offers_sql(store) and not offers_sql(Partial())


def test_cli_verify_exits_non_zero_on_each_kind_of_tampering(tmp_path: Path) -> None:
    statements = {
        "edited": "UPDATE audit_log SET subject = 'v9' WHERE seq = 2",
        "deleted": "DELETE FROM audit_log WHERE seq = 2",
        "reordered": "UPDATE audit_log SET seq = seq + 100 WHERE seq IN (2, 3)",
    }
    for kind, sql in statements.items():
        root = tmp_path / kind
        with Deployment.init(root, ["us", "eu"]) as d:
            filled(d)
            filled(d, "eu", 2)
        ok = runner.invoke(app, ["audit", "verify", str(root), "--region", "us"])
        assert ok.exit_code == 0, ok.output
        assert "6 entries, chain intact" in ok.output
        with Deployment.open(root) as d:
            tamper(d, "us", sql)
        bad = runner.invoke(app, ["audit", "verify", str(root), "--region", "us", "--json"])
        assert bad.exit_code == 1, kind
        report = json.loads(bad.output)["reports"][0]
        assert report["ok"] is False and report["problems"], kind
        text = runner.invoke(app, ["audit", "verify", str(root)])
        assert (
            text.exit_code == 1
            and "problem" in text.output
            and "unguarded" not in text.output  # the guards were put back
        )
        assert "region eu: 2 entries, chain intact" in text.output


def test_cli_expect_head_needs_region_when_there_are_several(tmp_path: Path) -> None:
    """us's head checked against eu too reported eu's log as cut off (walk review)."""
    from fyp.cli.app import fail
    from fyp.errors import FypError

    root = tmp_path / "d"
    with Deployment.init(root, ["us", "eu"]) as d:
        report = filled(d).verify()
        filled(d, "eu", 2)
    head = f"{report.head_seq}:{report.head_hash}"
    refused = runner.invoke(app, ["audit", "verify", str(root), "--expect-head", head])
    assert isinstance(refused.exception, FypError), refused.output
    assert fail(refused.exception).exit_code == 2
    assert "--expect-head needs --region" in refused.exception.message
    assert "us, eu" in refused.exception.message
    ok = runner.invoke(app, ["audit", "verify", str(root), "--region", "us", "--expect-head", head])
    assert ok.exit_code == 0, ok.output
    one = tmp_path / "one"
    with Deployment.init(one, ["us"]) as d:
        report = filled(d).verify()
    head = f"{report.head_seq}:{report.head_hash}"
    alone = runner.invoke(app, ["audit", "verify", str(one), "--expect-head", head])
    assert alone.exit_code == 0, alone.output  # one region: no doubt whose head it is
    # a head that is not one is bad input, as the API's pattern says: never "cut off"
    for bad in (f"-5:{report.head_hash}", "99:abc", "7", f"x:{report.head_hash}"):
        refused = runner.invoke(app, ["audit", "verify", str(one), "--expect-head", bad])
        assert isinstance(refused.exception, FypError), (bad, refused.output)
        assert fail(refused.exception).exit_code == 2 and "SEQ:HASH" in refused.exception.message
