"""POST /v1/users/{id}/move and stale routes with every store on PostgreSQL: the tests of
tests/serving/test_api_move.py run again, each store a schema of the test server
(``FYP_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import SERVER, deployments_on_postgres

pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from move_helpers import allow_moves, plant_mover  # noqa: E402
from region_helpers import build  # noqa: E402

from serving import test_api_move  # noqa: E402

globals().update({k: v for k, v in vars(test_api_move).items() if k.startswith("test_")})
served = test_api_move.served


@pytest.fixture
def dep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with deployments_on_postgres(monkeypatch):
        root = build(tmp_path / "dep")
        allow_moves(root)
        plant_mover(root, train=False)
        yield root


def test_the_stores_under_test_are_on_postgres(dep: Path) -> None:
    from fyp.regions.deployment import Deployment
    from fyp.storage.postgres import PostgresStore

    with Deployment.open(dep) as d:
        assert all(isinstance(d.store(r), PostgresStore) for r in d.regions)
