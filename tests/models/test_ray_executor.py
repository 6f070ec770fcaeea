"""Training on Ray, on a real single-node Ray runtime started once for this module (in
this process, labelled fyp-region:us and fyp-region:eu, not ap): the executor contract,
placement refused for an unlabelled region, the manifest's record of the node, lineage
over a real and a tampered record, and the CLI (in process and as its own Ray driver)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contracts.training_executor_contract import (
    TrainingExecutorContract,
    outcomes,
    small_deployment,
)
from fyp.cli.app import app
from fyp.errors import ClusterError, PlacementRefused
from fyp.models.artifacts import MANIFEST, current_version, list_versions, models_dir
from fyp.models.executors import TrainingExecutor
from fyp.models.ray_executor import RayExecutor, node_placement, train_on_node
from fyp.regions.deployment import Deployment
from fyp.sovereignty.lineage import LineageVerifier
from storage.postgres_server import SERVER, drop_schemas, schema_url

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
LABELS = {"fyp-region:us": 1.0, "fyp-region:eu": 1.0}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The GCS address of a Ray runtime this module starts and stops."""
    ray.init(
        num_cpus=2,
        resources=LABELS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=100 * 1024 * 1024,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """us and eu, which the cluster may train, and ap, which no node is labelled for."""
    return small_deployment(tmp_path / "dep3", ["us", "eu", "ap"])


class TestRayExecutor(TrainingExecutorContract):
    executor_kind = "ray"

    @pytest.fixture
    def executor(self, cluster: str) -> TrainingExecutor:
        return RayExecutor(cluster)


def test_the_manifest_records_the_node_it_was_trained_on(cluster: str, three: Path) -> None:
    summary = outcomes(RayExecutor(cluster), three, ["us"])["us"].summary
    assert summary is not None
    assert summary["trained_on"] == {
        "executor": "ray",
        "host": socket.gethostname(),
        "ray_node_id": ray.get_runtime_context().get_node_id(),  # the one node
        "ray_node_labels": ["fyp-region:eu", "fyp-region:us"],
        "ray_assigned": {"fyp-region:us": pytest.approx(0.001)},
        "ray_version": ray.__version__,
    }


def test_a_region_no_node_is_labelled_for_is_refused_and_nothing_published(
    cluster: str, three: Path
) -> None:
    done = outcomes(RayExecutor(cluster), three, ["us", "ap", "eu"])
    refused = done["ap"].error
    assert isinstance(refused, PlacementRefused) and done["ap"].summary is None
    assert "no live Ray node is labelled fyp-region:ap" in refused.message
    assert "fyp-region:eu, fyp-region:us" in refused.message  # what the cluster has
    assert done["us"].summary is not None and done["eu"].summary is not None
    with Deployment.open(three) as d:
        assert list_versions(d.config.region_dir("ap")) == []
        assert current_version(d.config.region_dir("ap")) is None


def test_the_task_checks_its_own_node_before_reading_anything(cluster: str, tmp_path: Path) -> None:
    """Ray cannot place a task asking for fyp-region:ap here; one that does not ask (so
    lands here) refuses itself, and a node that does not see the deployment says so."""
    with pytest.raises(PlacementRefused, match="not labelled fyp-region:ap"):
        ray.get(ray.remote(node_placement).remote("ap"))
    task = ray.remote(train_on_node).options(resources={"fyp-region:us": 0.001})
    with pytest.raises(ClusterError, match="does not see the deployment"):
        ray.get(task.remote(str(tmp_path / "not-mounted"), "us", 3))


def test_lineage_passes_the_real_record_and_catches_a_tampered_label(
    cluster: str, three: Path
) -> None:
    summary = outcomes(RayExecutor(cluster), three, ["us"])["us"].summary
    assert summary is not None
    with Deployment.open(three) as d:
        assert all(r.ok for r in LineageVerifier(d).verify(["us"]))
        path = models_dir(d.config.region_dir("us")) / summary["version"] / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["lineage"]["trained_on"]["ray_node_labels"] = ["fyp-region:eu"]
    path.write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["lineage", "verify", str(three), "--region", "us"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "which is not labelled fyp-region:us (its labels: fyp-region:eu)" in text
    manifest["lineage"]["trained_on"]["ray_node_labels"] = ["fyp-region:us"]
    manifest["lineage"]["trained_on"]["ray_assigned"] = {}
    path.write_text(json.dumps(manifest))
    with Deployment.open(three) as d:
        (report,) = LineageVerifier(d).verify(["us"])
    assert report.problems == [
        f"trained on Ray node {summary['trained_on']['ray_node_id']} (host "
        f"{socket.gethostname()}), but Ray did not assign fyp-region:us to the training task"
    ]


def test_cli_refuses_the_unlabelled_region_with_exit_3(cluster: str, three: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(three), "--ray", cluster])
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    refused = "error (placement_refused): region ap: no live Ray node is labelled fyp-region:ap"
    assert refused in text
    assert "Traceback" not in text and "trained 2 region(s)" in text and "1 failed" in text
    assert text.count("on Ray node") == 2


def test_the_training_setting_sends_fyp_train_to_ray(cluster: str, three: Path) -> None:
    config = three / "fyp.toml"
    text = config.read_text()
    assert 'ray = ""' in text  # fyp init writes the setting, empty
    config.write_text(text.replace('ray = ""', f'ray = "{cluster}"'))
    result = CliRunner().invoke(app, ["train", str(three), "--region", "ap"])
    assert result.exit_code == 3 and "placement_refused" in result.output  # not trained here
    local = CliRunner().invoke(app, ["train", str(three), "--region", "ap", "--ray", ""])
    assert local.exit_code == 0, local.output  # an empty --ray: local processes


def fyp_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fyp", *args], capture_output=True, text=True, timeout=300
    )


def test_fyp_train_connects_to_the_cluster_as_its_own_driver(cluster: str, tmp_path: Path) -> None:
    dep = small_deployment(tmp_path / "dep", ["us", "eu"])
    done = fyp_cli("train", str(dep), "--ray", cluster)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("on Ray node") == 2 and "trained 2 region(s)" in done.stdout
    unreachable = fyp_cli("train", str(dep), "--ray", "127.0.0.1:1")
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith("error (cluster_error): cannot reach the Ray cluster")
    assert "Traceback" not in unreachable.stderr


@pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")
def test_regions_on_postgresql_train_on_ray(cluster: str, tmp_path: Path) -> None:
    """The task reads the region's store by its URL: here a PostgreSQL schema each."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    try:
        store = schema_url(prefix + "_{region}")
        dep = small_deployment(tmp_path / "pg", ["us", "eu"], store=store)
        done = outcomes(RayExecutor(cluster), dep, ["us", "eu"])
        assert all(o.summary is not None for o in done.values()), [o.error for o in done.values()]
        with Deployment.open(dep) as d:
            reports = LineageVerifier(d).verify()
        assert len(reports) == 2 and all(r.ok and r.snapshot == "verified" for r in reports)
        assert {r.trained_on["executor"] for r in reports if r.trained_on} == {"ray"}
    finally:
        drop_schemas(prefix)
