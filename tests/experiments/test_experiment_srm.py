"""The report's sample-ratio check and its window (first exposure to ``end``), on planted
exposures and events, against numbers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.cli import app
from fyp.events.ingest import Ingestor
from fyp.experiments.exposures import record_exposure
from fyp.experiments.report import SRM_ALPHA, report, srm
from fyp.regions.deployment import Deployment

THREE = """
[experiments.three]
start = "2025-01-01T00:00:00Z"
end = "2025-03-01T00:00:00Z"

[experiments.three.variants.a]
share = 0.25

[experiments.three.variants.b]
share = 0.25
"""
JAN_15, MAR_2 = 1_736_899_200_000, 1_740_873_600_000  # 2025-01-15, 2025-03-02 (UTC)
SPLITS = {"us": {"control": 50, "a": 30, "b": 20}, "eu": {"control": 80, "a": 10, "b": 10}}
runner = CliRunner()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exposed users per arm as ``SPLITS`` says, in us and eu; in us also users whose
    exposure or events fall outside the window."""
    root = tmp_path_factory.mktemp("srm") / "dep"
    Deployment.init(root, ["us", "eu"]).close()
    with (root / "fyp.toml").open("a", encoding="utf-8") as f:
        f.write(THREE)
    with Deployment.open(root) as d:
        catalog = Catalog(d)
        for region, split in SPLITS.items():
            for arm, n in split.items():
                for k in range(n):
                    user = f"{region}-{arm}-{k}"
                    catalog.create_user(UserIn(user_id=user, home_region=region))
                    assert record_exposure(d.store(region), "three", arm, user, JAN_15)
        catalog.create_user(UserIn(user_id="late", home_region="us"))
        record_exposure(d.store("us"), "three", "a", "late", MAR_2)  # after the end
        catalog.create_video(
            VideoIn(video_id="x", creator_id="late", duration_ms=10_000, regions=["us", "eu"])
        )
        events: list[dict[str, Any]] = [
            # us-a-0: a play before her exposure, a play in the window, a like after the end
            {"user_id": "us-a-0", "type": "play", "watch_ms": 10_000, "ts": "2025-01-10"},
            {"user_id": "us-a-0", "type": "play", "watch_ms": 5_000, "ts": "2025-02-01"},
            {"user_id": "us-a-0", "type": "like", "ts": "2025-03-01T00:00:00Z"},
            {"user_id": "us-a-1", "type": "like", "ts": "2025-02-01"},
            {"user_id": "late", "type": "like", "ts": "2025-03-03"},
        ]
        Ingestor(d).ingest(
            [{"event_id": f"e{k}", "video_id": "x"} | e for k, e in enumerate(events)]
        )
    return root


def region(found: dict[str, Any], name: str) -> dict[str, Any]:
    (out,) = [r for r in found["regions"] if r["region"] == name]
    return out


def test_srm_by_hand(planted: Path) -> None:
    with Deployment.open(planted) as d:
        found = report(d, "three")
    assert found["end"] == "2025-03-01T00:00:00+00:00"
    us, eu = region(found, "us")["srm"], region(found, "eu")["srm"]
    # us: 100 users, shares 1/2, 1/4, 1/4: expected 50, 25, 25;
    # chi2 = 0^2/50 + 5^2/25 + 5^2/25 = 2, two degrees of freedom: p = exp(-2/2)
    assert us["observed"] == {"control": 50, "a": 30, "b": 20}
    assert us["expected"] == {"control": 50.0, "a": 25.0, "b": 25.0}
    assert us["chi2"] == pytest.approx(2.0)
    assert us["p_value"] == pytest.approx(math.exp(-1.0))
    assert not us["mismatch"] and us["warning"] is None
    # eu: 80, 10, 10 against 50, 25, 25: chi2 = 30^2/50 + 15^2/25 + 15^2/25 = 18 + 9 + 9
    assert eu["chi2"] == pytest.approx(36.0)
    assert eu["p_value"] == pytest.approx(math.exp(-18.0))
    assert eu["p_value"] < SRM_ALPHA and eu["mismatch"]
    assert "sample-ratio mismatch" in eu["warning"]


def test_the_window_is_from_the_first_exposure_to_the_end(planted: Path) -> None:
    with Deployment.open(planted) as d:
        us = region(report(d, "three"), "us")
    a = next(arm for arm in us["arms"] if arm["variant"] == "a")
    assert a["users"] == 30  # "late" was exposed after the end: not counted
    m = a["metrics"]
    # every exposed user counts in plays (0 without events): us-a-0 has one play in
    # the window (the earlier one was before her exposure)
    assert m["plays"]["users"] == 30 and m["plays"]["mean"] == pytest.approx(1 / 30)
    # rates only over users with videos in the window: us-a-0 (a play), us-a-1 (a like);
    # us-a-0's like came at the end, outside
    assert m["like_rate"]["users"] == 2 and m["like_rate"]["mean"] == pytest.approx(0.5)
    assert m["watch_ratio"]["users"] == 1 and m["watch_ratio"]["mean"] == pytest.approx(0.5)


def test_srm_edge_cases() -> None:
    empty = srm({"control": 0, "b": 0}, {"control": 0.5, "b": 0.5})
    assert empty["p_value"] is None and not empty["mismatch"]
    # a variant removed from the config still holds users: a mismatch outright
    removed = srm({"control": 10, "gone": 3}, {"control": 1.0})
    assert removed["p_value"] == 0.0 and removed["chi2"] is None and removed["mismatch"]
    assert removed["expected"] == {"control": 13.0, "gone": 0.0}
    # every user in the one variant: nothing to test
    assert srm({"control": 0, "b": 7}, {"control": 0.0, "b": 1.0})["p_value"] is None


def test_the_cli_prints_the_check_and_warns(planted: Path) -> None:
    out = runner.invoke(app, ["experiments", "report", str(planted), "three"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "until 2025-03-01T00:00:00+00:00" in text
    assert "sample ratio: control 50 (expected 50.0), a 30 (expected 25.0)" in text
    assert "chi2 = 2.0000, p = 0.3679" in text
    assert "chi2 = 36.0000, p = 1.523e-08" in text
    assert text.count("WARNING: sample-ratio mismatch") == 1  # eu's only
