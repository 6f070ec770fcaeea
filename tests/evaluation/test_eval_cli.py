"""``fyp eval kuairec-ear`` through the real Typer app, and the results.json schema.

A fresh clone has no KuaiRec-EAR data but the bundled sample, which has its layout:
the test builds a tiny copy of it (every train/valid row, the test rows of 25 users).
The run on the real data (../shared/data) is marked realdata and skips without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.datasets.demo import sample_dir
from fyp.datasets.kuairec import SIDE_INFO_FILES
from fyp.evaluation.run import MARKER
from fyp.regions.deployment import Deployment

runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with Rich's line wrapping undone."""
    return " ".join(output.split())


METHODS = ["fyp", "random", "popular", "als", "bpr", "ease"]
OFFLINE_KEYS = {
    "ndcg@10",
    "recall@10",
    "recall@50",
    "recall@50_of_all",
    "coverage@10",
    "diversity@10",
    "novelty@10",
}
INTERACTIVE_KEYS = {"reward", "length", "reward_per_step", "top_category_share"}


def tiny_sample(target: Path, test_users: int = 25) -> Path:
    """A KuaiRec-EAR-layout folder cut from the bundled sample."""
    target.mkdir(parents=True)
    source = sample_dir()
    for name in SIDE_INFO_FILES:
        shutil.copy(source / name, target / name)
    header, *rows = (source / "interactions.csv").read_text(encoding="utf-8").splitlines()
    keep: list[str] = []
    for row in rows:
        split, user, _ = row.split(",")
        if split == "test" and user not in keep and len(keep) < test_users:
            keep.append(user)
    lines = [r for r in rows if not r.startswith("test,") or r.split(",")[1] in keep]
    (target / "interactions.csv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return target


def check_schema(results: dict[str, Any], protocol: str, interactive: bool) -> None:
    """results.json: exactly these top-level keys, every method, the promised metrics."""
    assert set(results) == {
        "protocol",
        "offline",
        "interactive",
        "interactive_ablations",
        "uncertainty",
        "seconds",
        "machine",
        "config",
    }
    check_uncertainty(results, interactive)
    assert results["protocol"] == protocol
    assert list(results["offline"]) == METHODS
    for metrics in results["offline"].values():
        assert set(metrics) >= OFFLINE_KEYS
        assert all(isinstance(metrics[k], float | int) for k in OFFLINE_KEYS)
    if interactive:
        assert list(results["interactive"]) == METHODS
        for summary in results["interactive"].values():
            assert set(summary) == INTERACTIVE_KEYS
            assert all(isinstance(v, float) for v in summary.values())
            assert 1.0 <= summary["length"] <= 30.0
            assert 0.0 <= summary["reward_per_step"] <= 1.0
        assert list(results["interactive_ablations"]) == ["popular_lookalike"]
        assert set(results["interactive_ablations"]["popular_lookalike"]) == INTERACTIVE_KEYS
    else:
        assert results["interactive"] == results["interactive_ablations"] == {}
    assert {"seed", "regions", "users"} <= set(results["config"])
    assert {"import", "train", "offline", "total"} <= set(results["seconds"])
    assert {"cpu", "cores", "python"} <= set(results["machine"])


def check_uncertainty(results: dict[str, Any], interactive: bool) -> None:
    """Every figure that is a mean over users has an interval around the very figure
    results.json reports, and fyp is compared with every peer on each of them."""
    u = results["uncertainty"]
    assert "bootstrap" in u["method"]
    kinds = [("offline", results["offline"])]
    if interactive:
        kinds.append(
            ("interactive", {**results["interactive"], **results["interactive_ablations"]})
        )
    else:
        assert u["interactive"] == {"intervals": {}, "fyp_vs": {}}
    for kind, reported in kinds:
        intervals, versus = u[kind]["intervals"], u[kind]["fyp_vs"]
        assert set(intervals) == set(reported)
        assert set(versus) == set(reported) - {"fyp"}
        for method, figures in intervals.items():
            assert "coverage@10" not in figures and "top_category_share" not in figures
            for name, f in figures.items():
                assert f["mean"] == pytest.approx(reported[method][name], abs=1e-4)
                low, high = f["ci95"]
                assert low - 1e-4 <= f["mean"] <= high + 1e-4
        for peer, figures in versus.items():
            assert set(figures) == set(intervals["fyp"])
            for name, f in figures.items():
                diff = intervals["fyp"][name]["mean"] - intervals[peer][name]["mean"]
                assert f["diff"] == pytest.approx(diff, abs=2e-4)
                assert f["p"] is None or 0.0 <= f["p"] <= 1.0


def test_eval_kuairec_ear_on_a_sample_cut(tmp_path: Path) -> None:
    data = tiny_sample(tmp_path / "data")
    out = tmp_path / "out"
    args = ["eval", "kuairec-ear", "--data", str(data), "--out", str(out)]
    result = runner.invoke(app, [*args, "--users", "12", "--seed", "1"])
    assert result.exit_code == 0, result.output
    for stage in ("[import]", "[train]", "[offline]", "[interactive]", "total wall time"):
        assert stage in result.output
    assert "interactive (kuairec-ear)" in flat(result.output)  # the Rich table

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    check_schema(results, "kuairec-ear", interactive=True)
    assert results["config"]["seed"] == 1
    assert results["config"]["regions"] == ["global"]
    assert results["config"]["users"] == results["config"]["test_users"] == 12
    assert all(m["users"] == 12 for m in results["offline"].values())
    details = json.loads((out / "interactive.json").read_text(encoding="utf-8"))["methods"]
    assert all(d["repeats"] == 0 and d["users"] == 12 for d in details.values())
    sessions = (out / "sessions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(sessions) == 12 * 7  # six methods and the popular_lookalike ablation
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 3
    assert "http://" not in page and "https://" not in page
    assert (out / "deployment" / MARKER).is_file()

    # a second run replaces the evaluation's own deployment; offline only
    again = runner.invoke(app, [*args, "--skip-interactive", "--regions", "us,eu"])
    assert again.exit_code == 0, again.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    check_schema(results, "kuairec-ear", interactive=False)
    assert results["config"]["regions"] == ["us", "eu"]
    assert results["config"]["test_users"] == 25
    assert (out / "report.html").read_text(encoding="utf-8").count("data:image/png") == 1

    # the engine's lists are repeatable: exploration draws from the seed's session
    from fyp.evaluation.offline import prepare, rank_engine
    from fyp.feed.service import FeedService
    from fyp.regions.deployment import Deployment

    with Deployment.open(out / "deployment") as d:
        protocol = prepare(d, log=lambda _: None)
        first = rank_engine(protocol, FeedService(d), seed=3)
        assert rank_engine(protocol, FeedService(d), seed=3) == first
        assert len(first) == 25 and all(len(v) == len(set(v)) for v in first.values())


def test_eval_refuses_bad_input_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    missing = runner.invoke(
        app, ["eval", "kuairec-ear", "--data", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert missing.exit_code == 2 and "does not exist" in flat(missing.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["eval", "kuairec-ear", "--data", str(empty), "--out", str(out)])
    assert result.exit_code == 2 and "interactions.csv" in flat(result.output)
    bad = runner.invoke(
        app,
        ["eval", "kuairec-ear", "--data", str(sample_dir()), "--out", str(out), "--regions", "US"],
    )
    assert bad.exit_code == 2 and "invalid regions" in flat(bad.output)
    assert not out.exists()

    # someone's real deployment where the evaluation would build its own: untouched
    (out / "deployment").mkdir(parents=True)
    (out / "deployment" / "fyp.toml").write_text("# not an evaluation deployment\n")
    refused = runner.invoke(
        app, ["eval", "kuairec-ear", "--data", str(sample_dir()), "--out", str(out)]
    )
    assert refused.exit_code == 2 and "refusing to overwrite" in flat(refused.output)
    assert (out / "deployment" / "fyp.toml").read_text() == "# not an evaluation deployment\n"


def test_an_out_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, deployment: Deployment
) -> None:
    """--out at an existing file or under one was a traceback (FileExistsError,
    NotADirectoryError) from the mkdir."""
    (tmp_path / "file").write_text("x")
    root = str(deployment.config.root)
    for out, said in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "x", "cannot be")):
        for args in (
            ["eval", "kuairec-ear", "--data", str(sample_dir()), "--skip-interactive"],
            ["eval", "deployment", root, "--region", "us", "--peers", "popular"],
        ):
            result = runner.invoke(app, [*args, "--out", str(out)])
            assert result.exit_code == 2, result.output
            assert f"--out {out} {said}" in flat(result.output), result.output
            assert "[deployment] started" not in result.output  # before the run
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.realdata
@pytest.mark.slow
def test_eval_on_the_real_data(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["eval", "kuairec-ear", "--data", str(shared_data), "--out", str(out), "--users", "50"]
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    check_schema(results, "kuairec-ear", interactive=True)
    assert results["config"]["test_users"] == 50
    assert results["config"]["test_videos"] == 3_272
    offline, interactive = results["offline"], results["interactive"]
    # weak sanity on real data: chance is chance (random ~4.7 % positives per video)
    assert offline["popular"]["ndcg@10"] > offline["random"]["ndcg@10"]
    assert interactive["fyp"]["reward"] > interactive["random"]["reward"]
    assert 0.0 < interactive["random"]["reward_per_step"] < 0.15
