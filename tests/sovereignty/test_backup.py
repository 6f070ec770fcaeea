"""Backups: encrypted, checksummed, only to allowed targets; restores verify and re-erase."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from region_helpers import built, cli, copy_of

from fyp.catalog.service import Catalog
from fyp.config import load_config, parse_config
from fyp.errors import BackupCorrupt, ConfigError, ResidencyViolation, SealBroken, StoreInUse
from fyp.models.artifacts import current_version, read_arrays
from fyp.regions.deployment import Deployment
from fyp.sovereignty import ErasureLedger
from fyp.sovereignty.backup import MANIFEST_FILE, SNAPSHOT_FILE, list_backups
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.region_data import store_file
from fyp.sovereignty.restore import Restorer
from fyp.sovereignty.sealed import CHUNK, OpenReader, SealWriter
from fyp.storage.base import EventRow

__all__ = ["built"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def users(root: Path, region: str) -> set[str]:
    with Deployment.open(root) as d:
        return {u.user_id for u in d.store(region).iter_users()}


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def test_backup_is_sealed_checksummed_and_written_only_to_the_regions_target(dep: Path) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    assert backup.path.parent == dep / "backups" / "us"
    assert not (dep / "backups" / "eu").exists()
    m = backup.manifest
    assert m["region"] == "us" and m["backup_id"].startswith("us-")
    assert m["store"]["users"] == len(users(dep, "us"))
    names = {p["path"] for p in m["parts"]}
    version = current_version(dep / "regions" / "us")
    assert {"store.sqlite", "files/models/current", f"files/models/{version}/arrays.npz"} <= names
    assert not any("secrets" in n or "erasures" in n for n in names)
    sealed = (backup.path / SNAPSHOT_FILE).read_bytes()
    assert m["ciphertext"]["sha256"] == hashlib.sha256(sealed).hexdigest()
    assert b"SQLite format 3" not in sealed and b'"u0"' not in sealed
    # no plaintext left behind next to the region's data
    assert not [p for p in (dep / "regions" / "us").iterdir() if p.name.startswith(".")]


def test_restore_rolls_the_region_back_to_the_snapshot(dep: Path) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    before = users(dep, "us")
    with Deployment.open(dep) as d:
        from fyp.catalog.models import UserIn

        Catalog(d).create_user(UserIn(user_id="late", home_region="us"))
        eu_before = d.store("eu").count_events()
    report = Restorer(config, "us").run()
    assert report.backup_id == backup.backup_id and report.reerased == []
    assert users(dep, "us") == before  # "late" came after the snapshot
    with Deployment.open(dep) as d:
        assert d.store("eu").count_events() == eu_before  # other regions untouched
        assert d.store("us").max_event_seq() == backup.manifest["store"]["max_event_seq"]


def test_restore_never_brings_back_a_user_erased_after_the_backup(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, "us").run()
    region_dir = dep / "regions" / "us"
    version = current_version(region_dir)
    assert version is not None
    assert "u2" in set(read_arrays(region_dir, version)["user_ids"].tolist())
    with Deployment.open(dep) as d:
        receipt = Catalog(d).erase_user("u2")
    assert ErasureLedger(config, "us").find("u2") is not None
    report = Restorer(config, "us").run()
    assert report.reerased == [receipt.receipt_id]
    assert "u2" not in users(dep, "us")
    with Deployment.open(dep) as d:
        assert d.store("us").user_events("u2") == []
        assert d.locate_users(["u2"]) == {}
    for v in (p.name for p in (region_dir / "models").iterdir() if (p / "arrays.npz").is_file()):
        arrays = read_arrays(region_dir, v)
        assert "u2" not in set(np.asarray(arrays["user_ids"]).tolist())
    # and a second restore of the same old backup still cannot bring u2 back
    Restorer(config, "us").run()
    assert "u2" not in users(dep, "us")
    # nor one after the ledger was emptied by hand: the audit log (carried over the
    # restore) records the erasure, and the ledger line is written back from it
    ErasureLedger(config, "us").path.write_text("")
    Restorer(config, "us").run()
    assert "u2" not in users(dep, "us")
    entry = ErasureLedger(config, "us").find("u2")
    assert entry is not None and entry.receipt_id == receipt.receipt_id


def test_a_restore_makes_the_two_sides_of_blocks_agree(dep: Path) -> None:
    """Blocks between us and eu made after a backup of us: u1 (eu) blocked u0 (us), whose
    side in us the restore rolls back, so the restore writes it again; u0 blocked u1,
    a row the restore rolls back, so u1's side in eu goes (the blocker's row is the
    record). Every video is published in both regions: anyone may block anyone."""
    from fyp.catalog.blocks import Blocking
    from fyp.catalog.blocks_check import check_blocks

    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        Blocking(d).block("u1", "u0")
        Blocking(d).block("u0", "u1")
        assert d.store("us").blocked_creators("u0") == ["u1"]
    report = Restorer(config, "us").run()
    assert report.resynced_blocks == 2
    with Deployment.open(dep) as d:
        assert d.store("us").blocked_creators("u0") == ["u1"]  # u1's block, written again
        assert d.store("eu").blocked_creators("u1") == ["u0"]  # u1's own block only
        assert check_blocks(d).ok


def test_restore_never_brings_back_a_key_revoked_after_the_backup(dep: Path) -> None:
    from fyp.access.keys import REVOCATIONS_FILE, KeyStore

    config = load_config(dep)
    with Deployment.open(dep) as d:
        key, _token = KeyStore(d).create("app", ["feed"], ["us"])
    backup = BackupWriter(config, "us").run()
    assert REVOCATIONS_FILE not in {
        p["path"].removeprefix("files/") for p in backup.manifest["parts"]
    }
    with Deployment.open(dep) as d:
        KeyStore(d).revoke(key.key_id)
    Restorer(config, "us").run()
    with Deployment.open(dep) as d:
        (restored,) = [k for k in KeyStore(d).rows("us") if k.key_id == key.key_id]
        assert restored.revoked


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_backup_with_one_changed_byte_is_refused_and_nothing_changes(
    dep: Path, where: str
) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        from fyp.catalog.models import UserIn

        Catalog(d).create_user(UserIn(user_id="after", home_region="us"))
    live = store_file(config, "us")
    before = sha(live)
    path = backup.path / SNAPSHOT_FILE
    data = bytearray(path.read_bytes())
    at = {"start": 3, "middle": len(data) // 2, "end": len(data) - 1}[where]
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupCorrupt, match="checksum"):
        Restorer(config, "us").run()
    assert sha(live) == before and "after" in users(dep, "us")
    assert not [p for p in (dep / "regions" / "us").iterdir() if p.name.startswith(".")]


def test_an_edited_manifest_is_refused(dep: Path) -> None:
    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    manifest = json.loads((backup.path / MANIFEST_FILE).read_text())
    manifest["store"]["users"] += 1
    (backup.path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BackupCorrupt, match="MAC"):
        Restorer(config, "us").run()


def test_a_backup_of_another_region_cannot_be_restored(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, "us").run()
    eu = BackupWriter(config, "eu").run()
    with pytest.raises(ResidencyViolation):  # eu's target is not a place us reads from
        Restorer(config, "us").run(source="file://backups/eu")
    with pytest.raises(ResidencyViolation):  # nor is any place outside us's policy
        Restorer(config, "us").run(source="file:///tmp")
    moved = dep / "backups" / "us" / eu.path.name  # copied among us's backups
    shutil.copytree(eu.path, moved)
    with pytest.raises(BackupCorrupt, match="MAC"):  # us's key does not authenticate it
        Restorer(config, "us").run(eu.backup_id)
    manifest = json.loads((moved / MANIFEST_FILE).read_text())
    manifest["region"] = "us"
    (moved / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BackupCorrupt):  # relabelled: us's key does not open it
        Restorer(config, "us").run(eu.backup_id, source="file://backups/us")


def test_only_the_regions_own_targets_are_accepted(dep: Path, tmp_path: Path) -> None:
    config = load_config(dep)
    elsewhere = tmp_path / "elsewhere"
    for url in (f"file://{elsewhere}", "file://backups/eu", "s3://bucket/us"):
        with pytest.raises(ResidencyViolation, match="not allowed"):
            BackupWriter(config, "us").run(to=url)
    assert not elsewhere.exists() and not (dep / "backups").exists()
    code, message = cli("backup", str(dep), "--region", "us", "--to", "file://backups/eu")
    assert code == 2 and "not allowed" in message


def _with_targets(dep: Path, us: list[str], eu: list[str]) -> None:
    text = (dep / "fyp.toml").read_text()
    raw = __import__("tomllib").loads(text)
    raw["regions"]["us"]["backup_targets"] = us
    raw["regions"]["eu"]["backup_targets"] = eu
    (dep / "fyp.toml").write_text(__import__("tomli_w").dumps(raw))


def test_misconfigured_targets_are_refused(dep: Path) -> None:
    raw = {
        "regions": {
            "us": {"store": "sqlite:///u.db", "backup_targets": ["file://backups/shared"]},
            "eu": {"store": "sqlite:///e.db", "backup_targets": ["file://backups/shared/eu"]},
        }
    }
    with pytest.raises(ConfigError, match="overlaps"):
        parse_config(dep, raw)
    raw["regions"]["eu"]["backup_targets"] = ["file://backups/shared"]
    with pytest.raises(ConfigError, match="overlaps"):
        parse_config(dep, raw)
    # a target inside a region's directory
    _with_targets(dep, ["file://regions/eu/backups"], ["file://backups/eu"])
    with pytest.raises(ResidencyViolation, match="inside the directory"):
        BackupWriter(load_config(dep), "us").run()
    # an allowed target this version cannot write
    _with_targets(dep, ["s3://bucket/us"], ["file://backups/eu"])
    with pytest.raises(ConfigError, match="unsupported"):
        BackupWriter(load_config(dep), "us").run()
    assert not (dep / "regions" / "eu" / "backups").exists()


def test_every_allowed_target_gets_the_same_backup(dep: Path, tmp_path: Path) -> None:
    offsite = tmp_path / "offsite-us"
    _with_targets(dep, ["file://backups/us", f"file://{offsite}"], ["file://backups/eu"])
    config = load_config(dep)
    backup = BackupWriter(config, "us").run()
    copies = list_backups(offsite).backups
    assert [b.backup_id for b in copies] == [backup.backup_id]
    assert sha(copies[0].path / SNAPSHOT_FILE) == sha(backup.path / SNAPSHOT_FILE)
    code, _ = cli("backup", str(dep), "--region", "us", "--to", f"file://{offsite}")
    assert code == 0 and len(list_backups(offsite).backups) == 2


def test_a_backup_taken_while_the_store_is_written_is_one_consistent_instant(
    dep: Path,
) -> None:
    """Writers commit 50 events per transaction; the snapshot holds whole transactions."""
    config = load_config(dep)
    stop = threading.Event()
    with Deployment.open(dep) as d:
        store = d.store("us")
        base = store.count_events()

        def write() -> None:
            k = 0
            while not stop.is_set():
                rows = [
                    EventRow(
                        f"w{k}-{i}", "u0", "v1", "play", 1_000 + k, 1_000, 0.1, False, False, True
                    )
                    for i in range(50)
                ]
                store.insert_events(rows)
                k += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            backups = [BackupWriter(config, "us").run() for _ in range(3)]
        finally:
            stop.set()
            writer.join()
    for b in backups:
        assert (b.manifest["store"]["events"] - base) % 50 == 0
    assert backups[-1].manifest["store"]["events"] > base


def test_restore_refuses_a_store_open_in_another_process(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, "us").run()
    live = store_file(config, "us")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(live)!r})\n"
            "c.execute('SELECT COUNT(*) FROM users').fetchall()\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreInUse):
            Restorer(config, "us").run()
        code, message = cli("restore", str(dep), "--region", "us")
        assert code == 2 and "stop the server" in message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert Restorer(config, "us").run().region == "us"


def test_a_target_that_cannot_be_made_is_a_one_line_error(dep: Path, tmp_path: Path) -> None:
    """An unmounted volume, or a path under a file, was a traceback from the mkdir."""
    (tmp_path / "file").write_text("x")
    for bad in (f"file://{tmp_path}/file/us", "file:///proc/fypbk"):
        _with_targets(dep, ["file://backups/us", bad], ["file://backups/eu"])
        code, message = cli("backup", str(dep), "--region", "us")
        assert code == 3 and "cannot be made at" in message and bad in message, message
        # checked before the snapshot: nothing written to the target that works either
        assert not list((dep / "backups" / "us").iterdir())
        assert not list((dep / "regions" / "us").glob(".backup-*"))


def test_cli_backup_and_restore_print_summaries_and_json(dep: Path) -> None:
    code, out = cli("backup", str(dep), "--region", "eu", "--json")
    assert code == 0
    made = json.loads(out)["manifest"]
    code, out = cli("restore", str(dep), "--region", "eu", "--backup", made["backup_id"], "--json")
    assert code == 0 and json.loads(out)["backup_id"] == made["backup_id"]
    code, out = cli("restore", str(dep), "--region", "eu")
    assert code == 0 and "erasures re-applied: 0" in " ".join(out.split())
    tampered = dep / "backups" / "eu" / made["backup_id"] / SNAPSHOT_FILE
    tampered.write_bytes(b"x")
    code, message = cli("restore", str(dep), "--region", "eu", "--backup", made["backup_id"])
    assert code == 3 and "damaged" in message and "cut short" in message  # its size, at once


# -- the sealed stream -----------------------------------------------------------------
KEY = bytes(range(32))


def seal(data: bytes, context: bytes = b"ctx") -> bytes:
    out = io.BytesIO()
    w = SealWriter(out, KEY, context)
    for i in range(0, len(data), 1000):
        w.write(data[i : i + 1000])
    w.close()
    return out.getvalue()


def unseal(blob: bytes, context: bytes = b"ctx") -> bytes:
    return OpenReader(io.BytesIO(blob), KEY, context).read()


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000), st.data())
def test_sealed_streams_round_trip_and_any_changed_byte_fails(
    data: bytes, draw: st.DataObject
) -> None:
    blob = seal(data)
    assert unseal(blob) == data
    at = draw.draw(st.integers(0, len(blob) - 1))
    bad = bytearray(blob)
    bad[at] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(SealBroken):
        unseal(bytes(bad))


def test_sealed_streams_refuse_cuts_reorders_and_other_contexts() -> None:
    data = bytes(range(256)) * (CHUNK // 256) * 2 + b"tail"  # three chunks
    blob = seal(data)
    assert unseal(blob) == data
    with pytest.raises(SealBroken):
        unseal(blob, context=b"other backup")
    header, rest = blob[:8], blob[8:]
    first_len = 12 + 4 + CHUNK + 16
    chunk1, chunk2, chunk3 = (
        rest[:first_len],
        rest[first_len : 2 * first_len],
        rest[2 * first_len :],
    )
    for broken in (
        header + chunk1 + chunk2,  # the final chunk cut off at a chunk boundary
        header + chunk2 + chunk1 + chunk3,  # reordered
        header + chunk1 + chunk3,  # one dropped
        blob + b"\0",  # bytes after the end
    ):
        with pytest.raises(SealBroken):
            unseal(broken)


def test_keep_deletes_the_oldest_backups_of_the_region_only(dep: Path) -> None:
    config = load_config(dep)
    ids = [BackupWriter(config, "us").run().backup_id for _ in range(3)]
    eu = BackupWriter(config, "eu").run().backup_id
    code, out = cli("backup", str(dep), "--region", "us", "--keep", "2", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["pruned"] == ids[:2]
    left = [b.backup_id for b in list_backups(dep / "backups" / "us").backups]
    assert left == [ids[2], report["manifest"]["backup_id"]]
    assert [b.backup_id for b in list_backups(dep / "backups" / "eu").backups] == [eu]
    assert Restorer(config, "us").run().backup_id == left[-1]  # the kept ones still restore
    code, message = cli("backup", str(dep), "--region", "us", "--keep", "0")
    assert code == 2 and "--keep" in message


def test_restoring_one_region_never_brings_back_a_user_erased_in_another(dep: Path) -> None:
    """u1 lives in eu, but the us store names them too: as the creator of videos
    published to both regions, and in a us user's attributes."""
    from fyp.sovereignty.remnants import store_hits

    with Deployment.open(dep) as d:
        us = d.store("us")
        u4 = us.get_user("u4")
        assert u4 is not None
        us.update_user(u4.model_copy(update={"attributes": {"invited_by": "u1"}}))
        created = {v.video_id for v in us.iter_videos() if v.creator_id == "u1"}
        assert created
    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        receipt = Catalog(d).erase_user("u1")
        assert store_hits(d.store("us"), "u1") == []
    report = Restorer(config, "us").run()
    assert report.reerased == [receipt.receipt_id]
    with Deployment.open(dep) as d:
        us = d.store("us")
        assert store_hits(us, "u1") == []
        assert not created & {v.video_id for v in us.iter_videos()}
        u4 = us.get_user("u4")
        assert u4 is not None and "u1" not in json.dumps(u4.attributes)


def test_a_late_restore_keeps_the_retrain_deadline_of_the_erasure(dep: Path) -> None:
    from fyp.sovereignty.erasure_process import pending_retrains

    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        receipt = Catalog(d).erase_user("u2")
    assert receipt.retrain_deadline_ms is not None
    Restorer(config, "us").run()
    assert pending_retrains(dep / "regions" / "us") == {
        receipt.receipt_id: receipt.retrain_deadline_ms
    }


def test_a_restore_keeps_the_audit_entries_written_after_the_backup(dep: Path) -> None:
    from fyp.audit.log import AuditLog

    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        read = AuditLog(d.store("us")).append("key:ops", "read_user", "p-123", {"reason": "t 777"})
    report = Restorer(config, "us").run()
    assert report.carried_audit_entries == 1
    with Deployment.open(dep) as d:
        log = AuditLog(d.store("us"))
        assert log.verify().ok
        *_, carried, restore = list(log.entries())
        assert (carried.actor, carried.action, carried.subject, carried.ts_ms) == (
            "key:ops",
            "read_user",
            "p-123",
            read.ts_ms,
        )
        assert carried.details == {
            "reason": "t 777",
            "carried_from": {"seq": read.seq, "hash": read.hash},
        }
        assert restore.action == "restore" and restore.details["carried_audit_entries"] == 1
    # a second restore of the same backup carries the whole story since, once each
    Restorer(config, "us").run()
    with Deployment.open(dep) as d:
        actions = [e.action for e in AuditLog(d.store("us")).entries()]
    assert actions[-3:] == ["read_user", "restore", "restore"]
    assert actions.count("read_user") == 1
