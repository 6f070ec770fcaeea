"""Restores over a damaged store: the store is moved aside, never deleted; what can still
be read of its audit log and verdicts is put back (a takedown made after the backup
stands); what cannot is said, and moderation fails closed. A restore cut short after its
audit entry writes that entry once (acceptance review)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from region_helpers import built, cli, copy_of

from fyp.audit.log import AuditLog, now_ms
from fyp.config import load_config
from fyp.errors import StorageError
from fyp.moderation import Moderator, Reviews
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.region_data import store_file
from fyp.sovereignty.restore import Restorer
from fyp.sovereignty.staging import PENDING_RESTORE

__all__ = ["built"]

TAKEN_DOWN = "v3"


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def state(root: Path, region: str, video_id: str) -> str | None:
    with Deployment.open(root) as d:
        record = cell(d.store(region)).mod.get(video_id)
    return record.state if record else None


def restore_entries(root: Path, region: str) -> list[dict[str, object]]:
    with Deployment.open(root) as d:
        return [e.details for e in AuditLog(d.store(region)).entries(action="restore")]


def backup_then_takedown(root: Path) -> str:
    """A backup of us, then a human takedown there that the backup does not hold."""
    backup = BackupWriter(load_config(root), "us").run()
    with Deployment.open(root) as d:
        Reviews(Moderator(d)).takedown(TAKEN_DOWN, "tslead", "CSAM report", ["us"], "rejected")
    assert state(root, "us", TAKEN_DOWN) == "rejected"
    return backup.backup_id


def leaf_pages(path: Path, table: str) -> list[int]:
    """The table's leaf pages in key order (its first leaf holds its lowest keys)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path",
            (table,),
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def smash(path: Path, pages: list[int], page_size: int = 4096) -> None:
    with path.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(b"\xff" * page_size)


def test_a_takedown_made_after_the_backup_survives_a_damaged_audit_page(dep: Path) -> None:
    """The review's case: the store's audit log can no longer be read whole, so the
    restore called it unreadable and the takedown made since the backup was undone."""
    config = load_config(dep)
    backup_id = backup_then_takedown(dep)
    live = store_file(config, "us")
    first, *_ = leaf_pages(live, "audit_log")  # entries from before the backup
    smash(live, [first])
    code, out = cli("restore", str(dep), "--region", "us")
    assert code == 0, out  # nothing made since the backup is lost
    assert "WARNING" not in out
    assert state(dep, "us", TAKEN_DOWN) == "rejected"  # not approved, as in the backup
    (aside,) = (dep / "regions" / "us" / ".quarantine").iterdir()
    assert (aside / live.name).is_file() and "moved aside to" in " ".join(out.split())
    why = json.loads((aside / "why.json").read_text("utf-8"))
    assert why["region"] == "us" and why["replaced_by_backup"] == backup_id
    (details,) = restore_entries(dep, "us")
    replaced = details["replaced_store"]
    assert isinstance(replaced, dict)
    assert replaced["audit_log"] == "partial" and replaced["audit_entries_lost"] == 0
    assert replaced["quarantined"] == f"regions/us/.quarantine/{aside.name}"
    assert "moderation_since_backup" not in details
    with Deployment.open(dep) as d:
        log = AuditLog(d.store("us"))
        assert log.verify().ok
        carried = [e for e in log.entries(subject=TAKEN_DOWN) if "carried_from" in e.details]
    assert [e.actor for e in carried if e.action == "verdict"] == ["tslead"]


def test_a_takedown_is_read_from_the_verdicts_when_the_whole_audit_log_is_lost(
    dep: Path,
) -> None:
    config = load_config(dep)
    backup_then_takedown(dep)
    live = store_file(config, "us")
    smash(live, leaf_pages(live, "audit_log"))
    code, out = cli("restore", str(dep), "--region", "us", "--json")
    report = json.loads(out)
    assert code == 1  # audit entries written since the backup are lost: said, exit 1
    (warning,) = report["warnings"]
    assert "audit entries written since the backup" in warning and "are lost" in warning
    assert report["replaced_store"]["moderation"] == "complete"
    assert report["held_for_recheck"] == 0  # the verdicts confirm every decision
    assert state(dep, "us", TAKEN_DOWN) == "rejected"
    (details,) = restore_entries(dep, "us")
    assert details["carried_audit_entries"] == "unreadable"


def test_when_nothing_can_be_read_moderation_fails_closed(dep: Path) -> None:
    config = load_config(dep)
    with Deployment.open(dep) as d:  # a person approved v5 before the backup
        c = cell(d.store("us"))
        verdict = {"state": "approved", "reason": "looked at it"}
        c.mod.write("v5", "approved", True, "looked at it", "review", "alice", now_ms(), verdict)
        automated = {
            str(v)
            for (v,) in c.store.query("SELECT video_id FROM moderation WHERE state = 'approved'")
        } - {"v5"}
    backup_then_takedown(dep)
    live = store_file(config, "us")
    live.write_bytes(b"\x00" * 8192)  # not even a SQLite header left
    code, out = cli("restore", str(dep), "--region", "us")
    assert code == 1
    text = " ".join(out.split())
    assert "WARNING: an unknown number of audit entries written since the backup" in text
    assert "WARNING: moderation decisions made since the backup" in text
    assert f"{len(automated)} restored videos approved only by the automated checks" in text
    assert f"fyp moderate {dep} --region us" in text
    assert state(dep, "us", "v5") == "approved"  # a person's verdict stands
    assert {state(dep, "us", v) for v in automated} == {"pending"}  # out of For You
    (details,) = restore_entries(dep, "us")
    assert details["moderation_since_backup"] == "unconfirmed"
    assert details["held_for_recheck"] == len(automated)
    code, _ = cli("moderate", str(dep), "--region", "us")
    assert code == 0 and state(dep, "us", TAKEN_DOWN) == "approved"  # judged again


def test_a_quarantined_store_is_never_backed_up_or_forgotten(dep: Path) -> None:
    config = load_config(dep)
    backup_then_takedown(dep)
    live = store_file(config, "us")
    smash(live, leaf_pages(live, "audit_log")[:1])
    code, _ = cli("restore", str(dep), "--region", "us")
    assert code == 0
    (aside,) = (dep / "regions" / "us" / ".quarantine").iterdir()
    parts = {p["path"] for p in BackupWriter(config, "us").run().manifest["parts"]}
    assert not [p for p in parts if ".quarantine" in p]
    code, _ = cli("restore", str(dep), "--region", "us")  # a later restore leaves it
    assert code == 0 and aside.is_dir()
    code, _ = cli("erasure", "erase", str(dep), "u2")
    assert code == 0
    code, _ = cli("erasure", "process", str(dep))
    assert code == 0
    code, out = cli("erasure", "verify", str(dep), "u2", "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "remnants"
    assert {r["kind"] for r in report["remnants"]} == {"quarantine"}
    assert any(f".quarantine/{aside.name}" in n for n in report["notes"])
    code, out = cli("residency", "check", str(dep), "--no-backups", "--json")
    findings = json.loads(out)["findings"]
    assert code == 1 and {f["source"] for f in findings} == {"quarantine"}
    # the operator's call, once nothing more is to be salvaged: removed on record
    reason = "salvaged what was readable (ticket 42)"
    code, out = cli(
        "quarantine", "remove", str(dep), aside.name, "--region", "us", "--reason", reason
    )
    assert code == 0, out
    assert not aside.exists()
    code, out = cli("erasure", "verify", str(dep), "u2")
    assert code == 0, out
    code, out = cli("residency", "check", str(dep), "--no-backups")
    assert code == 0, out


def test_a_restore_cut_short_after_its_audit_entry_writes_it_once(
    dep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_id = backup_then_takedown(dep)
    real = Path.unlink

    def killed(path: Path, missing_ok: bool = False) -> None:
        if path.name == PENDING_RESTORE:
            raise OSError("killed")
        real(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(StorageError, match="is in place"):
        Restorer(load_config(dep), "us").run()
    monkeypatch.undo()
    assert (dep / "regions" / "us" / PENDING_RESTORE).is_file()
    with Deployment.open(dep) as d:  # finishes the restore
        log = AuditLog(d.store("us"))
        restores = list(log.entries(subject=backup_id, action="restore"))
        reapplied = [e for e in log.entries(subject=TAKEN_DOWN) if e.actor == "fyp restore"]
    assert not (dep / "regions" / "us" / PENDING_RESTORE).exists()
    assert len(restores) == 1 and "finished_at_open" not in restores[0].details
    assert len(reapplied) == 1  # the takedown was re-applied once, not once per run
    assert state(dep, "us", TAKEN_DOWN) == "rejected"


def test_a_swap_cut_short_after_the_damaged_store_went_aside_is_finished_at_open(
    dep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    config = load_config(dep)
    backup_then_takedown(dep)
    live = store_file(config, "us")
    smash(live, leaf_pages(live, "audit_log")[:1])
    damaged = live.read_bytes()
    real = os.replace

    def cut(src: Path, dest: Path) -> None:
        if ".restore-" in str(src) and Path(src).name == "store.sqlite":
            raise OSError("killed")  # the damaged store is aside, the restored one not in
        real(src, dest)

    monkeypatch.setattr(os, "replace", cut)
    with pytest.raises(StorageError, match="swapped in only partly"):
        Restorer(config, "us").run()
    monkeypatch.undo()
    assert not live.exists()
    (aside,) = (dep / "regions" / "us" / ".quarantine").iterdir()
    assert (aside / live.name).read_bytes() == damaged
    assert state(dep, "us", TAKEN_DOWN) == "rejected"  # the open finished the restore
    (details,) = restore_entries(dep, "us")
    assert details["finished_at_open"] is True
    replaced = details["replaced_store"]
    assert isinstance(replaced, dict) and replaced["quarantined"].endswith(aside.name)
    assert (aside / live.name).read_bytes() == damaged  # and left it as it was


def test_only_entries_whose_hash_holds_are_salvaged(dep: Path, tmp_path: Path) -> None:
    from fyp.sovereignty.salvage import PARTIAL, assess

    live = store_file(load_config(dep), "us")
    restored = tmp_path / "restored.sqlite"  # the backup's store, as far as assess cares
    with closing(sqlite3.connect(live)) as source, closing(sqlite3.connect(restored)) as copy:
        source.backup(copy)
    conn = sqlite3.connect(live)
    try:  # an entry edited behind the chain's back (the triggers dropped first)
        conn.execute("DROP TRIGGER audit_log_no_update")
        last = conn.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (last,))
        conn.commit()
    finally:
        conn.close()
    first, *_ = leaf_pages(live, "audit_log")
    smash(live, [first])
    found = assess(live, restored)
    assert found.damage is not None and found.audit == PARTIAL
    assert found.history is not None and last not in {row[0] for row in found.history}
    assert "mallory" not in {row[2] for row in found.history}
    assert found.audit_lost == 0  # the backup holds every entry that could not be read


def test_entries_under_a_damaged_root_page_are_read_from_the_leaf_pages(dep: Path) -> None:
    """SQLite cannot reach any row of a table whose root page is damaged; the leaf pages
    still hold them, and their hashes say they are intact."""
    config = load_config(dep)
    backup_then_takedown(dep)
    live = store_file(config, "us")
    leaf_pages(live, "audit_log")  # (folds the WAL in)
    with closing(sqlite3.connect(live)) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'audit_log'"
        ).fetchone()
        entries = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    smash(live, [root])
    code, out = cli("restore", str(dep), "--region", "us", "--json")
    report = json.loads(out)
    assert code == 0 and report["warnings"] == []
    assert report["replaced_store"]["audit_log"] == "complete"
    assert state(dep, "us", TAKEN_DOWN) == "rejected"
    with Deployment.open(dep) as d:
        carried = [e for e in AuditLog(d.store("us")).entries() if "carried_from" in e.details]
    # what the backup holds was recognised, not carried again: only the takedown since
    assert [e.actor for e in carried if e.action == "verdict"] == ["tslead"]
    assert len(carried) < entries


def test_a_dry_run_over_a_damaged_store_says_so_and_what_only_it_holds(dep: Path) -> None:
    from fyp.catalog.models import UserIn
    from fyp.catalog.service import Catalog

    config = load_config(dep)
    backup_then_takedown(dep)
    with Deployment.open(dep) as d:
        Catalog(d).create_user(UserIn(user_id="late", home_region="us"))
    live = store_file(config, "us")
    first, *_ = leaf_pages(live, "audit_log")
    smash(live, [first])
    untouched = live.read_bytes()
    code, out = cli("restore", str(dep), "--region", "us", "--dry-run", "--json")
    assert code == 0, out
    preview = json.loads(out)
    assert preview["replaced_store_damage"]  # SQLite's own complaint
    assert preview["dropped_since_backup"] == {
        "users": 1,
        "events": 0,
        "videos": 0,
        "profile_edits": 0,
    }
    assert live.read_bytes() == untouched and not (dep / "regions" / "us" / ".quarantine").exists()
    code, out = cli("restore", str(dep), "--region", "us", "--json")
    assert code == 1
    (warning,) = json.loads(out)["warnings"]
    assert warning.startswith("1 user, 0 events, 0 videos added since the backup")
    assert "only in the damaged store kept aside" in warning
