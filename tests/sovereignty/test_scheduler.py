"""The serving process meets the erasure deadline itself, in a child process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from erasure_helpers import build

from fyp.config import ErasureConfig
from fyp.regions.deployment import Deployment
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_process import pending_retrains
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.scheduler import ErasureScheduler

ANA = "ana-erase-me"


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with build(tmp_path / "dep", ANA) as d:
        yield d


def test_nothing_pending_means_nothing_runs(dep: Deployment) -> None:
    scheduler = ErasureScheduler(dep.config)
    assert not scheduler.due() and not scheduler.tick() and scheduler.runs == 0


def test_a_retrain_runs_only_once_the_deadline_is_within_half_the_window(
    dep: Deployment,
) -> None:
    receipt = Eraser(dep).erase(ANA)
    assert receipt.retrain_deadline_ms is not None
    scheduler = ErasureScheduler(dep.config)  # 24 h window: due in its last 12 h
    assert not scheduler.due() and not scheduler.tick()
    assert scheduler.due(now_ms=receipt.retrain_deadline_ms - 11 * 3_600_000)


def test_the_scheduler_retrains_in_a_child_process_before_the_deadline(
    dep: Deployment,
) -> None:
    window = ErasureConfig(retrain_within_hours=2 / 3600, check_every_minutes=1)  # 2 s
    dep.config = replace(dep.config, erasure=window)
    Eraser(dep).erase(ANA)
    scheduler = ErasureScheduler(dep.config)
    assert not verify_erasure(dep, ANA).ok  # pending retrain
    time.sleep(1.1)  # within the last half of the window now
    assert scheduler.due() and scheduler.tick() and scheduler.runs == 1
    assert pending_retrains(dep.config.region_dir("us")) == {}
    assert verify_erasure(dep, ANA).ok


def test_check_every_zero_leaves_it_to_cron(dep: Deployment) -> None:
    off = replace(dep.config, erasure=ErasureConfig(check_every_minutes=0))
    scheduler = ErasureScheduler(off)
    scheduler.start()
    assert scheduler._thread is None
