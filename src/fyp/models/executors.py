"""Where ``fyp train`` runs each region's training: local processes or a Ray cluster.

One base, :class:`TrainingExecutor`, with one contract (``tests/contracts/
training_executor_contract.py``): :class:`LocalExecutor` (a process per region on this
host) and ``fyp.models.ray_executor.RayExecutor`` (a Ray task per region, only on a node
labelled for it). :func:`executor_for` chooses from the Ray address (``--ray`` or
``[training] ray``): none means local.

Every executor runs the same step for a region, :func:`train_region_summary`, where the
region's data is processed: forget the served pages beyond the seen window, train from
the region's store, rank feeds ahead, publish (``--keep``), strip users erased
meanwhile. Each region's outcome is its own: one that fails is reported as that region's
error and the others still train.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fyp.errors import FypError, ServerError


@dataclass
class RegionOutcome:
    """What training one region came to: its summary, or the error that stopped it."""

    region: str
    summary: dict[str, Any] | None = None
    error: FypError | None = None


def as_fyp_error(exc: BaseException) -> FypError:
    """A region's failure as one printable error (an unexpected one keeps its type)."""
    if isinstance(exc, FypError):
        return exc
    return ServerError(f"{type(exc).__name__}: {exc}")


def train_region_summary(
    directory: str, region: str, keep: int, trained_on: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train one region, rank its users' feeds ahead, go live; a summary to print. Runs
    where the executor placed it (a worker process, a Ray node): regions share nothing."""
    from threadpoolctl import threadpool_limits

    from fyp.feed.ahead import ranks_ahead
    from fyp.models.training import train_and_publish
    from fyp.regions.consent import consent_policy
    from fyp.regions.deployment import Deployment
    from fyp.sovereignty.erasure_process import strip_erased
    from fyp.sovereignty.retention import expire_region

    # one thread per region process: threaded BLAS on these small products only spins
    with threadpool_limits(1, "blas"), Deployment.open(directory) as d:
        store = d.store(region)
        window_start = time.time_ns() // 1_000_000 - d.config.feed.seen_window_ms
        # the store's own pages (with the served log on Redis: those left from before it
        # moved there; Redis expires its own), as a serving process's maintenance does
        forgotten = store.forget_served_before(window_start)
        # and the events past the region's retention limit: a model never learns from one
        expired = expire_region(d, region)
        m = train_and_publish(
            store,
            d.config.region_dir(region),
            keep=keep,
            augment=ranks_ahead(d, region),
            trained_on=trained_on,
            consent=consent_policy(d.config, region),
        )
        strip_erased(d, region)  # a user erased while training ran leaves the new version
    return {
        "region": region,
        "version": m.version,
        "events": m.snapshot.event_count,
        "seq": (m.snapshot.min_seq, m.snapshot.max_seq),
        "users": m.metrics["users_learned"],
        "excluded": m.lineage["consent"]["excluded_users"],  # no consent to model training
        "videos": m.metrics["videos"],
        "train_seconds": m.metrics["train_seconds"],
        "ahead_seconds": m.metrics.get("augment_seconds", 0),
        "forgotten": forgotten,
        "expired": expired.events,
        "trained_on": m.lineage["trained_on"],
    }


class TrainingExecutor(ABC):
    """Runs :func:`train_region_summary` for each region somewhere allowed."""

    @abstractmethod
    def run(self, directory: Path, regions: list[str], keep: int) -> Iterator[RegionOutcome]:
        """Train each region; yield each one's outcome as it ends (in any order). A
        region's failure is its outcome, never an exception that stops the others."""


class LocalExecutor(TrainingExecutor):
    """Regions train on this host, in parallel, a process each (``jobs`` at most; 0:
    one per CPU); with one job, one after the other in this process."""

    def __init__(self, jobs: int = 0) -> None:
        self.jobs = jobs

    def run(self, directory: Path, regions: list[str], keep: int) -> Iterator[RegionOutcome]:
        where = str(directory.resolve())
        workers = min(len(regions), self.jobs or os.cpu_count() or 1)
        if workers <= 1:
            for region in regions:
                try:
                    yield RegionOutcome(region, train_region_summary(where, region, keep))
                except Exception as exc:
                    yield RegionOutcome(region, error=as_fyp_error(exc))
            return
        spawn = multiprocessing.get_context("spawn")  # no SQLite handle crosses a fork
        with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            futures = {pool.submit(train_region_summary, where, r, keep): r for r in regions}
            for future in as_completed(futures):
                try:
                    yield RegionOutcome(futures[future], future.result())
                except Exception as exc:  # a worker that died (BrokenProcessPool) too
                    yield RegionOutcome(futures[future], error=as_fyp_error(exc))


def executor_for(ray_address: str | None, jobs: int = 0) -> TrainingExecutor:
    """Ray when an address is given (``--ray`` or ``[training] ray``), else local."""
    if ray_address:
        from fyp.models.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    return LocalExecutor(jobs)
