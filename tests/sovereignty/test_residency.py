"""The residency scan finds every record of a user outside their home region."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from region_helpers import built, cli, copy_of

from fyp.catalog.service import Catalog
from fyp.config import load_config
from fyp.errors import NotFound
from fyp.models.artifacts import current_version, read_arrays, read_manifest, write_artifact
from fyp.regions.deployment import Deployment
from fyp.sovereignty import user_pseudonym
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.residency import Finding, ResidencyScanner
from fyp.sovereignty.residency_readers import npz_names

__all__ = ["built"]
US = "us"


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def raw_sql(dep: Path, region: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Write to a store behind its back: CHECK constraints and foreign keys off."""
    conn = sqlite3.connect(dep / "regions" / region / "store.sqlite", isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints=ON")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.close()


def scan(dep: Path) -> list[Finding]:
    return ResidencyScanner(dep).run().findings


def only(findings: list[Finding], **want: object) -> list[Finding]:
    return [f for f in findings if all(getattr(f, k) == v for k, v in want.items())]


def test_a_healthy_deployment_has_no_foreign_records(dep: Path) -> None:
    BackupWriter(load_config(dep), US).run()
    report = ResidencyScanner(dep).run()
    assert report.ok and report.findings == []
    out = report.to_dict()
    assert out["foreign_records"] == 0 and out["orphan_records"] == 0
    us = next(r for r in out["regions"] if r["region"] == US)
    assert us["scanned"]["backups"] == 1 and us["scanned"]["artifacts"] == 1
    assert us["scanned"]["store_columns"] >= 4  # users, events, labels, served at least
    # eu creators (u1, u3, u5) name videos in the us catalogue: the documented exception
    assert us["exempt_creators"] > 0 and "creator" in out["exceptions"][0]["message"]
    code, text = cli("residency", "check", str(dep))
    assert code == 0 and "0 foreign records" in " ".join(text.split())


def test_store_rows_of_a_foreign_user_are_found_in_any_table(dep: Path) -> None:
    raw_sql(
        dep,
        US,
        (
            "INSERT INTO events (event_id, region, user_id, video_id, type, ts_ms) "
            "VALUES ('planted', 'eu', 'u1', 'v1', 'like', 1)",
            (),
        ),
        (
            "INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms) "
            "VALUES ('u3', 'eu', 1, 1)",
            (),
        ),
        (
            "CREATE TABLE reports (report_no INTEGER PRIMARY KEY, reporter_id TEXT, "
            "reported_user_id TEXT)",
            (),
        ),
        ("INSERT INTO reports (reporter_id, reported_user_id) VALUES ('u0', 'u5')", ()),
        (
            "INSERT INTO served_pages (user_id, page_seq, region, served_at_ms, video_ids) "
            "VALUES ('ghost', 1, 'us', 1, '[\"v1\"]')",
            (),
        ),
    )
    findings = scan(dep)
    foreign = {(f.location, f.user_id) for f in only(findings, kind="foreign", source="store")}
    assert foreign == {
        ("events.user_id", "u1"),
        ("users.user_id", "u3"),
        ("reports.reported_user_id", "u5"),  # a table fyp does not know
    }
    assert all(f.home_region == "eu" and f.region == US for f in only(findings, kind="foreign"))
    assert [(f.location, f.user_id) for f in only(findings, kind="orphan")] == [
        ("served_pages.user_id", "ghost")
    ]
    code, out = cli("residency", "check", str(dep), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["foreign_records"] == 3 and report["orphan_records"] == 1


def test_person_fields_inside_json_objects_are_found(dep: Path) -> None:
    """``users.attributes`` holds what the app sends: other users' ids may sit in it."""
    attributes = {
        "invited_by": "u1",  # a person field naming an eu user
        "circle": {"user_ids": ["u3", "u0"], "note": "u5"},  # nested, in an array
        "user_id": "ghost",  # homed nowhere
        "favourite": "u7",  # not a person field: not read as one
    }
    raw_sql(
        dep,
        US,
        ("UPDATE users SET attributes = ? WHERE user_id = 'u0'", (json.dumps(attributes),)),
    )
    findings = scan(dep)
    foreign = {(f.location, f.user_id) for f in only(findings, kind="foreign", source="store")}
    assert foreign == {
        ("users.attributes.invited_by", "u1"),
        ("users.attributes.user_ids", "u3"),
    }
    assert [(f.location, f.user_id) for f in only(findings, kind="orphan")] == [
        ("users.attributes.user_id", "ghost")
    ]


def test_a_pseudonym_of_a_foreign_user_in_the_audit_log_is_found(dep: Path) -> None:
    config = load_config(dep)
    subject = user_pseudonym(config, US, "u7")  # keyed as us would name a user
    raw_sql(
        dep,
        US,
        (
            "INSERT INTO audit_log (region, ts_ms, actor, action, subject, details, "
            "prev_hash, hash) VALUES ('us', 1, 'x', 'erase', ?, '{}', '0', 'planted')",
            (subject,),
        ),
    )
    hits = only(scan(dep), kind="foreign", location="audit_log.subject")
    assert [(f.user_id, f.home_region) for f in hits] == [("u7", "eu")]


def test_a_model_artifact_naming_a_foreign_user_is_found(dep: Path) -> None:
    region_dir = dep / "regions" / US
    version = current_version(region_dir)
    assert version is not None
    arrays = read_arrays(region_dir, version)
    ids = arrays["user_ids"].astype(object)
    ids[0] = "u9"  # an eu user
    arrays["user_ids"] = np.asarray(ids, dtype=np.str_)
    manifest = read_manifest(region_dir, version)
    manifest.version = version + "-planted"
    write_artifact(region_dir, manifest, arrays, make_current=False)
    hits = only(scan(dep), source="artifact")
    assert [(f.kind, f.user_id, f.home_region) for f in hits] == [("foreign", "u9", "eu")]
    assert hits[0].location == f"models/{version}-planted/arrays.npz:user_ids"


def test_a_backup_holding_a_foreign_record_is_found(dep: Path) -> None:
    raw_sql(
        dep,
        US,
        (
            "INSERT INTO events (event_id, region, user_id, video_id, type, ts_ms) "
            "VALUES ('in-backup', 'us', 'u11', 'v1', 'like', 1)",
            (),
        ),
    )
    backup = BackupWriter(load_config(dep), US).run()
    raw_sql(dep, US, ("DELETE FROM events WHERE event_id='in-backup'", ()))
    hits = only(scan(dep), region=US)
    assert [(f.kind, f.source, f.user_id) for f in hits] == [("foreign", "backup", "u11")]
    assert hits[0].location == f"backup {backup.backup_id}: events.user_id"


def test_a_backup_that_does_not_open_with_the_regions_key_is_a_finding(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, US).run()
    eu = BackupWriter(config, "eu").run()
    eu.path.rename(dep / "backups" / US / eu.path.name)  # eu's backup among us's
    hits = only(scan(dep), kind="unreadable_backup")
    assert len(hits) == 1 and eu.path.name in hits[0].location


def test_caches_logs_and_stray_files_are_scanned(dep: Path) -> None:
    region_dir = dep / "regions" / US
    (region_dir / "cache").mkdir()
    (region_dir / "cache" / "feeds.jsonl").write_text(
        json.dumps({"user_id": "u0", "page": ["v1"]})
        + "\n"
        + json.dumps({"user_id": "u13", "page": ["v2"]})
        + "\n"
    )
    (region_dir / "logs").mkdir()
    (region_dir / "logs" / "serve.log").write_text(
        "GET /v1/users/u0/feed 200 user=u0\nGET /v1/users/u15/feed 200 user=u15\n"
    )
    (region_dir / "datasets").mkdir()
    (region_dir / "datasets" / "extra.csv").write_text(
        "user_id,video_id\nu0,v1\nu17,v2\nnobody,v3\n"
    )
    (dep / "exports").mkdir()  # a file that belongs to no region at all
    (dep / "exports" / "dump.csv").write_text("user_id,score\nu0,1\n")
    findings = scan(dep)
    got = {(f.region, f.kind, f.location.split(":")[0], f.user_id) for f in findings}
    assert got == {
        (US, "foreign", "cache/feeds.jsonl", "u13"),
        (US, "foreign", "logs/serve.log", "u15"),
        (US, "foreign", "datasets/extra.csv", "u17"),
        (US, "orphan", "datasets/extra.csv", "nobody"),
        ("-", "foreign", "exports/dump.csv", "u0"),  # us's user, outside us
    }


def test_compressed_json_numeric_and_undeclared_places_are_scanned_too(dep: Path) -> None:
    import gzip

    region_dir = dep / "regions" / US
    (region_dir / "datasets").mkdir()
    (region_dir / "datasets" / "old.csv.gz").write_bytes(
        gzip.compress(b"user_id,video_id\nu0,v1\nu19,v2\n")
    )
    (region_dir / "datasets" / "circle.json").write_text(
        json.dumps({"owner": "u0", "members": {"user_ids": ["u0", "u21"]}})
    )
    np.savez(region_dir / "datasets" / "shadow.npz", shadow_user_ids=np.array([7, 8]))
    (region_dir / "datasets" / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    (region_dir / "secrets").mkdir(exist_ok=True)  # keys are skipped, nothing else
    shutil.copy(dep / "regions" / "eu" / "store.sqlite", region_dir / "secrets" / "dump.sqlite")
    backups = dep / "backups" / US
    backups.mkdir(parents=True, exist_ok=True)  # a file beside the backups, not one
    (backups / "dump.csv").write_text("user_id\nu23\n")
    old = dep / "regions" / "old"  # a region the config no longer declares
    old.mkdir()
    shutil.copy(dep / "regions" / "eu" / "store.sqlite", old / "store.sqlite")
    findings = scan(dep)
    got = {(f.region, f.kind, f.location.split(": ")[0], f.user_id) for f in findings}
    assert {
        (US, "foreign", "datasets/old.csv.gz", "u19"),
        (US, "foreign", "datasets/circle.json", "u21"),
        (US, "orphan", "datasets/shadow.npz", "7"),
        (US, "unreadable", "datasets/broken.npz", "-"),
        ("-", "foreign", "regions/old/store.sqlite", "u1"),
        (US, "foreign", "secrets/dump.sqlite", "u1"),
        (US, "foreign", "file://backups/us/dump.csv", "u23"),
    } <= got
    assert not only(findings, user_id="u0", region=US)  # us's own user, where it belongs
    code, text = cli("residency", "check", str(dep))
    assert code == 1 and "other findings" in " ".join(text.split())


def test_a_user_in_two_regions_users_tables_is_named_in_both(dep: Path) -> None:
    raw_sql(
        dep,
        US,
        (
            "INSERT INTO users (user_id, home_region, created_at_ms, updated_at_ms) "
            "VALUES ('u1', 'us', 0, 0)",
            (),
        ),
    )
    findings = scan(dep)
    assert {(f.region, f.kind, f.user_id, f.home_region) for f in findings} == {
        ("eu", "several_homes", "u1", "us|eu"),
        (US, "several_homes", "u1", "us|eu"),
    }  # not eu's own rows of u1 blamed as foreign


def test_a_remnant_of_an_erased_user_is_reported_as_such(dep: Path) -> None:
    with Deployment.open(dep) as d:
        Catalog(d).erase_user("u4")
    assert ResidencyScanner(dep).run().ok  # the erasure left nothing behind
    (dep / "regions" / US / "notes.json").write_text(json.dumps({"user_id": "u4"}))
    hits = scan(dep)
    assert [(f.kind, f.user_id, f.home_region) for f in hits] == [("erased", "u4", None)]
    code, out = cli("residency", "check", str(dep))
    assert code == 1 and "erased" in out


def test_region_local_when_other_regions_are_absent(dep: Path) -> None:
    raw_sql(
        dep,
        US,
        (
            "INSERT INTO events (event_id, region, user_id, video_id, type, ts_ms) "
            "VALUES ('planted', 'us', 'u1', 'v1', 'like', 1)",
            (),
        ),
    )
    shutil.rmtree(dep / "regions" / "eu")  # eu is declared, but its files are elsewhere
    report = ResidencyScanner(dep).run()
    assert report.absent_regions == ["eu"]
    assert [(f.kind, f.location, f.user_id) for f in report.findings] == [
        ("orphan", "events.user_id", "u1")  # homed nowhere this scan can see
    ]
    assert not (dep / "regions" / "eu").exists()  # the scan created nothing
    with pytest.raises(NotFound):
        ResidencyScanner(dep).run(["eu"])


def test_a_cut_npz_is_read_as_far_as_it_was_written(tmp_path: Path) -> None:
    """np.savez killed mid-write leaves no zip directory: the file was only 'unreadable',
    though its bytes name the users it got to (chaos report #2's leftover)."""
    ids = np.array([f"user-{n}" for n in range(1_000)])
    whole_path = tmp_path / "whole.npz"
    np.savez(whole_path, item_factors=np.zeros((50, 4)), user_ids=ids, lineage_user_ids=ids)
    whole = whole_path.read_bytes()
    cut = tmp_path / "cut.npz"
    member = whole.index(b"user_ids.npy")
    cut.write_bytes(whole[: member + 1_000])  # inside user_ids: its header and some ids
    names = list(npz_names(cut))
    assert names[-1] == ("cut.npz (unreadable arrays)", "unreadable", {})  # fail closed
    [(where, cls, counts)] = names[:-1]
    assert (where, cls) == ("user_ids", "user") and 0 < len(counts) < 1_000
    assert set(counts) <= {str(i) for i in ids} and "user-0" in counts
    cut.write_bytes(whole[:-30])  # every member, no directory
    got = {where: len(counts) for where, _, counts in npz_names(cut)}
    assert got == {"user_ids": 1_000, "lineage_user_ids": 1_000, "cut.npz (unreadable arrays)": 0}
    cut.write_bytes(b"")  # killed at once
    assert list(npz_names(cut)) == [("cut.npz (unreadable arrays)", "unreadable", {})]


def test_swapped_stores_show_their_cause_first(dep: Path) -> None:
    """us's and eu's store files swapped: thousands of orphans, and the two findings that
    explain them were far down the table (audit review M8). They come first now."""
    us, eu = (dep / "regions" / r / "store.sqlite" for r in ("us", "eu"))
    swap = us.with_name("swap")
    us.rename(swap)
    eu.rename(us)
    swap.rename(eu)
    code, out = cli("residency", "check", str(dep), "--no-backups")
    assert code == 1
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert rows and "wrong_region_s" in rows[0], out[:2000]
