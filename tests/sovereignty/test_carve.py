"""Carve-out: one region as a standalone deployment that serves with the others gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from region_helpers import built, cli, copy_of

from fyp.config import load_config
from fyp.errors import AlreadyExists, InvalidRequest
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.sovereignty import ErasureLedger
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.carve import carve_out
from fyp.sovereignty.residency import ResidencyScanner

__all__ = ["built"]


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def feed_token(root: Path) -> str:
    """A feed key of region us, created in the whole deployment before the carve."""
    from fyp.access.keys import KeyStore

    with Deployment.open(root) as d:
        return KeyStore(d).create("feed-app", ["feed"], ["us"])[1]


def test_a_carved_region_serves_on_its_own(dep: Path, tmp_path: Path) -> None:
    from fyp.access.keys import KeyStore

    token = feed_token(dep)
    with Deployment.open(dep) as d:  # an operator key of the whole deployment
        wide = {"Authorization": f"Bearer {KeyStore(d).create('ops', ['admin'])[1]}"}
    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        from fyp.catalog.service import Catalog

        Catalog(d).erase_user("u6")  # the ledger must travel with the region
    out = tmp_path / "us-alone"
    code, text = cli("region", "export", str(dep), "us", "--to", str(out))
    assert code == 0, text
    # every other region's files are gone: the source deployment is moved away whole
    shutil.move(str(dep), str(tmp_path / "moved-away"))
    shutil.rmtree(tmp_path / "moved-away")

    carved = load_config(out)
    assert carved.region_names == ["us"] and not (out / "regions" / "eu").exists()
    assert (out / "regions" / "us" / "secrets" / "backup.key").is_file()
    assert ErasureLedger(carved, "us").find("u6") is not None
    assert len(list((out / "backups" / "us").iterdir())) == 1  # sealed, and restorable here
    with TestClient(create_app(out)) as client:
        r = client.get("/v1/users/u0/feed?n=5", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) > 0
        r = client.get("/v1/users/u1/feed", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404  # an eu user does not exist here
        # the whole deployment's operators are not the carved cell's
        r = client.get("/v1/users/u0/feed?n=5", headers={**wide, "X-Fyp-Reason": "test"})
        assert r.status_code == 401, r.text

    report = ResidencyScanner(out).run()
    assert report.ok and report.absent_regions == []
    assert report.regions[0].erased_in_backups > 0  # u6 is in the older backup, as counted
    code, text = cli("residency", "check", str(out))
    assert code == 0 and "0 foreign records" in " ".join(text.split())
    code, text = cli("audit", "verify", str(out), "--region", "us")
    assert code == 0, text
    # and it restores from its own backup without the original deployment
    code, text = cli("restore", str(out), "--region", "us")
    assert code == 0, text
    with Deployment.open(out) as d:
        assert d.locate_users(["u6"]) == {}  # re-erased from the carved ledger
    with TestClient(create_app(out)) as client:  # the backup's copy of the key stays revoked
        r = client.get("/v1/users/u0/feed?n=5", headers={**wide, "X-Fyp-Reason": "test"})
        assert r.status_code == 401, r.text


def test_the_carve_report_and_refusals(dep: Path, tmp_path: Path) -> None:
    out = tmp_path / "eu-alone"
    report = carve_out(dep, "eu", out, with_backups=False)
    with Deployment.open(dep) as d:
        assert report.users == d.store("eu").count_users()
        assert report.events == d.store("eu").count_events()
    assert report.audit_ok and report.audit_entries > 0
    assert not (out / "backups").exists()
    with pytest.raises(AlreadyExists):
        carve_out(dep, "eu", out)
    with pytest.raises(InvalidRequest, match="outside"):
        carve_out(dep, "us", dep / "inside")
    code, text = cli("region", "export", str(dep), "us", "--to", str(tmp_path / "j"), "--json")
    assert code == 0 and json.loads(text)["region"] == "us"
    assert load_config(tmp_path / "j").region("us").backup_targets == ("file://backups/us",)


def test_another_regions_data_in_the_region_directory_fails_the_carve(
    dep: Path, tmp_path: Path
) -> None:
    """A us store copied by hand into regions/eu/ was carried into the carved eu cell,
    exit 0 (audit review). The carve now scans its copy as `fyp residency check` does:
    the report counts what it found, says where, and the command exits 1. (Here a file
    of us users, u0 and u2: the same on a PostgreSQL region, which has no store file.)"""
    report = carve_out(dep, "eu", tmp_path / "clean", with_backups=False)
    assert report.foreign_records == 0
    (dep / "regions" / "eu" / "junk.csv").write_text("user_id,video_id\nu0,v1\nu2,v1\n")
    out = tmp_path / "eu-with-junk"
    code, text = cli("region", "export", str(dep), "eu", "--to", str(out), "--json")
    assert code == 1, text
    made = json.loads(text)
    assert made["foreign_records"] > 0
    assert "homed in eu" in made["notes"][0] and str(out) in made["notes"][0]
    assert not ResidencyScanner(out).run().ok  # what it said: the copy holds them


def test_a_target_that_cannot_be_created_is_refused_in_one_line(dep: Path, tmp_path: Path) -> None:
    """--to under a file, or where nothing may be written, was a traceback."""
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "x", Path("/proc/nope")):
        code, text = cli("region", "export", str(dep), "us", "--to", str(out))
        assert code == 2 and text.startswith(f"cannot create {out}: "), text
        assert not out.exists() and not out.with_name(f".{out.name}.partial").exists()
