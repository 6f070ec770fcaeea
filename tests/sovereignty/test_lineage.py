"""fyp lineage verify: region, users hash, homing and snapshot checked, not trusted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from erasure_helpers import build, plant_artifact
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.datasets.demo import build_demo
from fyp.models.artifacts import ARRAYS, MANIFEST, current_version, models_dir, read_manifest
from fyp.regions.deployment import Deployment
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_process import process
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.lineage import LineageVerifier

runner = CliRunner()


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with build(tmp_path / "dep") as d:
        yield d


def lineage(d: Deployment) -> tuple[int, dict[str, dict[str, object]]]:
    result = runner.invoke(app, ["lineage", "verify", str(d.config.root), "--json"])
    reports = json.loads(result.output)["artifacts"]
    return result.exit_code, {f"{r['region']}/{r['version']}": r for r in reports}


def problems_of(reports: dict[str, dict[str, object]], key: str) -> str:
    return " ".join(str(p) for p in reports[key]["problems"])  # type: ignore[attr-defined]


def test_a_trained_deployment_verifies_clean(dep: Deployment) -> None:
    code, reports = lineage(dep)
    assert code == 0
    assert {r["snapshot"] for r in reports.values()} == {"verified"}
    assert all(r["current"] for r in reports.values()) and len(reports) == 2
    text = runner.invoke(app, ["lineage", "verify", str(dep.config.root)])
    assert text.exit_code == 0 and "clean" in text.output


def test_artifact_claiming_us_but_holding_an_eu_user_is_foreign(dep: Deployment) -> None:
    version = plant_artifact(dep, "us", ["u1"])  # u1 is homed in eu; hash kept consistent
    code, reports = lineage(dep)
    assert code == 1
    assert "homed in 'eu'" in problems_of(reports, f"us/{version}")
    assert not reports[f"us/{version}"]["current"]  # every version is checked, not only current
    others = [k for k in reports if k != f"us/{version}"]
    assert all(reports[k]["ok"] for k in others)


def test_a_user_homed_nowhere_is_reported(dep: Deployment) -> None:
    version = plant_artifact(dep, "us", ["ghost"])
    code, reports = lineage(dep)
    assert code == 1 and "homed in no region" in problems_of(reports, f"us/{version}")


def test_tampered_users_hash_is_caught(dep: Deployment) -> None:
    version = plant_artifact(dep, "us", [], users_hash="0" * 64)
    code, reports = lineage(dep)
    assert code == 1
    assert "users hash" in problems_of(reports, f"us/{version}")


def test_wrong_region_in_manifest_is_caught(dep: Deployment) -> None:
    version = plant_artifact(dep, "us", [], manifest_region="eu", make_current=True)
    code, reports = lineage(dep)
    assert code == 1
    assert "names region 'eu'" in problems_of(reports, f"us/{version}")
    assert reports[f"us/{version}"]["current"]


def test_forged_event_snapshot_is_a_mismatch(dep: Deployment) -> None:
    us_dir = dep.config.region_dir("us")
    version = current_version(us_dir) or ""
    path = models_dir(us_dir) / version / MANIFEST
    raw = json.loads(path.read_text())
    raw["snapshot"]["events_sha256"] = "f" * 64
    path.write_text(json.dumps(raw))
    report = {r.version: r for r in LineageVerifier(dep).verify(["us"])}[version]
    assert report.snapshot == "mismatch" and not report.ok


def test_arrays_changed_under_their_manifest_are_a_problem(dep: Deployment) -> None:
    """The manifest vouches for its arrays by sha256; the check did not compare them, so
    another region's aggregates put into an artifact (users' arrays left alone) passed."""
    us_dir = dep.config.region_dir("us")
    version = current_version(us_dir) or ""
    path = models_dir(us_dir) / version / ARRAYS
    with np.load(path, allow_pickle=False) as held:
        arrays = {name: held[name] for name in held.files}
    name = next(n for n, a in arrays.items() if a.dtype.kind == "f" and a.size)
    arrays[name] = arrays[name] + 1.0
    with path.open("wb") as f:
        np.savez(f, **arrays)
    code, reports = lineage(dep)
    assert code == 1
    assert "does not match its manifest's sha256" in problems_of(reports, f"us/{version}")
    assert all(r["ok"] for k, r in reports.items() if k != f"us/{version}")


def test_after_an_erasure_the_snapshot_is_not_recomputable_but_not_a_failure(
    dep: Deployment,
) -> None:
    Eraser(dep).erase("ana-erase-me")
    reports = LineageVerifier(dep).verify(["us"])
    assert [r.snapshot for r in reports] == ["not_recomputable"] and reports[0].ok
    assert any("awaits a retrain" in n for n in reports[0].notes)
    process(dep, ["us"])
    reports = LineageVerifier(dep).verify(["us"])
    assert [r.snapshot for r in reports] == ["verified"] and reports[0].ok


def test_an_erased_user_still_named_in_an_artifact_is_a_problem(dep: Deployment) -> None:
    Eraser(dep).erase("ana-erase-me")
    version = plant_artifact(dep, "us", ["ana-erase-me"])
    reports = {r.version: r for r in LineageVerifier(dep).verify(["us"])}
    assert any("erased user" in p for p in reports[version].problems)


@pytest.mark.slow
def test_the_demo_deployment_verifies_clean_before_and_after_an_erasure(tmp_path: Path) -> None:
    demo = build_demo(tmp_path / "demo")
    with Deployment.open(demo.directory) as d:
        reports = LineageVerifier(d).verify()
        assert reports and all(r.ok and r.snapshot == "verified" for r in reports)
        user = demo.example_user
        region = d.home_region(user)
        manifest = read_manifest(
            d.config.region_dir(region), current_version(d.config.region_dir(region)) or ""
        )
        assert manifest.snapshot.user_count > 0
        receipt = Eraser(d).erase(user)
        assert verify_erasure(d, user, receipt).status == "pending_retrain"
        process(d)
        assert verify_erasure(d, user, receipt).ok
        assert all(r.ok for r in LineageVerifier(d).verify())
