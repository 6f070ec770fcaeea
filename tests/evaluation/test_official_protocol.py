"""The official KuaiRec protocol end to end on the hand-made fixture.

The fixture is tiny (tests/datasets/fixtures/kuairec_official/README.md), so these
tests check structure and facts worked out by hand from its rows, never quality.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.datasets.official import import_kuairec
from fyp.errors import InvalidRequest
from fyp.evaluation.baselines import PEERS
from fyp.evaluation.metrics import dcg
from fyp.evaluation.official_protocol import (
    GRADED,
    graded_gain,
    prepare_official,
    read_test_set,
    run_official_offline,
    small_matrix_path,
)
from fyp.evaluation.offline import Protocol, rank_peer, train_engine
from fyp.regions.deployment import Deployment

FIXTURE = Path(__file__).parents[1] / "datasets" / "fixtures" / "kuairec_official"
runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with Rich's line wrapping undone."""
    return " ".join(output.split())


# small_matrix.csv, by hand: users 1, 4, 5 on videos 10, 11, 12, 15
GAINS = {
    "1": {"10": 2.5, "11": 1.166667, "12": 0.375, "15": 2.5},
    "4": {"10": 2.0, "11": 0.666667, "12": 2.0, "15": 0.75},
    "5": {"10": 0.1, "15": 2.25},
}
POSITIVES = {"1": {"10", "15"}, "4": {"10", "12"}, "5": {"15"}}  # watch_ratio >= 2


@pytest.fixture
def official(tmp_path: Path) -> Iterator[tuple[Protocol, dict[str, dict[str, float]]]]:
    with Deployment.init(tmp_path / "dep", ["global"]) as d:
        import_kuairec(d, FIXTURE, split_protocol=True)
        train_engine(d)
        yield prepare_official(d, log=lambda _m: None)


def test_prepare_reads_the_small_matrix_as_the_test_set(
    official: tuple[Protocol, dict[str, dict[str, float]]],
) -> None:
    protocol, gains = official
    assert protocol.universe == ["10", "11", "12", "15"]
    (region,) = protocol.regions
    assert region.test == POSITIVES
    assert gains == GAINS
    # training = long plays of big minus small: (1,10), (1,11), (1,12) are never in it
    x = region.x.toarray()
    for video in ("10", "11", "12"):
        assert x[region.user_index["1"], protocol.video_index[video]] == 0
    # long plays by hand: 10 <- user 2 (18 s); 11 <- users 0, 2 (whole video);
    # 12 <- users 0, 3; 15 <- nobody
    counts = {v: protocol.train_counts.get(v, 0.0) for v in protocol.universe}
    assert counts == {"10": 1.0, "11": 2.0, "12": 2.0, "15": 0.0}


def test_popular_scores_match_a_hand_computation(
    official: tuple[Protocol, dict[str, dict[str, float]]],
) -> None:
    protocol, gains = official
    lists = rank_peer(protocol, PEERS["popular"], 0)
    assert lists == {u: ["11", "12", "10", "15"] for u in ("1", "4", "5")}
    log2 = math.log2
    binary = {
        "1": (1 / log2(4) + 1 / log2(5)) / (1 + 1 / log2(3)),
        "4": (1 / log2(3) + 1 / log2(4)) / (1 + 1 / log2(3)),
        "5": (1 / log2(5)) / 1,
    }
    graded = {
        u: dcg([GAINS[u].get(v, 0.0) for v in ["11", "12", "10", "15"]])
        / dcg(sorted(GAINS[u].values(), reverse=True))
        for u in GAINS
    }
    # user 1 in full: (1.166667 + 0.375/log2 3 + 2.5/log2 4 + 2.5/log2 5) / ideal
    assert graded["1"] == pytest.approx(
        (1.166667 + 0.375 / log2(3) + 2.5 / 2 + 2.5 / log2(5))
        / (2.5 + 2.5 / log2(3) + 1.166667 / 2 + 0.375 / log2(5))
    )
    out = run_official_offline(protocol, gains, 0, ["popular"], log=lambda _m: None)
    metrics = out["metrics"]["popular"]
    assert metrics["ndcg@10"] == round(sum(binary.values()) / 3, 4)
    assert metrics[GRADED] == round(sum(graded.values()) / 3, 4)
    assert metrics["recall@10"] == 1.0 and metrics["users"] == 3  # 4 videos: all ranked
    assert metrics["coverage@10"] == 1.0


def test_every_method_is_scored(official: tuple[Protocol, dict[str, dict[str, float]]]) -> None:
    protocol, gains = official
    out = run_official_offline(protocol, gains, 0, log=lambda _m: None)
    assert list(out["metrics"]) == ["fyp", *PEERS]
    for metrics in out["metrics"].values():
        assert {"ndcg@10", GRADED, "recall@10", "recall@50", "coverage@10"} <= set(metrics)
        assert metrics["users"] == 3
        assert 0.0 <= metrics[GRADED] <= 1.0
    assert set(out["seconds"]) == set(out["metrics"])


def test_graded_gain_and_a_missing_test_set(tmp_path: Path) -> None:
    assert (graded_gain(0.4), graded_gain(5.0), graded_gain(40.0)) == (0.4, 5.0, 5.0)
    with Deployment.init(tmp_path / "dep", ["global"]) as d:
        import_kuairec(d, FIXTURE)  # without split_protocol: no test set was written
        with pytest.raises(InvalidRequest, match="--split-protocol"):
            prepare_official(d, log=lambda _m: None)
        path = small_matrix_path(d, "global")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("user_id,video_id,ratio\n1,2,3\n")
    with pytest.raises(InvalidRequest, match="expected columns user_id,video_id,watch_ratio"):
        read_test_set(path)


def test_cli_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["eval", "kuairec", "--data", str(FIXTURE), "--out", str(out), "--regions", "us,eu"]
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "kuairec"
    assert list(results["offline"]) == list(results["interactive"]) == ["fyp", *PEERS]
    assert all(GRADED in m for m in results["offline"].values())
    assert results["config"]["regions"] == ["us", "eu"]
    assert results["config"]["test_users"] == 3
    # 3 test users x 4 test videos: sessions are short and bounded by the universe
    for summary in results["interactive"].values():
        assert 1.0 <= summary["length"] <= 4.0
    sessions = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert len(sessions) == 3 * 7  # six methods and the popular_lookalike ablation
    for s in sessions:
        assert s["rewards"] == [int(v in POSITIVES[s["user_id"]]) for v in s["videos"]]
        assert len(set(s["videos"])) == len(s["videos"])
    assert (out / "report.html").is_file()
    assert "ndcg@10_graded" in flat(result.output) and "total wall time" in flat(result.output)

    missing = runner.invoke(
        app, ["eval", "kuairec", "--data", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert missing.exit_code == 2 and "does not exist" in flat(missing.output)
