"""Experiment exposures under the sovereignty promises: a move leaves the old region's
behind, a backup and restore carry them (and re-erase those erased since), and the
residency scan and the erasure's verifier find one where it must not be (rows planted
behind the store's back, in SQLite files)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from move_helpers import MOVER, allow_moves, plant_mover
from region_helpers import built, copy_of

from fyp.audit.log import sql_store
from fyp.catalog.service import Catalog
from fyp.config import load_config
from fyp.experiments.exposures import Exposure, exposures
from fyp.feed.service import FeedService
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_process import process
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.move import Mover
from fyp.sovereignty.move_verify import verify_move
from fyp.sovereignty.residency import ResidencyScanner
from fyp.sovereignty.restore import Restorer

__all__ = ["built"]
EXPERIMENT = """
[experiments.exp]
start = "2025-01-01T00:00:00Z"

[experiments.exp.variants.b]
share = 0.5
exploration_share = 0.2
"""


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    """The small deployment with experiment ``exp`` running in both regions."""
    root = copy_of(built, tmp_path / "dep")
    with (root / "fyp.toml").open("a", encoding="utf-8") as f:
        f.write(EXPERIMENT)
    return root


def serve(root: Path, *users: str) -> dict[str, Exposure]:
    """A page for each user; the exposures the us store holds then."""
    with Deployment.open(root) as d:
        service = FeedService(d)
        for user in users:
            page = service.feed(user, n=3)
            assert page.items and page.experiment is not None
        return exposures(d.store("us"), "exp")


def plant(root: Path, region: str, user_id: str) -> None:
    """An exposure row naming ``user_id`` in ``region``'s store, foreign keys off."""
    conn = sqlite3.connect(root / "regions" / region / "store.sqlite")
    with conn:
        conn.execute(
            "INSERT INTO experiment_exposures (user_id, experiment, variant, exposed_at_ms) "
            "VALUES (?, 'exp', 'b', 1)",
            (user_id,),
        )
    conn.close()


def test_a_move_leaves_the_exposure_in_the_old_region_behind(dep: Path) -> None:
    allow_moves(dep)
    plant_mover(dep)
    assert set(serve(dep, MOVER, "u0")) == {MOVER, "u0"}
    with Deployment.open(dep) as d:
        service = FeedService(d)
        service.warm()  # knows MOVER is exposed in us
        receipt = Mover(d).move(MOVER, "eu", "moved to Lisbon", actor="test")
        assert receipt.removed["experiment_exposures"] == 1
        assert set(exposures(d.store("us"), "exp")) == {"u0"}
        assert exposures(d.store("eu"), "exp") == {}  # not carried: a new region's test
        moved_at = receipt.moved_at_ms
        page = service.feed(MOVER, n=3)  # the same serving process, now from eu
        assert page.region == "eu" and page.experiment is not None
        (exposure,) = exposures(d.store("eu"), "exp").values()
        assert exposure.variant == page.experiment.variant
        assert exposure.exposed_at_ms >= moved_at - 1_000
        assert not verify_move(d, MOVER).remnants
    scan = ResidencyScanner(dep).run()
    assert scan.ok, [f.to_dict() for f in scan.findings]


def test_a_backup_and_restore_carry_the_exposures(dep: Path) -> None:
    held = serve(dep, "u0", "u2", "u4")
    assert set(held) == {"u0", "u2", "u4"}
    config = load_config(dep)
    BackupWriter(config, "us").run()
    with Deployment.open(dep) as d:
        Catalog(d).erase_user("u2")  # after the backup: erased again by the restore
        sql_store(d.store("us")).execute("DELETE FROM experiment_exposures")
    Restorer(config, "us").run()
    with Deployment.open(dep) as d:
        assert exposures(d.store("us"), "exp") == {u: held[u] for u in ("u0", "u4")}


def test_the_residency_scan_finds_a_foreign_users_exposure(dep: Path) -> None:
    plant(dep, "us", "u1")  # homed in eu
    findings = ResidencyScanner(dep).run().findings
    assert [(f.kind, f.location, f.user_id, f.home_region) for f in findings] == [
        ("foreign", "experiment_exposures.user_id", "u1", "eu")
    ]


def test_the_erasure_verifier_finds_a_stray_exposure_and_process_removes_it(dep: Path) -> None:
    serve(dep, "u2")
    with Deployment.open(dep) as d:
        Eraser(d).erase("u2")
        process(d)
        assert verify_erasure(d, "u2").ok
    plant(dep, "eu", "u2")  # where she never lived
    with Deployment.open(dep) as d:
        report = verify_erasure(d, "u2")
        assert [(r.region, r.kind, r.where) for r in report.remnants] == [
            ("eu", "store", "experiment_exposures.user_id")
        ]
        process(d, ["eu"])  # re-applies the erasure where the ledger's user turns up
        assert exposures(d.store("eu"), "exp") == {}
        assert verify_erasure(d, "u2").ok
