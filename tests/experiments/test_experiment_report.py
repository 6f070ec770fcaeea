"""``fyp experiments report`` on planted events, against numbers worked out by hand."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats
from typer.testing import CliRunner

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.cli import app
from fyp.errors import InvalidRequest, NotFound
from fyp.events.ingest import Ingestor
from fyp.experiments.assignment import variant_of
from fyp.experiments.exposures import record_exposure
from fyp.experiments.report import report, welch
from fyp.regions.deployment import Deployment

EXPERIMENT = """
[experiments.exp]
start = "2025-01-01T00:00:00Z"
regions = ["us"]
salt = "s"

[experiments.exp.variants.b]
share = 0.5
exploration_share = 0.2
sources = { fresh = 60, trending = 0 }  # tuned stages change nothing of the report
rerank = { creator_decay = 0.3 }
"""
AFTER, BEFORE = "2025-02-01T10:00:00Z", "2024-12-01T10:00:00Z"
EXPOSED_MS = 1_736_899_200_000  # 2025-01-15T00:00:00Z: after the start, before AFTER
runner = CliRunner()


def ids(d: Deployment, variant: str, n: int) -> list[str]:
    experiment = d.config.experiments[0]
    found = (f"user{k}" for k in itertools.count())
    return list(itertools.islice((u for u in found if variant_of(experiment, u) == variant), n))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Control users c1-c3, variant users v1-v2, exposed (v3 acted only before the start
    and was never exposed), in us; videos of 10 s."""
    root = tmp_path_factory.mktemp("report") / "dep"
    Deployment.init(root, ["us", "eu"]).close()
    with (root / "fyp.toml").open("a", encoding="utf-8") as f:
        f.write(EXPERIMENT)
    with Deployment.open(root) as d:
        c1, c2, c3 = ids(d, "control", 3)
        v1, v2, v3 = ids(d, "b", 3)
        names = {"c1": c1, "c2": c2, "c3": c3, "v1": v1, "v2": v2, "v3": v3}
        catalog = Catalog(d)
        for user in names.values():
            catalog.create_user(UserIn(user_id=user, home_region="us", birth_year=1990))
        catalog.create_user(UserIn(user_id="eu1", home_region="eu", birth_year=1990))
        for key in ("c1", "c2", "c3", "v1", "v2"):
            arm = "control" if key.startswith("c") else "b"
            assert record_exposure(d.store("us"), "exp", arm, names[key], EXPOSED_MS)
        for v in range(1, 6):
            catalog.create_video(
                VideoIn(video_id=f"x{v}", creator_id=c1, duration_ms=10_000, regions=["us", "eu"])
            )
        planted = [
            (c1, "x1", "play", 10_000, AFTER),  # whole video: long play, ratio 1
            (c1, "x2", "play", 1_000, AFTER),  # short play: a skip, ratio 0.1
            (c1, "x1", "like", None, AFTER),
            (c2, "x3", "play", 5_000, AFTER),  # neither long nor short, ratio 0.5
            (c3, "x4", "skip", None, AFTER),
            (c3, "x4", "not_interested", None, AFTER),
            (c3, "x5", "like", None, BEFORE),  # before the start: not counted
            (v1, "x1", "play", 20_000, AFTER),  # long play, ratio 2
            (v1, "x1", "share", None, AFTER),
            (v1, "x1", "follow", None, AFTER),
            (v2, "x2", "play", 10_000, AFTER),
            (v2, "x3", "play", 10_000, AFTER),
            (v2, "x2", "like", None, AFTER),
            (v3, "x1", "like", None, BEFORE),
            ("eu1", "x1", "like", None, AFTER),  # eu runs no experiment
        ]
        events: list[dict[str, Any]] = [
            {"event_id": f"p{k}", "user_id": u, "video_id": v, "type": t, "ts": ts}
            | ({} if w is None else {"watch_ms": w})
            for k, (u, v, t, w, ts) in enumerate(planted)
        ]
        Ingestor(d).ingest(events)
    return root, names


def metrics(found: dict[str, Any], variant: str) -> dict[str, Any]:
    (region,) = found["regions"]
    (arm,) = [a for a in region["arms"] if a["variant"] == variant]
    return arm | {"m": arm["metrics"]}


def test_per_arm_means_by_hand(planted: tuple[Path, dict[str, str]]) -> None:
    root, names = planted
    with Deployment.open(root) as d:
        found = report(d, "exp")
    assert found["experiment"] == "exp" and found["variants"] == {"b": 0.5}
    assert [r["region"] for r in found["regions"]] == ["us"]
    control, b = metrics(found, "control"), metrics(found, "b")
    assert control["users"] == 3 and b["users"] == 2  # v3: never exposed
    means = {k: v["mean"] for k, v in control["m"].items()}
    assert means == pytest.approx(
        {
            "plays": 1.0,  # 2, 1, 0
            "long_play_rate": 0.5 / 3,  # 1/2, 0, 0 (of the videos each acted on)
            "like_rate": 0.5 / 3,
            "share_rate": 0.0,
            "follow_rate": 0.0,
            "skip_rate": 0.5,  # 1/2 (a short play), 0, 1 (a skip event)
            "not_interested_rate": 1 / 3,
            "watch_ratio": 0.525,  # (0.55 + 0.5) / 2: c3 has no watch time
        }
    )
    assert control["m"]["watch_ratio"]["users"] == 2
    means = {k: v["mean"] for k, v in b["m"].items()}
    assert means == pytest.approx(
        {
            "plays": 1.5,
            "long_play_rate": 1.0,
            "like_rate": 0.25,
            "share_rate": 0.5,
            "follow_rate": 0.5,
            "skip_rate": 0.0,
            "not_interested_rate": 0.0,
            "watch_ratio": 1.5,
        }
    )
    assert "difference" not in control["m"]["plays"]
    text = json.dumps(found)  # aggregates only: no user id leaves the region
    assert not [u for u in names.values() if f'"{u}"' in text]


def test_welch_by_hand(planted: tuple[Path, dict[str, str]]) -> None:
    root, _ = planted
    with Deployment.open(root) as d:
        b = metrics(report(d, "exp"), "b")["m"]
    # long_play_rate: variant [1, 1] (no variance), control [1/2, 0, 0] (variance 1/12):
    # se = sqrt(1/12 / 3) = 1/6, t = (1 - 1/6) / (1/6) = 5, Welch df = 2 exactly;
    # P(|T_2| > 5) = 1 - 5 / sqrt(27), t_0.975,2 = 4.302653 (a t table)
    long_play = b["long_play_rate"]
    assert long_play["difference"] == pytest.approx(5 / 6)
    assert long_play["p_value"] == pytest.approx(1 - 5 / math.sqrt(27))
    assert long_play["ci95"] == pytest.approx([5 / 6 - 4.302653 / 6, 5 / 6 + 4.302653 / 6])
    # plays: variant [1, 2] (var 1/2), control [2, 1, 0] (var 1): se^2 = 1/4 + 1/3,
    # df = (7/12)^2 / ((1/4)^2 + (1/3)^2 / 2) = 2.882353
    plays = b["plays"]
    se, df = math.sqrt(7 / 12), (7 / 12) ** 2 / (1 / 16 + 1 / 18)
    assert df == pytest.approx(2.882353, abs=1e-6)
    assert plays["difference"] == pytest.approx(0.5)
    assert plays["p_value"] == pytest.approx(2 * stats.t.sf(0.5 / se, df))
    half = stats.t.ppf(0.975, df) * se
    assert plays["ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    # share_rate: control all 0, variant [1, 0]: df = 1
    assert b["share_rate"]["p_value"] == pytest.approx(2 * stats.t.sf(1.0, 1))


def test_undefined_statistics_are_null() -> None:
    assert welch([1.0], [0.0, 1.0]) == {"difference": 0.5, "ci95": None, "p_value": None}
    assert welch([1.0, 1.0], [1.0, 1.0]) == {"difference": 0.0, "ci95": None, "p_value": None}
    assert welch([], [1.0]) == {"difference": None, "ci95": None, "p_value": None}


def test_errors(planted: tuple[Path, dict[str, str]]) -> None:
    root, _ = planted
    with Deployment.open(root) as d:
        with pytest.raises(NotFound, match=r"no experiment named 'nope' in fyp.toml \(declared"):
            report(d, "nope")
        with pytest.raises(InvalidRequest, match="does not run in region 'eu'"):
            report(d, "exp", "eu")
        assert [r["region"] for r in report(d, "exp", "us")["regions"]] == ["us"]


def test_cli_json_table_and_errors(planted: tuple[Path, dict[str, str]]) -> None:
    root, _ = planted
    out = runner.invoke(app, ["experiments", "report", str(root), "exp", "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.output)
    assert metrics(found, "b")["m"]["long_play_rate"]["difference"] == pytest.approx(5 / 6)
    table = runner.invoke(app, ["experiments", "report", str(root), "exp", "--region", "us"])
    assert table.exit_code == 0, table.output
    assert "region us" in table.output and "long_play_rate" in table.output
    # long_play_rate: the difference, its interval and the p-value (cells may wrap)
    assert all(x in table.output for x in ("+0.8333", "[+0.1162,", "+1.5504]", "0.0377"))
    unknown = runner.invoke(app, ["experiments", "report", str(root), "nope"])
    assert unknown.exit_code == 2 and "no experiment named 'nope'" in unknown.output
    assert "Traceback" not in unknown.output
    elsewhere = runner.invoke(app, ["experiments", "report", str(root), "exp", "--region", "eu"])
    assert elsewhere.exit_code == 2 and "does not run in region 'eu'" in elsewhere.output
    missing = runner.invoke(app, ["experiments", "report", str(root), "exp", "--region", "mars"])
    assert missing.exit_code == 2
