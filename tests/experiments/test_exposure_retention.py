"""A serving process's exposure log under a region's retention limit: an exposure past
the limit is deleted by the expiry, and the user's next page records it afresh even
though the process remembers the user (it would otherwise wait for a restart)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.config import DAY_MS
from fyp.experiments import exposures as module
from fyp.experiments.exposures import RECHECK_MS, ExposureLog, exposed_at
from fyp.regions.deployment import Deployment
from fyp.sovereignty.retention import expire_region

LIMIT_DAYS = 30


def deployment(root: Path) -> Path:
    with Deployment.init(root, ["us", "eu"]) as d:
        Catalog(d).create_user(UserIn(user_id="u", home_region="us"))
        Catalog(d).create_user(UserIn(user_id="e", home_region="eu"))
    toml = root / "fyp.toml"
    limit = f"\n[regions.us.policy.retention]\nevents_days = {LIMIT_DAYS}\n"
    toml.write_text(toml.read_text("utf-8") + limit, "utf-8")
    return root


def test_an_expired_exposure_is_recorded_again_on_the_next_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = module.exposed_at
    monkeypatch.setattr(module, "exposed_at", lambda s, x, u: reads.append(u) or real(s, x, u))
    now = time.time_ns() // 1_000_000
    first = now - (LIMIT_DAYS + 10) * DAY_MS
    with Deployment.open(deployment(tmp_path / "d")) as d:
        log, store = ExposureLog(d), d.store("us")
        log.expose("us", "exp", "A", "u", first)
        store.flush_served()
        assert exposed_at(store, "exp", "u") == first
        log.expose("us", "exp", "A", "u", first + DAY_MS)  # known, within the limit
        assert reads == []
        # past the limit, not deleted yet: the row is read, nothing is written
        log.expose("us", "exp", "B", "u", now)
        log.expose("us", "exp", "B", "u", now + RECHECK_MS - 1)  # not again within a minute
        assert reads == ["u"] and exposed_at(store, "exp", "u") == first
        assert expire_region(d, "us").tables["experiment_exposures"] == 1
        log.expose("us", "exp", "B", "u", now + RECHECK_MS)
        store.flush_served()
        assert reads == ["u", "u"]
        assert exposed_at(store, "exp", "u") == now + RECHECK_MS  # its arm: the one serving
        assert module.exposures(store, "exp")["u"].variant == "B"
        # eu keeps exposures until erasure: a known user is never read again
        log.expose("eu", "exp", "A", "e", first)
        log.expose("eu", "exp", "A", "e", now + 1000 * DAY_MS)
        assert reads == ["u", "u"]
