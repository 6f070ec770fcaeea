"""A region whose live model cannot be loaded is unavailable on its own: the server
starts, other regions serve, ``/readyz`` says which region and why (no server paths),
and ``fyp lineage verify`` reports the artifact as a finding."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fyp.access.keys import KeyStore
from fyp.errors import ModelError
from fyp.models.artifacts import ARRAYS, MANIFEST, current_version, models_dir
from fyp.models.region_model import RegionModel
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app


def _live(d: Deployment, region: str) -> Path:
    region_dir = d.config.region_dir(region)
    version = current_version(region_dir)
    assert version is not None
    return models_dir(region_dir) / version


def _truncate(path: Path, size: int = 5000) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


def _client(d: Deployment) -> tuple[TestClient, dict[str, str]]:
    _, key = KeyStore(d).create("tests", ["feed"])
    return TestClient(create_app(d)), {"Authorization": f"Bearer {key}"}


def test_a_truncated_arrays_file_is_a_model_error(trained: Deployment) -> None:
    live = _live(trained, "eu")
    _truncate(live / ARRAYS)
    with pytest.raises(ModelError, match="cannot read model arrays"):
        RegionModel.load(trained.config.region_dir("eu"))


@pytest.mark.parametrize("damage", ["arrays", "manifest"])
def test_a_damaged_live_model_makes_only_its_region_unavailable(
    trained: Deployment, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``truncate -s 5000 arrays.npz; fyp serve`` exited 1 with a BadZipFile traceback;
    a broken manifest gave clients ``cannot read manifest /tmp/...`` (a server path)."""
    live = _live(trained, "eu")
    if damage == "arrays":
        _truncate(live / ARRAYS)
    else:
        (live / MANIFEST).write_text("{not json", encoding="utf-8")
    client, headers = _client(trained)
    with caplog.at_level(logging.ERROR, logger="fyp.feed"), client:
        us = client.get("/v1/users/u2/feed", headers=headers)  # u2 is homed in us
        assert us.status_code == 200
        for _ in range(2):
            eu = client.get("/v1/users/u1/feed", headers=headers)
            assert eu.status_code == 503
            error = eu.json()["error"]
            assert error["code"] == "model_unavailable"
            assert error["message"] == (
                "the model of region 'eu' is unavailable; the server's log says why"
            )
            assert error["details"] == {"region": "eu"}
            assert str(trained.config.root) not in eu.text
    logged = [r.getMessage() for r in caplog.records if "cannot be served" in r.getMessage()]
    assert len(logged) == 1 and str(live) in logged[0]  # once, with the path, server-side


def test_readyz_is_ready_when_every_region_serves(trained: Deployment) -> None:
    client, _ = _client(trained)
    with client:
        resp = client.get("/readyz")  # no key, like /healthz
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    for region in ("us", "eu"):
        version = current_version(trained.config.region_dir(region))
        assert body["regions"][region] == {
            "ready": True,
            "store": "ok",
            "model": version,
            "problems": [],
            "notes": [],
        }


def test_readyz_says_which_region_cannot_serve_and_why(trained: Deployment) -> None:
    """``/healthz`` said ok while models/current named a missing version and every eu
    feed was a 503."""
    (models_dir(trained.config.region_dir("eu")) / "current").write_text("20990101T000000-0")
    client, _ = _client(trained)
    with client:
        assert client.get("/healthz").status_code == 200  # alive, still
        resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "not_ready"
    assert body["regions"]["us"]["ready"] is True
    assert body["regions"]["eu"] == {
        "ready": False,
        "store": "ok",
        "model": None,
        "problems": ["the model of region 'eu' is unavailable; the server's log says why"],
        "notes": [],
    }
    assert str(trained.config.root) not in resp.text


def test_readyz_is_not_ready_once_a_store_file_is_gone(trained: Deployment) -> None:
    client, _ = _client(trained)
    with client:
        assert client.get("/readyz").status_code == 200
        store = trained.config.region_dir("us") / "store.sqlite"
        os.rename(store, store.with_name("moved.sqlite"))
        try:
            resp = client.get("/readyz")
        finally:
            os.rename(store.with_name("moved.sqlite"), store)
    assert resp.status_code == 503
    assert resp.json()["regions"]["us"]["store"] == "unavailable"
    assert resp.json()["regions"]["us"]["problems"] == ["the store of region 'us' is unavailable"]
    assert resp.json()["regions"]["eu"]["ready"] is True


def test_readyz_is_in_the_openapi_schema(trained: Deployment) -> None:
    client, _ = _client(trained)
    with client:
        spec = client.get("/openapi.json").json()
    get = spec["paths"]["/readyz"]["get"]
    assert {"200", "503"} <= set(get["responses"])
    assert "Readiness" in spec["components"]["schemas"]


def test_lineage_verify_reports_a_damaged_artifact_as_a_finding(trained: Deployment) -> None:
    live = _live(trained, "eu")
    _truncate(live / ARRAYS)
    root = str(trained.config.root)
    trained.close()
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "lineage", "verify", root],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    findings = [line for line in done.stdout.splitlines() if line.startswith(f"eu/{live.name}:")]
    assert len(findings) == 1 and "cannot read model arrays" in findings[0], done.stdout
    assert not any(line.startswith("us/") for line in done.stdout.splitlines())
    report = subprocess.run(
        [sys.executable, "-m", "fyp", "lineage", "verify", root, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    artifacts = json.loads(report.stdout)["artifacts"]
    bad = [a for a in artifacts if not a["ok"]]
    assert [(a["region"], a["version"]) for a in bad] == [("eu", live.name)]


def test_readyz_is_not_ready_once_a_changed_policy_is_overdue_for_a_re_judge(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Videos approved under the old policy are served until a run re-judges them
    (docs/moderation.md): within the re-judge's grace the region is ready and says so in
    a note (every host would otherwise leave the pool at once); past it, not ready."""
    from dataclasses import replace

    from fyp.config import load_config, write_config
    from fyp.moderation import Moderator
    from fyp.serving.routers import ops

    root = trained.config.root
    config = load_config(root)
    eu = config.regions["eu"]
    write_config(
        replace(
            config, regions={**config.regions, "eu": replace(eu, policy={"banned_terms": ["x"]})}
        )
    )
    with Deployment.open(root) as d:
        client, _ = _client(d)
        with client:
            resp = client.get("/readyz")
            assert resp.status_code == 200
            eu_state = resp.json()["regions"]["eu"]
            assert eu_state["ready"] and "run `fyp moderate`" in eu_state["notes"][0]
            assert resp.json()["regions"]["us"]["notes"] == []
            monkeypatch.setattr(ops, "rejudge_grace_s", lambda config: 0.0)  # overdue now
            resp = client.get("/readyz")
            assert resp.status_code == 503
            eu_state = resp.json()["regions"]["eu"]
            assert not eu_state["ready"] and "run `fyp moderate`" in eu_state["problems"][0]
            assert resp.json()["regions"]["us"]["ready"]
            Moderator(d).run("eu")
            resp = client.get("/readyz")
            assert resp.status_code == 200 and resp.json()["regions"]["eu"]["notes"] == []


def test_arrays_changed_but_loadable_are_never_served(trained: Deployment) -> None:
    """Only the training schedule compared the arrays with their manifest's sha256: an
    arrays.npz damaged (or swapped) in a way that still loads was served (chaos review)."""
    live = _live(trained, "eu")
    with np.load(live / ARRAYS, allow_pickle=False) as held:
        arrays = {name: held[name] for name in held.files}
    name = next(n for n, a in arrays.items() if a.dtype.kind == "f" and a.size)
    arrays[name] = arrays[name] * 2.0
    with (live / ARRAYS).open("wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ModelError, match="does not match its manifest's sha256"):
        RegionModel.load(trained.config.region_dir("eu"))
    RegionModel.load(trained.config.region_dir("us"))  # the other region's is fine
