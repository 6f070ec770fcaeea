"""Erasure end to end: DELETE, receipt, process (retrain), verify, remnants, reapply."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from erasure_helpers import api_client, build, plant_artifact, plant_event, train
from typer.testing import CliRunner

from experiment_helpers import with_experiment
from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog
from fyp.catalog.models import User, UserIn
from fyp.catalog.service import Catalog
from fyp.cli.app import app
from fyp.config import load_config
from fyp.errors import StorageError
from fyp.events.ingest import Ingestor
from fyp.experiments.exposures import exposures
from fyp.models.artifacts import (
    ARRAYS,
    LEFTOVER_FIX,
    current_version,
    list_versions,
    models_dir,
    new_version,
    read_arrays,
    read_manifest,
)
from fyp.regions.deployment import Deployment
from fyp.sovereignty.erasure import (
    Eraser,
    Receipt,
    add_erase_hook,
    reapply_erasures,
    receipt_signature_ok,
)
from fyp.sovereignty.erasure_process import process
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.ledger import ErasureLedger, user_pseudonym
from fyp.sovereignty.lineage import LineageVerifier
from fyp.sovereignty.residency import ResidencyScanner
from fyp.sovereignty.scheduler import ErasureScheduler
from fyp.storage.sqlite import SQLiteStore

ANA = "ana-erase-me"
runner = CliRunner()


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with build(tmp_path / "dep", ANA) as d:
        yield d


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def verify_json(d: Deployment, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out = cli("erasure", "verify", str(d.config.root), ANA, "--json", *extra)
    return code, json.loads(out)


def test_delete_then_verify_is_pending_until_process_retrains(dep: Deployment) -> None:
    us_dir = dep.config.region_dir("us")
    before = current_version(us_dir)
    with api_client(dep) as client:
        resp = client.delete(f"/v1/users/{ANA}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert client.get(f"/v1/users/{ANA}").status_code == 404
        assert client.get("/v1/videos/v0").status_code == 404  # her uploads went too
    receipt = body["receipt"]
    assert body["deleted"]["users"] == 1 and body["deleted"]["events"] >= 5
    (entry,) = AuditLog(dep.store("us")).entries(action="erase_user")
    key_id = next(k.key_id for k in KeyStore(dep).list() if k.name == "erasure-tests")
    assert entry.actor == f"key:{key_id}"  # who asked, not the machinery
    assert receipt["removed"]["videos"] == 2 and receipt["retrain_required"]
    assert receipt["pseudonym"] == user_pseudonym(dep.config, "us", ANA)
    assert ANA not in json.dumps(receipt)  # the receipt names her by pseudonym only
    # a new artifact version without her is live; the one holding her is gone
    now = current_version(us_dir)
    assert now != before and before not in list_versions(us_dir)
    arrays = read_arrays(us_dir, now)
    assert ANA not in set(arrays["user_ids"]) | set(arrays["lineage_user_ids"])
    assert len(arrays["user_ids"]) == len(arrays["user_factors"])
    assert receipt["receipt_id"] in read_manifest(us_dir, now).lineage["pending_retrain"]

    receipt_file = dep.config.root / "receipt.json"
    receipt_file.write_text(json.dumps(receipt), encoding="utf-8")
    code, report = verify_json(dep, "--receipt", str(receipt_file))
    assert code == 1 and report["status"] == "pending_retrain" and not report["remnants"]
    assert receipt["receipt_id"] in report["pending_retrain"]
    assert report["receipt"]["ok"]

    code, out = cli("erasure", "process", str(dep.config.root), "--json")
    assert code == 0, out
    runs = {r["region"]: r for r in json.loads(out)["runs"]}
    assert runs["us"]["retrained"] and not runs["us"]["pending_after"]
    assert runs["eu"]["retrained"] is None  # nothing of hers was learned in eu
    retrained = read_arrays(us_dir, runs["us"]["retrained"])
    assert len(retrained["ahead_user_ids"]) > 0  # feeds ranked ahead, as `fyp train` does
    assert ANA not in set(retrained["ahead_user_ids"])

    code, report = verify_json(dep, "--receipt", str(receipt_file))
    assert code == 0 and report["status"] == "erased", report
    code, text = cli("erasure", "verify", str(dep.config.root), ANA)
    assert code == 0 and "erased" in text
    assert all(r.ok for r in LineageVerifier(dep).verify())
    # the whole body of the DELETE answer is accepted as the receipt too; it names her,
    # so kept in the deployment directory it is a remnant (outside it, none)
    receipt_file.write_text(json.dumps(body), encoding="utf-8")
    code, report = verify_json(dep, "--receipt", str(receipt_file))
    assert code == 1 and report["receipt"]["ok"], report
    assert [(r["region"], r["kind"], r["where"]) for r in report["remnants"]] == [
        ("-", "file", "receipt.json")
    ]
    kept = receipt_file.rename(dep.config.root.parent / "kept-receipt.json")
    code, report = verify_json(dep, "--receipt", str(kept))
    assert code == 0 and report["receipt"]["ok"], report


def test_verify_never_proves_an_erasure_nobody_made(dep: Deployment) -> None:
    code, out = cli("erasure", "verify", str(dep.config.root), "nobody-xyz1", "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "not_erased" and not report["remnants"]
    # a live user never erased is not_erased too (it said remnants: an auditor review)
    code, out = cli("erasure", "verify", str(dep.config.root), ANA, "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "not_erased" and report["remnants"]


def test_a_data_file_with_a_long_field_is_scanned_and_scrubbed(dep: Deployment) -> None:
    datasets = dep.config.region_dir("us") / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    blob = "x" * 200_000  # past the csv module's default field limit of 128 KiB
    (datasets / "x.csv").write_text(
        f"user_id,blob\n{ANA},{blob}\nsomeone-else,{blob}\n", encoding="utf-8"
    )
    Eraser(dep).erase(ANA)
    assert ANA not in (datasets / "x.csv").read_text(encoding="utf-8")
    assert "someone-else" in (datasets / "x.csv").read_text(encoding="utf-8")
    assert not verify_erasure(dep, ANA).remnants


def test_verify_finds_planted_event_row_and_artifact_row(dep: Deployment) -> None:
    Eraser(dep).erase(ANA)
    process(dep)
    assert verify_erasure(dep, ANA).ok
    plant_event(dep, "us", ANA)
    report = verify_erasure(dep, ANA)
    assert report.status == "remnants"
    assert {(r.region, r.kind, r.where) for r in report.remnants} >= {
        ("us", "store", "events.user_id")
    }
    store: Any = dep.store("us")
    store.execute("DELETE FROM events WHERE event_id='planted'")
    # the row is gone, but its bytes are still in the write-ahead log: that counts too
    assert [r.kind for r in verify_erasure(dep, ANA).remnants] == ["store_bytes"]
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")
    assert verify_erasure(dep, ANA).ok
    version = plant_artifact(dep, "eu", [ANA])
    report = verify_erasure(dep, ANA)
    assert [(r.region, r.kind) for r in report.remnants] == [("eu", "artifact")]
    assert version in report.remnants[0].where
    code, _ = verify_json(dep)
    assert code == 1
    # process strips a ledger-erased user from any artifact that names them
    process(dep, ["eu"])
    assert verify_erasure(dep, ANA).ok


def test_deleted_bytes_do_not_linger_in_store_files(dep: Deployment) -> None:
    Eraser(dep).erase(ANA)
    process(dep)
    for region in dep.regions:
        path = Path(dep.store(region).path)  # type: ignore[attr-defined]
        for f in (path, path.with_name(path.name + "-wal")):
            if f.is_file():
                assert ANA.encode() not in f.read_bytes(), f


def test_a_wal_that_stays_busy_fails_the_erasure_after_the_caches_forget(
    dep: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """purge_deleted gave up (another connection kept eu's WAL busy past the timeout):
    everything else is erased and the caches still drop her, then the caller is told."""
    eu = dep.store("eu")

    def held(self: object) -> None:
        if self is eu:
            raise StorageError("the WAL of region 'eu' could not be emptied", region="eu")

    monkeypatch.setattr(type(eu), "purge_deleted", held)
    seen: list[tuple[str, str]] = []
    remove = add_erase_hook(lambda region, user: seen.append((region, user)))
    try:
        with pytest.raises(StorageError, match=r"could not be emptied\. The erasure is recorded"):
            Eraser(dep).erase(ANA)
    finally:
        remove()
    assert seen == [("us", ANA)]
    assert ErasureLedger(dep.config, "us").find(ANA) is not None
    assert not dep.store("us").existing_users([ANA])


def test_erasure_process_does_the_wal_truncation_an_erasure_owed(dep: Deployment) -> None:
    """An erasure that met a busy WAL left a marker (tests/storage/test_sqlite_purge.py);
    ``fyp erasure process`` truncates that region's WAL, once, and reports it."""
    from fyp.storage.sqlite_served_log import PURGE_OWED_SUFFIX

    Eraser(dep).erase(ANA)
    owed = Path(dep.store("eu").path + PURGE_OWED_SUFFIX)  # type: ignore[attr-defined]
    owed.write_text("owed\n")
    runs = {r.region: r for r in process(dep)}
    assert runs["eu"].wal_purged and not runs["us"].wal_purged
    assert not owed.exists()
    assert not any(r.wal_purged for r in process(dep))


def test_receipt_signature_catches_tampering_and_other_users(dep: Deployment) -> None:
    receipt = Eraser(dep).erase(ANA)
    assert receipt_signature_ok(dep, receipt)
    assert receipt_signature_ok(dep, Receipt.from_dict(json.loads(json.dumps(receipt.to_dict()))))
    forged = replace(receipt, removed={**receipt.removed, "events": 0})
    assert not receipt_signature_ok(dep, forged)
    assert not receipt_signature_ok(dep, replace(receipt, region="eu"))
    process(dep)
    assert not verify_erasure(dep, ANA, forged).ok
    other = verify_erasure(dep, "u2", receipt)  # u2 still exists, and is not the receipt's
    assert other.receipt is not None and not other.receipt["names_this_user"]
    assert other.status == "not_erased" and other.remnants  # never erased: still there


def test_ledger_audit_log_and_hooks_record_the_erasure(dep: Deployment) -> None:
    seen: list[tuple[str, str]] = []
    remove = add_erase_hook(lambda region, user: seen.append((region, user)))
    try:
        receipt = Eraser(dep).erase(ANA)
    finally:
        remove()
    assert seen == [("us", ANA)]
    entry = ErasureLedger(dep.config, "us").find(ANA)
    assert entry is not None and entry.receipt_id == receipt.receipt_id
    log = AuditLog(dep.store("us"))
    erased = log.entries(subject=receipt.pseudonym, action="erase_user")
    assert [e.details["receipt_id"] for e in erased] == [receipt.receipt_id]
    assert log.verify().ok
    assert ANA not in (dep.config.region_dir("us") / "erasures.jsonl").read_text()


def test_reapply_after_a_restore_erases_again_without_a_new_ledger_entry(
    dep: Deployment,
) -> None:
    receipt = Eraser(dep).erase(ANA)
    process(dep)
    # a restore from an older backup brings her profile and an event back
    store = dep.store("us")
    store.insert_user(User(user_id=ANA, home_region="us", created_at_ms=1, updated_at_ms=1))
    plant_event(dep, "us", ANA)
    assert not verify_erasure(dep, ANA).ok
    assert reapply_erasures(dep, "us") == [receipt.receipt_id]
    assert reapply_erasures(dep, "us") == []
    assert len(ErasureLedger(dep.config, "us").entries()) == 1
    assert verify_erasure(dep, ANA).ok
    assert store.get_user(ANA) is None
    # the restore also brought back an old artifact and a held-out data file naming her
    plant_artifact(dep, "us", [ANA])
    data = dep.config.region_dir("us") / "datasets" / "held-out.csv"
    data.parent.mkdir()
    data.write_text(f"user_id,video_id\n{ANA},v1\nu0,v2\n")
    assert {r.kind for r in verify_erasure(dep, ANA).remnants} == {"artifact", "file"}
    assert reapply_erasures(dep, "us") == [receipt.receipt_id]
    assert verify_erasure(dep, ANA).ok
    assert data.read_bytes() == b"user_id,video_id\nu0,v2\n"


def test_a_killed_artifact_writes_leftover_is_a_remnant_until_process_removes_it(
    dep: Deployment,
) -> None:
    """A `fyp train` killed while writing left models/.<version>.tmp/arrays.npz naming
    the user: verify said 'erased', and neither process nor training removed it, while
    the residency scan called it 'unreadable' with no fix (chaos report #2)."""
    region_dir = dep.config.region_dir("us")
    live = current_version(region_dir)
    assert live is not None
    whole = (models_dir(region_dir) / live / ARRAYS).read_bytes()
    leftover = models_dir(region_dir) / f".{new_version()}.tmp"
    leftover.mkdir()
    (leftover / ARRAYS).write_bytes(whole[:-30])  # killed before the zip's directory
    Eraser(dep).erase(ANA)
    report = verify_erasure(dep, ANA)
    where = f"models/{leftover.name}/{ARRAYS}"
    copies = {r.where: r.count for r in report.remnants if r.kind == "copy"}
    assert copies[f"{where}: user_ids"] == 1  # read as far as it was written
    assert f"{where}: {ARRAYS} (unreadable arrays)" in copies  # the rest: nothing vouches
    assert f"regions/us/models/{leftover.name}: {LEFTOVER_FIX}" in report.notes
    code, out = verify_json(dep)
    assert code == 1 and out["status"] == "remnants"
    findings = ResidencyScanner(dep.config.root).run().findings
    named = [f for f in findings if f.location.startswith(where)]
    assert {f.kind for f in named} == {"erased", "unreadable"}
    assert all(f.location.endswith(LEFTOVER_FIX) for f in named)
    [run] = process(dep, ["us"])
    assert f"models/{leftover.name}" in run.stale_copies and not leftover.exists()
    assert verify_erasure(dep, ANA).ok
    assert not [f for f in ResidencyScanner(dep.config.root).run().findings if f.region == "us"]


def test_an_unwritable_receipt_path_never_loses_the_receipt(
    dep: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fyp erasure erase --receipt` to a path it could not write erased the user, then
    failed with a traceback: the receipt, which only that erasure can make, was lost.
    Now a path that cannot be written is refused before anything is erased, and a write
    that fails after is an error with the receipt printed."""
    root = str(dep.config.root)
    for bad in (tmp_path / "nowhere" / "r.json", tmp_path):
        result = runner.invoke(app, ["erasure", "erase", root, ANA, "--receipt", str(bad)])
        assert result.exit_code == 2 and "--receipt" in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert dep.store("us").get_user(ANA) is not None  # nothing erased
    target = tmp_path / "r.json"
    real = Path.write_text

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> int:
        if self == target:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = runner.invoke(app, ["erasure", "erase", root, ANA, "--receipt", str(target)])
    assert result.exit_code == 3, result.output
    assert "the user is erased, but its receipt could not be written" in result.output
    printed = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert receipt_signature_ok(dep, Receipt.from_dict(printed))
    assert dep.store("us").get_user(ANA) is None


KILLED_ERASURE = """
import os, signal, sys
from fyp.sovereignty import erasure
erasure.Eraser.remove_from_store = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["fyp", *sys.argv[1:]]
from fyp.cli import main
main()
"""


def test_an_erasure_killed_part_way_is_finished_by_the_next_open(dep: Deployment) -> None:
    """A server killed while a DELETE waited left the ledger entry and every row of the
    user, served on until someone ran `fyp erasure process` by hand (chaos test). The
    erasure's mark, left with its lock free, makes the next open finish it, and the
    server's erasure schedule due at once."""
    root = dep.config.root
    run = subprocess.run(
        [sys.executable, "-c", KILLED_ERASURE, "erasure", "erase", str(root), ANA],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert run.returncode == -9, run.stdout + run.stderr
    (mark,) = (root / "regions" / "us" / ".erasing").glob("*.json")
    entry = ErasureLedger(dep.config, "us").find(ANA)
    assert entry is not None and mark.stem == entry.receipt_id
    assert dep.store("us").get_user(ANA) is not None  # killed before her rows went
    assert [r.kind for r in verify_erasure(dep, ANA).remnants].count("file") == 1  # the mark
    assert ErasureScheduler(load_config(root)).due()
    with Deployment.open(root) as again:  # any open: a server's start, a command
        assert again.store("us").get_user(ANA) is None
    assert not mark.exists() and not ErasureScheduler(load_config(root)).due()
    process(dep)
    assert verify_erasure(dep, ANA).ok
    assert len(ErasureLedger(dep.config, "us").entries()) == 1  # the same erasure, once


def test_verify_reads_every_file_the_residency_scan_reads(dep: Deployment) -> None:
    """An audit review left an erased user in a store copy at the deployment root, an
    export there, a log line and a renamed export under regions/us/: `erasure verify`
    said erased (it read CSV and JSON files under regions/ only) while `residency check`
    flagged some of them."""
    root = dep.config.root
    on_sqlite = isinstance(dep.store("us"), SQLiteStore)  # a copy of the store file: SQLite's
    if on_sqlite:
        with (
            sqlite3.connect(root / "regions" / "us" / "store.sqlite") as live,
            sqlite3.connect(root / "before.sqlite") as copy,
        ):
            live.backup(copy)  # WAL included
    Eraser(dep).erase(ANA)
    process(dep)
    (root / "exports").mkdir()
    (root / "exports" / "ana.json").write_text(json.dumps({"user_id": ANA, "likes": 3}))
    logs = root / "regions" / "us" / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(f"12:00 served page user_id={ANA} n=10\n")
    (logs / "export.txt").write_text(f"[{ANA!r}, 'v1']")  # no field: only its bytes
    found = {(r.region, r.kind, r.where) for r in verify_erasure(dep, ANA).remnants}
    assert found == {
        *([("-", "file", "before.sqlite")] if on_sqlite else []),
        ("-", "file", "exports/ana.json"),
        ("us", "file", "logs/app.log"),
        ("us", "file_bytes", "logs/export.txt"),
    }
    for path in (root / "before.sqlite", root / "exports" / "ana.json", logs / "app.log"):
        path.unlink(missing_ok=True)
    (logs / "export.txt").unlink()
    assert verify_erasure(dep, ANA).ok


def test_a_ledger_cut_by_hand_is_found_and_written_back_from_the_audit_log(
    dep: Deployment,
) -> None:
    """An audit review emptied a region's erasures.jsonl and restored a backup from
    before an erasure: the user came back, and every check passed. The hash-chained
    audit log records each erasure by the same pseudonym and receipt: `fyp audit
    verify` now fails on the gap, and re-applying erasures writes it back first."""
    receipt = Eraser(dep).erase(ANA)
    process(dep)
    root = str(dep.config.root)
    assert cli("audit", "verify", root)[0] == 0
    ledger = ErasureLedger(dep.config, "us")
    ledger.path.write_text("")  # cut by hand
    code, out = cli("audit", "verify", root, "--json")
    assert code == 1
    (us,) = [r for r in json.loads(out)["reports"] if r["region"] == "us"]
    assert [p["kind"] for p in us["problems"]] == ["unledgered"]
    assert receipt.receipt_id in us["problems"][0]["message"]
    # a restore from before the erasure brings her back; re-applying finds her anyway
    store = dep.store("us")
    store.insert_user(User(user_id=ANA, home_region="us", created_at_ms=1, updated_at_ms=1))
    assert reapply_erasures(dep, "us") == [receipt.receipt_id]
    assert store.get_user(ANA) is None and verify_erasure(dep, ANA).ok
    (entry,) = ledger.entries()
    assert (entry.subject, entry.receipt_id) == (receipt.pseudonym, receipt.receipt_id)
    assert cli("audit", "verify", root)[0] == 0
    assert reapply_erasures(dep, "us") == [] and len(ledger.entries()) == 1


def test_training_that_raced_an_erasure_is_caught_and_fixed(dep: Deployment) -> None:
    Eraser(dep).erase(ANA)
    process(dep)
    plant_artifact(dep, "us", [ANA], make_current=True)  # as if trained before the erasure
    assert not verify_erasure(dep, ANA).ok
    assert not all(r.ok for r in LineageVerifier(dep).verify(["us"]))
    run = process(dep, ["us"])[0]
    # re-applying the ledger cleans the artifact (or stripping does); either way a
    # retrain follows and nothing of the user is left
    assert (run.stripped or run.reapplied) and run.retrained
    assert verify_erasure(dep, ANA).ok


def test_due_within_batches_retrains_until_the_deadline_is_near(dep: Deployment) -> None:
    receipt = Eraser(dep).erase(ANA)
    assert receipt.retrain_deadline_ms is not None
    run = process(dep, ["us"], due_within_ms=3_600_000)[0]  # deadline is 24 h away
    assert run.retrained is None and receipt.receipt_id in run.pending_after
    run = process(dep, ["us"], due_within_ms=25 * 3_600_000)[0]
    assert run.retrained and not run.pending_after


def test_a_missed_deadline_is_overdue_and_fails_lineage(tmp_path: Path) -> None:
    d = build(tmp_path / "dep", ANA)
    d.close()
    toml = tmp_path / "dep" / "fyp.toml"
    text = toml.read_text().replace("retrain_within_hours = 24.0", "retrain_within_hours = 1e-9")
    toml.write_text(text)
    assert load_config(tmp_path / "dep").erasure.retrain_within_hours == 1e-9
    with Deployment.open(tmp_path / "dep") as d:
        Eraser(d).erase(ANA)
        assert verify_erasure(d, ANA).status == "retrain_overdue"
        problems = [p for r in LineageVerifier(d).verify(["us"]) for p in r.problems]
        assert any("past its retrain deadline" in p for p in problems)


def test_older_versions_naming_the_user_are_deleted_others_kept(dep: Deployment) -> None:
    us_dir = dep.config.region_dir("us")
    old = current_version(us_dir)
    train(dep, "us")  # a second version, also learned from her
    eu_dir = dep.config.region_dir("eu")
    eu_versions = list_versions(eu_dir)
    receipt = Eraser(dep).erase(ANA)
    assert old not in list_versions(us_dir) and len(list_versions(us_dir)) == 1
    # eu models never learned from her, but name her as a creator: rewritten, not retrained
    assert list_versions(eu_dir) != eu_versions
    creators = read_arrays(eu_dir, current_version(eu_dir) or "")["creator_ids"]
    assert ANA not in set(creators) and "" in set(creators)
    assert any(r.startswith("eu/") for r in receipt.artifacts["rewritten"])


def test_erasure_removes_the_users_experiment_exposures(dep: Deployment) -> None:
    """Served a page under an experiment, erased: the exposure goes with the rest, the
    receipt counts it, the serving process forgets it, and nothing of it remains."""
    from fyp.moderation import Moderator

    for region in dep.regions:  # the videos are pending until moderated: no page without
        Moderator(dep).run(region)
    with_experiment(dep, {"share": 0.5}, ["us", "eu"])
    with api_client(dep) as client:
        for user in (ANA, "u0"):
            resp = client.get(f"/v1/users/{user}/feed", params={"n": 3})
            assert resp.status_code == 200 and resp.json()["items"], resp.text
        assert set(exposures(dep.store("us"), "exp")) == {ANA, "u0"}
        resp = client.delete(f"/v1/users/{ANA}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["receipt"]["removed"]["experiment_exposures"] == 1
        assert set(exposures(dep.store("us"), "exp")) == {"u0"}  # only hers
        # the id made anew, homed in us again: a new user, exposed afresh by this server
        client.post("/v1/users", json={"user_id": ANA, "home_region": "us"})
        assert client.get(f"/v1/users/{ANA}/feed", params={"n": 3}).status_code == 200
    assert set(exposures(dep.store("us"), "exp")) == {ANA, "u0"}
    Eraser(dep).erase(ANA)
    process(dep)
    report = verify_erasure(dep, ANA)
    assert report.ok, report.to_dict()


def test_unknown_user_is_404_and_writes_nothing(dep: Deployment) -> None:
    with api_client(dep) as client:
        resp = client.delete("/v1/users/nobody")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_user"
    assert ErasureLedger(dep.config, "us").entries() == []


def test_erasure_leaves_other_users_intact(dep: Deployment) -> None:
    us_dir = dep.config.region_dir("us")
    before = read_arrays(us_dir, current_version(us_dir) or "")
    events_before = dep.store("us").count_events()
    receipt = Eraser(dep).erase(ANA)
    after = read_arrays(us_dir, current_version(us_dir) or "")
    keep = before["user_ids"] != ANA
    assert np.array_equal(after["user_ids"], before["user_ids"][keep])
    assert np.array_equal(after["user_factors"], before["user_factors"][keep])
    assert np.array_equal(after["item_factors"], before["item_factors"])
    assert dep.store("us").count_events() == events_before - receipt.removed["events"]
    assert dep.store("us").get_user("u0") is not None


def test_a_new_account_under_an_erased_id_is_not_erased_again(dep: Deployment) -> None:
    Eraser(dep).erase(ANA)
    time.sleep(0.005)  # created strictly after the erasure
    Catalog(dep).create_user(UserIn(user_id=ANA, home_region="eu"))
    assert reapply_erasures(dep, "eu") == [] and reapply_erasures(dep, "us") == []
    Ingestor(dep).ingest([{"event_id": "new-1", "user_id": ANA, "video_id": "v5", "type": "like"}])
    train(dep, "eu")  # the new account is learned in eu
    process(dep)
    assert dep.home_region(ANA) == "eu"
    eu_dir = dep.config.region_dir("eu")
    assert ANA in set(read_arrays(eu_dir, current_version(eu_dir) or "")["lineage_user_ids"])


def test_a_name_inside_another_users_json_attributes_is_erased_too(dep: Deployment) -> None:
    """``users.attributes`` holds what the app sends; it may name other users."""
    planted = {
        "us": ("u0", {"invited_by": ANA, "circle": {"user_ids": [ANA, "u2"]}, "level": 3}),
        "eu": ("u1", {"reported_by": ANA}),  # another region's user naming ana
    }
    for region, (user, attributes) in planted.items():
        store: Any = dep.store(region)
        store.execute(
            "UPDATE users SET attributes = ? WHERE user_id = ?", (json.dumps(attributes), user)
        )
    from fyp.sovereignty.remnants import store_hits

    assert {h.column for h in store_hits(dep.store("us"), ANA)} >= {
        "attributes.invited_by",
        "attributes.circle.user_ids[0]",
    }
    receipt = Eraser(dep).erase(ANA)
    assert receipt.removed["users.attributes.invited_by"] == 1
    assert receipt.removed["users.attributes.reported_by"] == 1
    us_user = dep.store("us").get_user("u0")
    eu_user = dep.store("eu").get_user("u1")
    assert us_user is not None and eu_user is not None
    assert us_user.attributes == {
        "invited_by": "[erased]",
        "circle": {"user_ids": ["[erased]", "u2"]},  # the others are kept
        "level": 3,
    }
    assert eu_user.attributes == {"reported_by": "[erased]"}
    process(dep)
    assert verify_erasure(dep, ANA).ok
    from fyp.sovereignty.residency import ResidencyScanner

    assert not [f for f in ResidencyScanner(dep.config.root).run().findings if f.kind == "erased"]


def test_a_receipt_that_is_not_one_is_a_plain_message(dep: Path, tmp_path: Path) -> None:
    """`{}` said "cannot read receipt …: 'receipt_id'" and `[1, 2]` "list indices must be
    integers or slices, not str" (audit review): Python's words, not the user's."""
    root = str(dep.config.root)
    cases = {"{}": "(no 'receipt_id')", "[1, 2]": "not a deletion receipt", "nope": "not JSON"}
    for text, says in cases.items():
        path = tmp_path / "r.json"
        path.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "fyp", "erasure", "verify", root, ANA, "--receipt", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "list indices" not in done.stderr
