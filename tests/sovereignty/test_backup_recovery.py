"""Backups and restores that are interrupted, meet damaged files, or find damaged backups:
no plaintext copy outlives its run, an erasure is never lost, the newest backup is never
silently passed over (acceptance review)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from region_helpers import built, cli, copy_of, run_killed

from fyp.audit.log import AuditLog
from fyp.config import load_config
from fyp.errors import StorageError
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup import MANIFEST_FILE, SNAPSHOT_FILE
from fyp.sovereignty.backup_writer import BackupWriter, remove_stale_partials
from fyp.sovereignty.region_data import store_backend, store_file
from fyp.sovereignty.restore import Restorer
from fyp.sovereignty.staging import PENDING_RESTORE, Staging, remove_stale

__all__ = ["built"]

KILLED_MID_BACKUP = """
import os, signal, sys
from fyp.sovereignty.backup_writer import BackupWriter
BackupWriter._pack = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["fyp", *sys.argv[1:]]
from fyp.cli import main
main()
"""


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def users(root: Path, region: str) -> set[str]:
    with Deployment.open(root) as d:
        return {u.user_id for u in d.store(region).iter_users()}


def kill_a_backup(dep: Path, region: str) -> None:
    """``fyp backup`` killed with SIGKILL once its snapshot is written."""
    run_killed(KILLED_MID_BACKUP, "backup", str(dep), "--region", region)


def leftovers(dep: Path, region: str) -> list[str]:
    found = [p for p in (dep / "regions" / region).iterdir() if p.name.startswith(".backup-")]
    found += [p for p in (dep / "backups" / region).glob(".*.partial")]
    return sorted(p.name for p in found)


def test_a_killed_backups_plaintext_copy_is_found_by_verify_and_removed(dep: Path) -> None:
    kill_a_backup(dep, "us")
    (copy,) = (dep / "regions" / "us").glob(".backup-us-*")
    assert (copy / "store.sqlite").is_file()  # the whole store, in plaintext
    assert len(leftovers(dep, "us")) == 2  # and an empty half-written backup
    code, _ = cli("erasure", "erase", str(dep), "u2")
    assert code == 0
    code, out = cli("erasure", "verify", str(dep), "u2", "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "remnants"
    places = {r["where"] for r in report["remnants"] if r["kind"] == "copy"}
    assert f"{copy.name}/store.sqlite: users.user_id" in places
    code, out = cli("erasure", "process", str(dep), "--json")
    assert code == 0
    (run,) = [r for r in json.loads(out)["runs"] if r["region"] == "us"]
    assert run["stale_copies"] == [copy.name] and not copy.exists()
    code, out = cli("erasure", "verify", str(dep), "u2")
    assert code == 0 and "erased" in out
    # the next backup removes what a killed one left in its target
    kill_a_backup(dep, "us")
    assert len(leftovers(dep, "us")) == 2
    BackupWriter(load_config(dep), "us").run()
    assert leftovers(dep, "us") == []


def test_a_running_runs_staging_directory_is_never_removed(dep: Path) -> None:
    region_dir = dep / "regions" / "us"
    target = dep / "backups" / "us"
    target.mkdir(parents=True)
    stale = region_dir / ".backup-us-dead"
    stale.mkdir()  # no lock file at all: left by a run killed as it began
    (target / ".us-dead.partial").mkdir()
    (target / ".us-old.deleting").mkdir()
    with Staging(region_dir / ".backup-us-alive") as alive:
        (alive.path / "store.sqlite").write_bytes(b"x")
        (target / ".us-alive.partial").mkdir()
        assert remove_stale(region_dir) == [stale]
        assert [p.name for p in remove_stale_partials(region_dir, target)] == [
            ".us-dead.partial",
            ".us-old.deleting",
        ]
        BackupWriter(load_config(dep), "us").run()
        assert (alive.path / "store.sqlite").is_file()
        assert (target / ".us-alive.partial").is_dir()
        with pytest.raises(StorageError, match="in use"):
            Staging(alive.path, create=False).__enter__()
    assert not alive.path.exists()
    assert remove_stale_partials(region_dir, target) == [target / ".us-alive.partial"]


def test_a_restore_that_cannot_reapply_erasures_is_finished_before_anything_is_served(
    dep: Path,
) -> None:
    """The review's case: another region's store is damaged, so the re-application after
    the swap fails; until it succeeds, no open of the deployment serves the region."""
    config = load_config(dep)
    BackupWriter(config, "us").run()
    BackupWriter(config, "eu").run()
    with Deployment.open(dep) as d:
        from fyp.catalog.service import Catalog

        Catalog(d).erase_user("u8")  # named nowhere in eu
    eu_store = store_file(config, "eu")
    with eu_store.open("r+b") as f:
        f.truncate(100_000)
    store_file(config, "us").unlink()
    code, message = cli("restore", str(dep), "--region", "us")
    assert code == 3
    assert "region 'us' was changed" in message and "restore-incomplete" in message
    assert "cannot open SQLite store" in message and "eu" in message
    assert (dep / "regions" / "us" / PENDING_RESTORE).is_file()
    code, message = cli("backup", str(dep), "--region", "us")
    assert code == 3 and "did not finish" in message  # a copy with u8 in it: refused
    code, message = cli("region", "export", str(dep), "us", "--to", str(dep.parent / "cut"))
    assert code == 3 and "cannot be carved out" in message
    # the damaged region is restored in turn (exit 1: what eu's damaged store held since
    # its backup cannot be read); the next open finishes us
    code, out = cli("restore", str(dep), "--region", "eu")
    assert code == 1 and "WARNING" in out
    assert "u8" not in users(dep, "us")
    assert not (dep / "regions" / "us" / PENDING_RESTORE).exists()
    with Deployment.open(dep) as d:
        last = list(AuditLog(d.store("us")).entries())[-1]
    assert last.action == "restore" and last.details["finished_at_open"] is True
    assert last.details["reerased"] == 1


def test_a_failed_reapplication_blocks_serving_and_is_finished_once(
    dep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fyp.serving.app import create_app
    from fyp.sovereignty import erasure

    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        from fyp.catalog.service import Catalog

        Catalog(d).erase_user("u2")
        AuditLog(d.store("us")).append("key:ops", "read_user", "p-1", {"reason": "t"})

    def broken(*_: object) -> list[str]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(erasure, "reapply_erasures", broken)
    with pytest.raises(StorageError, match=r"region 'us' was changed.*disk full"):
        Restorer(config, "us").run()
    for attempt in (lambda: Deployment.open(dep), lambda: create_app(dep)):
        with pytest.raises(StorageError, match=r"was changed.*disk full.*restore-incomplete"):
            attempt()
    monkeypatch.undo()
    assert "u2" not in users(dep, "us")
    with Deployment.open(dep) as d:
        actions = [e.action for e in AuditLog(d.store("us")).entries()]
    assert actions.count("read_user") == 1  # carried before the failure, not again
    assert actions[-1] == "restore"


def test_a_restore_cut_short_in_its_swap_is_completed_at_the_next_open(
    dep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fyp.models.artifacts import current_version
    from fyp.sovereignty import restore

    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    region_dir = dep / "regions" / "us"
    version = current_version(region_dir)
    with Deployment.open(dep) as d:
        from fyp.catalog.service import Catalog

        Catalog(d).erase_user("u2")  # writes a new artifact version
    assert current_version(region_dir) != version
    real = os.replace

    def cut(src: Path, dest: Path) -> None:
        if "/files/" in str(src):  # the store is in place, the data files not yet
            raise OSError("killed")
        real(src, dest)

    monkeypatch.setattr(restore.os, "replace", cut)
    said = {  # a SQLite file is renamed in; a server store loaded in one transaction
        "sqlite": "was changed: backup .* was swapped in only partly",
        "postgresql": "was changed: backup .* is loaded into its store .whole, in one "
        "transaction., but its data files are not all in place yet",
    }[store_backend(config, "us")]
    with pytest.raises(StorageError, match=said):
        Restorer(config, "us").run()
    monkeypatch.undo()
    marker = json.loads((region_dir / PENDING_RESTORE).read_text())
    assert marker["backup_id"] == backup.backup_id and (region_dir / marker["staging"]).is_dir()
    assert remove_stale(region_dir) == []  # the unfinished restore still needs it
    assert "u2" not in users(dep, "us")  # the open completed the swap and re-erased
    assert not (region_dir / marker["staging"]).exists()
    assert current_version(region_dir) is not None
    code, out = cli("erasure", "process", str(dep))
    assert code == 0
    code, out = cli("erasure", "verify", str(dep), "u2")
    assert code == 0, out


def test_restoring_over_a_damaged_store_moves_it_aside_and_says_what_is_lost(dep: Path) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    before = users(dep, "us")
    damaged = store_file(config, "us")
    with damaged.open("r+b") as f:
        f.truncate(100_000)
    kept = damaged.read_bytes()
    code, out = cli("restore", str(dep), "--region", "us")
    assert code == 1, out  # restored, but what the damaged store held since is lost
    text = " ".join(out.split())
    assert f"restored backup {backup.backup_id}" in text
    assert "unreadable in the replaced store" in text
    assert "note: the replaced store was damaged (database disk image is malformed)" in text
    (aside,) = (dep / "regions" / "us" / ".quarantine").iterdir()
    assert f"moved aside to regions/us/.quarantine/{aside.name}, not deleted" in text
    assert (aside / damaged.name).read_bytes() == kept  # untouched
    assert "WARNING: an unknown number of audit entries written since the backup" in text
    assert "WARNING: moderation decisions made since the backup" in text
    assert users(dep, "us") == before
    with Deployment.open(dep) as d:
        log = AuditLog(d.store("us"))
        assert log.verify().ok
        details = list(log.entries())[-1].details
    assert details["carried_audit_entries"] == "unreadable"
    assert details["replaced_store"]["quarantined"] == f"regions/us/.quarantine/{aside.name}"
    assert details["moderation_since_backup"] == "unconfirmed"


def test_a_damaged_newest_backup_is_never_passed_over(dep: Path) -> None:
    config = load_config(dep)
    older = BackupWriter(config, "us").run()
    newer = BackupWriter(config, "us").run()
    (newer.path / MANIFEST_FILE).write_text('{"backup_id": ', encoding="utf-8")
    code, message = cli("restore", str(dep), "--region", "us")
    assert code == 3 and message.startswith(f"backup {newer.backup_id} of region 'us' is damaged")
    assert f"the newest readable backup is {older.backup_id}" in message
    code, message = cli("restore", str(dep), "--region", "us", "--backup", newer.backup_id)
    assert code == 3 and "damaged" in message and "cannot read backup manifest" in message
    code, out = cli("restore", str(dep), "--region", "us", "--backup", older.backup_id)
    assert code == 0 and older.backup_id in out
    code, out = cli("backups", str(dep), "--region", "us", "--json")
    listed = json.loads(out)
    assert code == 1
    assert [b["manifest"]["backup_id"] for b in listed["backups"]] == [older.backup_id]
    assert [d["backup_id"] for d in listed["damaged"]] == [newer.backup_id]
    code, out = cli("backups", str(dep), "--region", "us")
    assert code == 1 and f"DAMAGED backup {newer.backup_id}" in out
    code, out = cli("backup", str(dep), "--region", "us", "--keep", "1", "--json")
    report = json.loads(out)
    assert code == 0 and report["pruned"] == [older.backup_id]
    assert [d["backup_id"] for d in report["damaged"]] == [newer.backup_id]
    assert newer.path.is_dir()  # kept for a person to look at
    code, out = cli("backup", str(dep), "--region", "us", "--keep", "1")
    assert code == 0 and f"DAMAGED backup {newer.backup_id}" in out


@pytest.mark.parametrize("edit", [{"created_at_ms": 1}, {"region": "eu"}])
def test_a_newest_manifest_edited_but_parsable_is_damaged(
    dep: Path, edit: dict[str, object]
) -> None:
    """A changed created_at_ms or region used to be trusted before the MAC was checked:
    "latest" then quietly restored the older backup (acceptance review)."""
    config = load_config(dep)
    older = BackupWriter(config, "us").run()
    newer = BackupWriter(config, "us").run()
    path = newer.path / MANIFEST_FILE
    path.write_text(json.dumps({**json.loads(path.read_text("utf-8")), **edit}), "utf-8")
    code, message = cli("restore", str(dep), "--region", "us")
    assert code == 3 and message.startswith(f"backup {newer.backup_id} of region 'us' is damaged")
    assert "MAC" in message and older.backup_id in message
    code, out = cli("backups", str(dep), "--region", "us", "--json")
    assert code == 1 and [d["backup_id"] for d in json.loads(out)["damaged"]] == [newer.backup_id]


@pytest.mark.parametrize("stamp", ["gone", None, "notint", 1.5, True])
def test_a_manifest_without_a_whole_created_at_ms_is_damaged(dep: Path, stamp: object) -> None:
    """Read to sort backups before the MAC check: a missing or non-number one was a
    KeyError/TypeError/ValueError traceback of fyp backups and fyp restore (walk review)."""
    config = load_config(dep)
    older = BackupWriter(config, "us").run()
    newer = BackupWriter(config, "us").run()
    path = newer.path / MANIFEST_FILE
    manifest = json.loads(path.read_text("utf-8"))
    if stamp == "gone":
        del manifest["created_at_ms"]
    else:
        manifest["created_at_ms"] = stamp
    path.write_text(json.dumps(manifest), "utf-8")
    code, out = cli("backups", str(dep), "--region", "us")
    assert code == 1 and f"DAMAGED backup {newer.backup_id}" in out
    assert "created_at_ms" in " ".join(out.split())
    for dry in ([], ["--dry-run"]):
        code, message = cli("restore", str(dep), "--region", "us", *dry)
        assert code == 3, message
        assert message.startswith(f"backup {newer.backup_id} of region 'us' is damaged")
        assert older.backup_id in message


def test_prune_never_deletes_the_last_backup_that_verifies(dep: Path) -> None:
    """--keep counted a backup whose manifest reads but whose snapshot rotted, and
    deleted the older one that was the only backup left to restore from."""
    config = load_config(dep)
    writer = BackupWriter(config, "us")
    older = writer.run()
    newer = writer.run()
    snapshot = newer.path / SNAPSHOT_FILE
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 1
    snapshot.write_bytes(bytes(data))
    removed, damaged = writer.prune(1)
    assert removed == [] and older.path.is_dir()
    assert [d.backup_id for d in damaged] == [newer.backup_id]
    code, out = cli("restore", str(dep), "--region", "us", "--backup", older.backup_id)
    assert code == 0, out
    good = writer.run()  # once a newer backup verifies, the older ones go as asked
    removed, _ = writer.prune(1)
    assert removed == [older.backup_id, newer.backup_id] and good.path.is_dir()


def test_fyp_backups_sees_a_cut_snapshot_and_with_verify_a_changed_one(dep: Path) -> None:
    """A snapshot.enc cut short or overwritten was listed as fine, exit 0 (audit review):
    only a restore read it. The listing now compares its size with the manifest's (a
    stat), and --verify reads it whole against the checksum."""
    config = load_config(dep)
    older = BackupWriter(config, "us").run()
    newer = BackupWriter(config, "us").run()
    snapshot = newer.path / SNAPSHOT_FILE
    whole = snapshot.read_bytes()
    snapshot.write_bytes(whole[: len(whole) // 2])
    code, out = cli("backups", str(dep), "--region", "us", "--json")
    listed = json.loads(out)
    assert code == 1 and [b["manifest"]["backup_id"] for b in listed["backups"]] == [
        older.backup_id
    ]
    assert [d["backup_id"] for d in listed["damaged"]] == [newer.backup_id]
    assert "cut short" in listed["damaged"][0]["reason"]
    changed = bytearray(whole)
    changed[len(changed) // 2] ^= 1  # same size: only reading it shows
    snapshot.write_bytes(bytes(changed))
    assert cli("backups", str(dep), "--region", "us")[0] == 0
    code, out = cli("backups", str(dep), "--region", "us", "--verify", "--json")
    assert code == 1 and [d["backup_id"] for d in json.loads(out)["damaged"]] == [newer.backup_id]
    snapshot.write_bytes(whole)
    assert cli("backups", str(dep), "--region", "us", "--verify")[0] == 0
