"""Local training (a process per region, or one after the other): the executor contract,
and the CLI's per-region failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts.implementations import implementations
from contracts.training_executor_contract import TrainingExecutorContract
from fyp.cli.app import app
from fyp.models.artifacts import current_version, models_dir
from fyp.models.executors import LocalExecutor, TrainingExecutor
from fyp.regions.deployment import Deployment


def test_every_executor_runs_the_contract() -> None:
    """Each executor has a test module subclassing the contract (Ray's: test_ray_executor)."""
    assert {c.__name__ for c in implementations(TrainingExecutor)} == {
        "LocalExecutor",
        "RayExecutor",
    }


class TestInThisProcess(TrainingExecutorContract):
    executor_kind = "local"

    @pytest.fixture
    def executor(self) -> TrainingExecutor:
        return LocalExecutor(jobs=1)


class TestProcessPerRegion(TrainingExecutorContract):
    executor_kind = "local"

    @pytest.fixture
    def executor(self) -> TrainingExecutor:
        return LocalExecutor(jobs=2)


def test_cli_reports_a_failing_region_and_trains_the_others(tmp_path: Path) -> None:
    from contracts.training_executor_contract import small_deployment

    dep = small_deployment(tmp_path / "dep", ["us", "eu"])
    with Deployment.open(dep) as d:
        models_dir(d.config.region_dir("eu")).write_text("not a directory")
    result = CliRunner().invoke(app, ["train", str(dep), "--jobs", "1"])
    assert result.exit_code == 3, result.output
    assert "error (server_error): region eu:" in result.output
    assert "Traceback" not in result.output
    assert "region us: version" in result.output and "trained 1 region(s)" in result.output
    assert "1 failed" in result.output
    with Deployment.open(dep) as d:
        assert current_version(d.config.region_dir("us")) is not None
