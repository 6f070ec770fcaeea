"""Backups, restores and carve-outs of regions whose stores are on PostgreSQL: the
backup, restore, recovery, carve-out and residency tests of SQLite regions run again
with every store of every deployment they make in a schema of a PostgreSQL server
(``Deployment.init`` is given a ``--store`` URL), and the cases that differ on a server
(what "unchanged" and "in use" mean there, a damaged region, a load that fails, a
carve-out to a server) are tested below. Runs when ``FYP_TEST_POSTGRES_URL`` names a
server (CI starts one: ``.ci/run``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from postgres_server import SERVER, deployments_on_postgres, drop_schemas, schema_url

pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from region_helpers import build, cli, copy_of, run_killed  # noqa: E402

import sovereignty.test_backup as _backup  # noqa: E402
import sovereignty.test_backup_recovery as _recovery  # noqa: E402
import sovereignty.test_carve as _carve  # noqa: E402
import sovereignty.test_residency as _residency  # noqa: E402
import sovereignty.test_restore_preview as _preview  # noqa: E402
from fyp.audit.log import AuditLog, sql_store  # noqa: E402
from fyp.catalog.models import UserIn, VideoIn  # noqa: E402
from fyp.catalog.service import Catalog  # noqa: E402
from fyp.config import load_config  # noqa: E402
from fyp.errors import BackupCorrupt, StorageError, StoreInUse  # noqa: E402
from fyp.events.ingest import Ingestor  # noqa: E402
from fyp.regions.deployment import Deployment  # noqa: E402
from fyp.sovereignty.backup import SNAPSHOT_FILE  # noqa: E402
from fyp.sovereignty.backup_writer import BackupWriter  # noqa: E402
from fyp.sovereignty.restore import Restorer  # noqa: E402
from fyp.sovereignty.staging import PENDING_RESTORE  # noqa: E402
from fyp.storage import open_store  # noqa: E402
from fyp.storage.postgres_snapshot import OWN_TABLES, PostgresSnapshots  # noqa: E402

# the SQLite regions' tests that hold on PostgreSQL as they are
SQLITE_ONLY = {  # what these check is a SQLite file's: ported below where it matters
    "test_a_backup_with_one_changed_byte_is_refused_and_nothing_changes",  # the file's sha
    "test_restore_refuses_a_store_open_in_another_process",  # SQLite's -shm lock
    "test_a_restore_that_cannot_reapply_erasures_is_finished_before_anything_is_served",
    "test_restoring_over_a_damaged_store_moves_it_aside_and_says_what_is_lost",
    "test_sealed_streams_round_trip_and_any_changed_byte_fails",  # no store involved
    "test_sealed_streams_refuse_cuts_reorders_and_other_contexts",
}
for _module in (_backup, _recovery, _carve, _preview):
    globals().update(
        {k: v for k, v in vars(_module).items() if k.startswith("test_") and k not in SQLITE_ONLY}
    )
test_a_healthy_deployment_has_no_foreign_records = (
    _residency.test_a_healthy_deployment_has_no_foreign_records
)
test_a_backup_that_does_not_open_with_the_regions_key_is_a_finding = (
    _residency.test_a_backup_that_does_not_open_with_the_regions_key_is_a_finding
)
US = "us"


@pytest.fixture(autouse=True)
def on_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with deployments_on_postgres(monkeypatch):
        yield


@pytest.fixture
def built(tmp_path: Path) -> Path:
    """The SQLite tests' deployment, built per test: a copy of its directory would share
    its stores on the server."""
    return build(tmp_path / "built")


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def rows(root: Path, region: str) -> dict[str, list[str]]:
    """Every row of every table of the region's store on the server."""
    with Deployment.open(root) as d:
        return store_rows(d.store(region))


def _log_entries(root: Path) -> list[Any]:
    with Deployment.open(root) as d:
        return list(AuditLog(d.store(US)).entries())


def store_rows(store: object) -> dict[str, list[str]]:
    sql = sql_store(store)
    return {
        t: sorted(repr(r) for r in sql.query(f'SELECT * FROM "{t}"'))
        for t in sql.table_names()
        if t not in OWN_TABLES
    }


def change_everything(root: Path) -> None:
    """After a backup: a user, a video, events, a profile edited, and a key."""
    from fyp.access.keys import KeyStore

    with Deployment.open(root) as d:
        catalog = Catalog(d)
        catalog.create_user(UserIn(user_id="late", home_region=US))
        catalog.create_video(
            VideoIn(video_id="late-v", creator_id="late", duration_ms=9_000, regions=[US])
        )
        Ingestor(d).ingest(
            [
                {"event_id": f"late-{k}", "user_id": "u0", "video_id": "v1", "type": "like"}
                for k in range(5)
            ]
        )
        u4 = d.store(US).get_user("u4")
        assert u4 is not None
        d.store(US).update_user(u4.model_copy(update={"attributes": {"pet": "cat"}}))
        KeyStore(d).create("late-key", ["feed"], [US])


# -- a round trip ----------------------------------------------------------------------
def test_a_restore_puts_back_exactly_what_the_backup_holds(dep: Path) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, US).run()
    assert backup.manifest["store_backend"] == "postgresql"
    before = rows(dep, US)
    change_everything(dep)
    assert rows(dep, US) != before
    report = Restorer(config, US).run()
    # what change_everything added has no record outside the store: said, and counted
    (warning,) = report.warnings
    assert warning.startswith("1 user, 5 events, 1 video added since the backup")
    assert "overwritten, so they are gone" in warning
    assert report.reerased == []
    (entry,) = [e for e in _log_entries(dep) if e.action == "restore"]
    assert entry.details["dropped_since_backup"] == {
        "users": 1,
        "events": 5,
        "videos": 1,
        "profile_edits": 0,
    }
    after = rows(dep, US)
    log_before, log_after = before.pop("audit_log"), after.pop("audit_log")
    before.pop("audit_head"), after.pop("audit_head")
    assert after == before  # every table but the audit log, row for row
    assert set(log_before) < set(log_after)  # the log goes on: the restore's own entry
    with Deployment.open(dep) as d:
        store = d.store(US)
        assert AuditLog(store).verify().ok
        assert store.max_event_seq() == backup.manifest["store"]["max_event_seq"]
        # numbers go on from the backup's, as after a SQLite restore
        Ingestor(d).ingest(
            [{"event_id": "next", "user_id": "u0", "video_id": "v1", "type": "like"}]
        )
        assert store.max_event_seq() == backup.manifest["store"]["max_event_seq"] + 1
        Catalog(d).create_video(
            VideoIn(video_id="new-v", creator_id="u0", duration_ms=9_000, regions=[US])
        )


def test_an_erasure_after_the_backup_stays_and_the_cli_round_trips(dep: Path) -> None:
    code, out = cli("backup", str(dep), "--region", US, "--json")
    assert code == 0, out
    code, out = cli("erasure", "erase", str(dep), "u2")
    assert code == 0, out
    code, out = cli("restore", str(dep), "--region", US)
    assert code == 0, out
    assert "erasures re-applied: 1" in " ".join(out.split())
    code, out = cli("erasure", "process", str(dep))
    assert code == 0, out
    code, out = cli("erasure", "verify", str(dep), "u2")
    assert code == 0, out
    code, out = cli("residency", "check", str(dep))  # the backup holds u2: counted, not found
    assert code == 0 and "0 foreign records" in " ".join(out.split()), out


# -- refusals: nothing changes on the server -------------------------------------------
def test_a_damaged_or_foreign_backup_is_refused_and_the_server_rows_are_unchanged(
    dep: Path,
) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, US).run()
    change_everything(dep)
    before = rows(dep, US)
    snapshot = backup.path / SNAPSHOT_FILE
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 1
    snapshot.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match="checksum"):
        Restorer(config, US).run()
    eu = BackupWriter(config, "eu").run()  # another region's key
    eu.path.rename(dep / "backups" / US / eu.path.name)
    with pytest.raises(BackupCorrupt, match="MAC"):
        Restorer(config, US).run(eu.backup_id)
    assert rows(dep, US) == before
    assert not [p for p in (dep / "regions" / US).iterdir() if p.name.startswith(".")]


def test_a_load_that_fails_midway_changes_nothing(
    dep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(dep)
    BackupWriter(config, US).run()
    change_everything(dep)
    before = rows(dep, US)

    def broken(*_: object) -> None:  # every row is in by then
        raise RuntimeError("server went away")

    monkeypatch.setattr(PostgresSnapshots, "_set_counters", broken)
    with pytest.raises(StorageError, match=r"changed nothing.*server went away"):
        Restorer(config, US).run()
    monkeypatch.undo()
    assert not (dep / "regions" / US / PENDING_RESTORE).exists()
    assert rows(dep, US) == before  # (and the deployment opens: no restore is pending)
    assert not [p for p in (dep / "regions" / US).iterdir() if p.name.startswith(".")]


KILLED_MID_LOAD = """
import os, signal, sys
from fyp.storage.postgres_snapshot import PostgresSnapshots
real = PostgresSnapshots._copy_in_rows
def copy_then_die(self, file, table, cols):
    real(self, file, table, cols)
    if table == "events":  # users and videos are in by then, in the load's transaction
        os.kill(os.getpid(), signal.SIGKILL)
PostgresSnapshots._copy_in_rows = copy_then_die
sys.argv = ["fyp", *sys.argv[1:]]
from fyp.cli import main
main()
"""


def test_a_killed_load_changes_no_row_and_the_open_that_finishes_it_says_so(
    dep: Path,
) -> None:
    """``fyp restore`` killed (SIGKILL) in the middle of its load: the server rolls the
    load back whole, so while the next open cannot finish it (the store is held by
    another process here) its error says the store is unchanged, not "swapped in only
    partly"; once it can, the open loads the backup and re-applies what came since."""
    config = load_config(dep)
    backup = BackupWriter(config, US).run()
    change_everything(dep)
    before = rows(dep, US)
    run_killed(KILLED_MID_LOAD, "restore", str(dep), "--region", US)
    assert (dep / "regions" / US / PENDING_RESTORE).exists()
    url = config.resolve_url(config.region(US).store)
    store = open_store(url, US)  # (waits until the killed load's session is gone)
    try:
        assert store_rows(store) == before  # not one row of the backup's
    finally:
        store.close()
    with held_open(url):
        code, message = cli("status", str(dep))
    text = " ".join(message.split())
    assert code == 3 and "stop the server" in text, text
    assert f"region 'us' is not changed yet: backup {backup.backup_id} is not loaded" in text
    assert "rolled back whole" in text and "the region is marked restore-incomplete" in text
    assert "swapped in only partly" not in text and "was changed" not in text
    assert (dep / "regions" / US / PENDING_RESTORE).exists()
    after = rows(dep, US)  # this open finishes the restore
    assert not (dep / "regions" / US / PENDING_RESTORE).exists()
    assert after["users"] != before["users"] and not any("'late'" in r for r in after["users"])
    with Deployment.open(dep) as d:
        log = AuditLog(d.store(US))
        assert log.verify().ok
        last = list(log.entries())[-1]
    assert last.action == "restore" and last.details["finished_at_open"] is True


def test_a_snapshot_of_another_schema_or_region_is_refused_before_anything_is_written(
    dep: Path, tmp_path: Path
) -> None:
    import sqlite3

    from fyp.sovereignty.region_data import open_server_store, snapshot_region

    config = load_config(dep)
    before = rows(dep, US)
    newer, eu = tmp_path / "newer.sqlite", tmp_path / "eu.sqlite"
    snapshot_region(config, US, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("CREATE TABLE from_a_later_version (x TEXT)")
    snapshot_region(config, "eu", eu)
    store = open_server_store(config, US)
    try:
        with pytest.raises(StorageError, match="different tables"):
            store.import_sqlite(newer, "r1")
        with pytest.raises(StorageError, match="of region 'eu', not 'us'"):
            store.import_sqlite(eu, "r2")
        assert store.restored_by() is None
    finally:
        store.close()
    assert rows(dep, US) == before


HOLDER = """
import sys
from fyp.storage import open_store
store = open_store(sys.argv[1], "us")
print("open", flush=True)
sys.stdin.read()
"""


@contextmanager
def held_open(url: str) -> Iterator[None]:
    """The store at ``url`` open in another process (a server) meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def test_restore_refuses_a_store_open_in_another_process(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, US).run()
    url = config.resolve_url(config.region(US).store)
    with held_open(url):
        with pytest.raises(StoreInUse):
            Restorer(config, US).run()
        code, message = cli("restore", str(dep), "--region", US)
        assert code == 2 and "stop the server" in message
    assert not (dep / "regions" / US / PENDING_RESTORE).exists()
    assert Restorer(config, US).run().region == US


# -- a damaged region ------------------------------------------------------------------
def test_a_region_whose_audit_log_cannot_be_read_is_quarantined_and_salvaged(
    dep: Path,
) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, US).run()
    with Deployment.open(dep) as d:
        late = AuditLog(d.store(US)).append("key:ops", "read_user", "p-9", {"reason": "t"})
        store = d.store(US)
        sql = sql_store(store)
        with store.transaction():  # behind the log's back: an entry the backup holds
            sql.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
            sql.execute("UPDATE audit_log SET details = 'not json' WHERE seq = 1")
            sql.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
    code, out = cli("restore", str(dep), "--region", US)
    assert code == 0, out  # the entry broken is the backup's own: nothing since is lost
    text = " ".join(out.split())
    assert f"restored backup {backup.backup_id}" in text
    assert "note: the replaced store was damaged (its audit log cannot be read" in text
    (aside,) = (dep / "regions" / US / ".quarantine").iterdir()
    assert json.loads((aside / "why.json").read_text())["replaced_by_backup"] == backup.backup_id
    import sqlite3

    with sqlite3.connect(aside / "store.sqlite") as kept:  # what the region held, readable
        assert kept.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 12
    with Deployment.open(dep) as d:
        log = AuditLog(d.store(US))
        assert log.verify().ok
        *_, carried, restore = list(log.entries())
    assert (carried.action, carried.details["carried_from"]["seq"]) == ("read_user", late.seq)
    assert restore.details["replaced_store"]["quarantined"].startswith("regions/us/.quarantine/")
    code, out = cli("residency", "check", str(dep), "--json")
    assert code == 0 and json.loads(out)["foreign_records"] == 0
    # removed on record, in the region's log on the server
    code, out = cli("quarantine", "remove", str(dep), aside.name, "--region", US, "--reason", "t")
    assert code == 0, out
    assert not aside.exists()
    (removal,) = [e for e in _log_entries(dep) if e.action == "quarantine.remove"]
    assert removal.subject == f".quarantine/{aside.name}" and removal.details["reason"] == "t"


# -- the residency scan reads PostgreSQL regions' backups ------------------------------
def test_a_backup_holding_a_foreign_record_is_found(dep: Path) -> None:
    with Deployment.open(dep) as d:
        us = d.store(US)
        u4 = us.get_user("u4")
        assert u4 is not None
        us.update_user(u4.model_copy(update={"attributes": {"invited_by": "u11"}}))
    backup = BackupWriter(load_config(dep), US).run()
    with Deployment.open(dep) as d:
        d.store(US).update_user(u4)
    code, out = cli("residency", "check", str(dep), "--json")
    assert code == 1
    findings = json.loads(out)["findings"]
    assert [(f["kind"], f["source"], f["location"], f["user_id"]) for f in findings] == [
        ("foreign", "backup", f"backup {backup.backup_id}: users.attributes.invited_by", "u11")
    ]


# -- carve-out -------------------------------------------------------------------------
def test_a_region_is_carved_out_to_a_store_on_a_server(dep: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from fyp.access.keys import KeyStore
    from fyp.serving.app import create_app

    with Deployment.open(dep) as d:
        token = KeyStore(d).create("feed-app", ["feed"], [US])[1]
        users = {u.user_id for u in d.store(US).iter_users()}
    prefix = f"cv{uuid.uuid4().hex[:10]}"
    url = schema_url(f"{prefix}_{{region}}")
    out = tmp_path / "us-alone"
    try:
        code, text = cli("region", "export", str(dep), US, "--to", str(out), "--store", url)
        assert code == 0, text
        assert load_config(out).region(US).store == schema_url(f"{prefix}_us")
        assert not (out / "regions" / US / "store.sqlite").exists()
        with Deployment.open(out) as d:
            assert {u.user_id for u in d.store(US).iter_users()} == users
        with TestClient(create_app(out)) as client:
            r = client.get("/v1/users/u0/feed?n=5", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and r.json()["items"], r.text
        code, text = cli(
            "region", "export", str(dep), US, "--to", str(tmp_path / "again"), "--store", url
        )
        assert code == 2 and "already holds data" in text
    finally:
        drop_schemas(prefix)


def test_a_carve_that_failed_after_loading_its_server_store_can_be_run_again(
    dep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load is the last step before the carved directory is put in place; a failure
    there left the store loaded, and every later carve to it was refused."""
    from fyp.sovereignty import carve

    prefix = f"cv{uuid.uuid4().hex[:10]}"
    url = schema_url(f"{prefix}_{{region}}")
    out = tmp_path / "us-alone"
    real_replace = os.replace

    def fail_at_rename(src: object, dst: object) -> None:
        if Path(str(dst)) == out:
            raise OSError("disk gone")
        real_replace(src, dst)  # type: ignore[arg-type]

    try:
        monkeypatch.setattr(carve.os, "replace", fail_at_rename)
        with pytest.raises(OSError, match="disk gone"):
            carve.carve_out(dep, US, out, store=url)
        assert not out.exists()
        monkeypatch.setattr(carve.os, "replace", real_replace)
        code, text = cli("region", "export", str(dep), US, "--to", str(out), "--store", url)
        assert code == 0, text
        with Deployment.open(dep) as d:
            users = {u.user_id for u in d.store(US).iter_users()}
        with Deployment.open(out) as d:
            assert {u.user_id for u in d.store(US).iter_users()} == users
        code, text = cli(
            "region", "export", str(dep), US, "--to", str(tmp_path / "again"), "--store", url
        )
        assert code == 2 and "already holds data" in text  # a finished carve's store
        # the finished cell moved elsewhere to run: the same carve again must not reload
        # (replace) the store it runs on
        out.rename(tmp_path / "moved-away")
        code, text = cli("region", "export", str(dep), US, "--to", str(out), "--store", url)
        assert code == 2 and "already holds data" in text
    finally:
        drop_schemas(prefix)
