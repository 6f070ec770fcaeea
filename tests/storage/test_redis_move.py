"""Moving a user's home region between regions whose served logs are on Redis: the move
tests of tests/sovereignty/test_move.py run again, each region's served log in a
database of the test server (``FYP_TEST_REDIS_URL``): the pages within the seen window
move to the destination's Redis, and the source's keys go."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_server import SERVER

pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_REDIS_URL is not set")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from move_helpers import allow_moves, plant_mover  # noqa: E402
from region_helpers import built, copy_of  # noqa: E402

from sovereignty import test_move  # noqa: E402
from storage.test_redis_deployment import with_served_logs  # noqa: E402

__all__ = ["built"]
globals().update(  # the move tests but one (nothing of Redis in it)
    {
        k: v
        for k, v in vars(test_move).items()
        if k.startswith("test_") and k != "test_without_a_policy_no_move_is_allowed"
    }
)


@pytest.fixture
def dep(built: Path, tmp_path: Path, redis_urls: list[str]) -> Iterator[Path]:
    yield deployment_on(built, tmp_path, redis_urls)


def deployment_on(built: Path, tmp_path: Path, urls: list[str]) -> Path:
    """A copy of the move tests' deployment, the served log of us at ``urls[0]`` and of
    eu at ``urls[1]``."""
    root = copy_of(built, tmp_path / "dep")
    with_served_logs(root, {"us": urls[0], "eu": urls[1]})
    allow_moves(root)
    plant_mover(root)
    return root


def test_the_pages_move_to_the_destinations_redis(dep: Path) -> None:
    from move_helpers import MOVER

    from fyp.regions.deployment import Deployment
    from fyp.sovereignty.move import Mover
    from fyp.sovereignty.served_data import external

    with Deployment.open(dep) as d:
        logs = external(d)
        assert set(logs) == {"us", "eu"}
        assert logs["us"].keys_naming(MOVER) and not logs["eu"].keys_naming(MOVER)
        receipt = Mover(d).move(MOVER, "eu", "moved", actor="test")
        assert receipt.removed["served_log_keys"] >= 3
        assert not logs["us"].keys_naming(MOVER)
        assert {v for p in logs["eu"].pages(MOVER) for v in p.video_ids} == {"v30", "v31", "v32"}
