"""GET /v1/users/{id}/export: everything held about the user, streamed, round-tripped."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from erasure_helpers import api_client, build

from experiment_helpers import with_experiment
from fyp.models.artifacts import current_version, read_arrays
from fyp.regions.deployment import Deployment
from fyp.sovereignty import export as export_module
from fyp.sovereignty.export import UserExport
from fyp.storage import LabelRow

ANA = "ana-erase-me"


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = build(tmp_path / "dep", ANA)
    store = d.store("us")
    store.insert_labels([LabelRow("kuairec-ear", "test", ANA, f"v{k}") for k in range(3)])
    # (within the seen window: a served log on Redis lets older pages expire at once)
    d.served_log("us").record_served(ANA, ["v7", "v8"], time.time_ns() // 1_000_000 - 1_000)
    try:
        yield d
    finally:
        d.close()


def test_export_round_trips_every_row_held_about_the_user(dep: Deployment) -> None:
    with api_client(dep) as client:
        resp = client.get(f"/v1/users/{ANA}/export")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    store = dep.store("us")
    assert doc["user_id"] == ANA and doc["home_region"] == "us"
    assert doc["profile"]["country"] == "PT" and doc["profile"]["consents"] == {}
    stored = [e._asdict() for e in reversed(store.user_events(ANA, limit=10_000))]
    assert doc["events"] == stored
    assert sorted(r["video_id"] for r in doc["labels"]) == ["v0", "v1", "v2"]
    assert sorted(r["video_id"] for r in doc["served"]) == ["v7", "v8"]
    assert [v["video_id"] for v in doc["videos"]] == ["v0", "v1"]
    assert doc["videos"][0]["regions"] == ["us", "eu"]
    us_dir = dep.config.region_dir("us")
    arrays = read_arrays(us_dir, current_version(us_dir) or "")
    row = int(np.flatnonzero(arrays["user_ids"] == ANA)[0])
    assert doc["model"]["learned_from"] and np.allclose(
        doc["model"]["vector"], arrays["user_factors"][row]
    )
    assert doc["experiment_exposures"] == []  # never served under an experiment
    sections = doc["manifest"]["sections"]
    for name in ("events", "labels", "served", "experiment_exposures", "videos", "appeals"):
        assert sections[name] == len(doc[name]), name


def test_the_export_holds_the_experiments_the_user_was_served_under(dep: Deployment) -> None:
    from fyp.moderation import Moderator

    for region in dep.regions:  # pending videos are never served
        Moderator(dep).run(region)
    with_experiment(dep, {"share": 0.5}, ["us"])
    before = time.time_ns() // 1_000_000
    with api_client(dep) as client:
        page = client.get(f"/v1/users/{ANA}/feed", params={"n": 3}).json()
        client.get(f"/v1/users/{ANA}/feed", params={"n": 3, "cursor": page["next_cursor"]})
        doc = client.get(f"/v1/users/{ANA}/export").json()
    (exposure,) = doc["experiment_exposures"]
    assert exposure["experiment"] == "exp" and exposure["user_id"] == ANA
    assert exposure["variant"] == page["experiment"]["variant"]
    assert before <= exposure["exposed_at_ms"] <= time.time_ns() // 1_000_000
    assert doc["manifest"]["sections"]["experiment_exposures"] == 1


def test_an_export_right_after_a_feed_page_holds_that_page(dep: Deployment) -> None:
    from fyp.storage.served_log import ServedBuffer

    store = dep.store("us")
    # as in a serving process, pages are buffered and committed in groups; nothing
    # commits this group on its own (a served log on Redis writes each page at once)
    store._served = ServedBuffer(max_age_s=3600.0, max_records=10_000)  # type: ignore[attr-defined]
    dep.served_log("us").record_served(ANA, ["v0", "v1"], time.time_ns() // 1_000_000)
    assert store._served.pending or store.served_log_elsewhere  # type: ignore[attr-defined]
    doc = json.loads("".join(UserExport(dep, ANA).chunks()))
    served = sorted(r["video_id"] for r in doc["served"])
    assert served == ["v0", "v1", "v7", "v8"]  # the page just served is not left out
    assert doc["manifest"]["sections"]["served"] == 4


def test_export_streams_events_a_page_at_a_time(
    dep: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "PAGE", 2)
    export = UserExport(dep, ANA)
    chunks = list(export.chunks())
    doc = json.loads("".join(chunks))
    n = doc["manifest"]["sections"]["events"]
    assert n >= 5 and len(doc["events"]) == n
    assert [e["seq"] for e in doc["events"]] == sorted(e["seq"] for e in doc["events"])
    assert len(chunks) >= n // 2  # events arrive in pages, not as one value


def test_export_of_a_user_without_data_or_model(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us", "eu"]) as d, api_client(d) as client:
        client.post("/v1/users", json={"user_id": "zoe", "home_region": "eu"})
        doc = client.get("/v1/users/zoe/export").json()
        assert doc["home_region"] == "eu" and doc["events"] == [] and doc["videos"] == []
        assert doc["model"] == {
            "region": "eu",
            "version": None,
            "learned_from": False,
            "vector": None,
        }
        missing = client.get("/v1/users/nobody/export")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_user"


def test_a_scoped_key_exports_only_its_regions_and_no_reviewer_is_named(dep: Deployment) -> None:
    """ana (us) uploads a video published in eu only, it is blocked there by reviewer
    alice, and ana appeals. An export with a key of us reads no eu store (it did: the
    eu upload and appeal, with the eu reviewer's name, reached a key that gets a 403 for
    every eu route); the manifest says eu was not read. A key of every region exports
    both; neither names a reviewer."""
    from fastapi.testclient import TestClient

    from fyp.access.keys import KeyStore
    from fyp.catalog.models import VideoIn
    from fyp.catalog.service import Catalog
    from fyp.moderation import Moderator, Reviews
    from fyp.moderation.service import cell
    from fyp.serving.app import create_app

    Catalog(dep).create_video(
        VideoIn(video_id="v-eu-only", creator_id=ANA, duration_ms=9_000, regions=["eu"])
    )
    cell(dep.store("eu")).mod.write("v-eu-only", "rejected", True, "alice", "review", "x", 0, {})
    Reviews(Moderator(dep)).appeal("v-eu-only", "eu", ANA, "it is my own cooking video")
    keys = KeyStore(dep)
    us_only = keys.create("auditor us", ["auditor"], ["us"])[1]
    everywhere = keys.create("auditor all", ["auditor"])[1]
    docs = {}
    with TestClient(create_app(dep)) as client:
        for name, token in (("us", us_only), ("all", everywhere)):
            sent = {"Authorization": f"Bearer {token}", "X-Fyp-Reason": "subject access request"}
            resp = client.get(f"/v1/users/{ANA}/export", headers=sent)
            assert resp.status_code == 200, resp.text
            docs[name] = resp.json()
    scoped, full = docs["us"], docs["all"]
    assert scoped["manifest"]["regions_read"] == ["us"]
    assert scoped["manifest"]["regions_not_read"] == ["eu"]
    assert [v["video_id"] for v in scoped["videos"]] == ["v0", "v1"]
    assert scoped["appeals"] == [] and "alice" not in json.dumps(scoped)
    assert full["manifest"]["regions_read"] == ["us", "eu"]
    assert full["manifest"]["regions_not_read"] == []
    assert [v["video_id"] for v in full["videos"]] == ["v-eu-only", "v0", "v1"]
    (appeal,) = full["appeals"]
    assert (appeal["video_id"], appeal["region"], appeal["kind"]) == ("v-eu-only", "eu", "appeal")
    assert appeal["appellant"] == ANA and appeal["reason"] == "it is my own cooking video"
    assert set(appeal) == set(export_module.APPEAL_COLUMNS)
    assert "alice" not in json.dumps(full)  # the reviewer excluded from the appeal
    for doc in (scoped, full):
        assert doc["manifest"]["sections"]["appeals"] == len(doc["appeals"])
        assert doc["manifest"]["sections"]["videos"] == len(doc["videos"])
