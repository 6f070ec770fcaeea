"""The behaviour every ``fyp.models.executors.TrainingExecutor`` must have.

A backend's test module subclasses :class:`TrainingExecutorContract` and provides an
``executor`` fixture and ``executor_kind`` (what the manifests' ``trained_on`` record
names: ``local`` or ``ray``). The deployment is small and real: two regions, users,
videos and events in each, trained with the default parameters.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import pytest

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.models.artifacts import current_version, list_versions, models_dir, read_manifest
from fyp.models.executors import RegionOutcome, TrainingExecutor
from fyp.models.placement import placement_problem
from fyp.regions.deployment import Deployment
from fyp.sovereignty.lineage import LineageVerifier

USERS, VIDEOS, EVENTS = 16, 24, 300


def small_deployment(directory: Path, regions: list[str], store: str | None = None) -> Path:
    """Users homed round-robin, every video in every region, random plays and likes
    (``store``: a store URL with {region}; default SQLite files)."""
    with Deployment.init(directory, regions, store=store) as d:
        catalog = Catalog(d)
        homes = {f"u{n}": regions[n % len(regions)] for n in range(USERS)}
        for user, home in homes.items():
            catalog.create_user(UserIn(user_id=user, home_region=home, birth_year=1990))
        for v in range(VIDEOS):
            catalog.create_video(
                VideoIn(
                    video_id=f"v{v}",
                    creator_id=f"u{v % USERS}",
                    duration_ms=15_000,
                    regions=regions,
                    categories=[f"c{v % 3}"],
                )
            )
        rng = random.Random(3)
        Ingestor(d).ingest(
            [
                {
                    "event_id": f"e{k}",
                    "user_id": f"u{rng.randrange(USERS)}",
                    "video_id": f"v{rng.randrange(VIDEOS)}",
                    "type": rng.choice(["play", "like"]),
                    "watch_ms": rng.choice([2_000, 20_000]),
                }
                for k in range(EVENTS)
            ]
        )
    return directory


def outcomes(
    executor: TrainingExecutor, directory: Path, regions: list[str], keep: int = 3
) -> dict[str, RegionOutcome]:
    return {o.region: o for o in executor.run(directory, regions, keep)}


class TrainingExecutorContract:
    executor_kind: ClassVar[str]

    @pytest.fixture
    def dep(self, tmp_path: Path) -> Path:
        return small_deployment(tmp_path / "dep", ["us", "eu"])

    def test_each_region_trains_and_goes_live_recording_where(
        self, executor: TrainingExecutor, dep: Path
    ) -> None:
        done = outcomes(executor, dep, ["us", "eu"])
        assert set(done) == {"us", "eu"}
        with Deployment.open(dep) as d:
            for region, outcome in done.items():
                assert outcome.error is None and outcome.summary is not None, outcome.error
                region_dir = d.config.region_dir(region)
                assert current_version(region_dir) == outcome.summary["version"]
                manifest = read_manifest(region_dir, outcome.summary["version"])
                assert manifest.region == region
                assert manifest.snapshot.event_count == outcome.summary["events"] > 0
                trained_on = manifest.lineage["trained_on"]
                assert trained_on == outcome.summary["trained_on"]
                assert trained_on["executor"] == self.executor_kind and trained_on["host"]
                assert placement_problem(region, trained_on) is None
            reports = LineageVerifier(d).verify()
        assert reports and all(r.ok for r in reports), [r.problems for r in reports]

    def test_keep_prunes_older_versions(self, executor: TrainingExecutor, dep: Path) -> None:
        outcomes(executor, dep, ["us"])
        again = outcomes(executor, dep, ["us"], keep=1)["us"]
        assert again.summary is not None, again.error
        with Deployment.open(dep) as d:
            assert list_versions(d.config.region_dir("us")) == [again.summary["version"]]

    def test_a_failing_region_is_its_own_outcome_and_the_others_train(
        self, executor: TrainingExecutor, dep: Path
    ) -> None:
        with Deployment.open(dep) as d:
            broken = models_dir(d.config.region_dir("eu"))
        broken.write_text("not a directory")  # eu cannot publish
        done = outcomes(executor, dep, ["eu", "us"])
        assert done["eu"].summary is None and done["eu"].error is not None
        assert "models" in done["eu"].error.message, done["eu"].error.message
        assert done["us"].error is None and done["us"].summary is not None
        with Deployment.open(dep) as d:
            assert current_version(d.config.region_dir("us")) == done["us"].summary["version"]
