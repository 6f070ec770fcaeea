"""``fyp user blocks-check``: a block's two sides, in two regions' stores, found
disagreeing (a request cut short, a restore) and made to agree from the blocker's row."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from catalog.test_follows import _world
from fyp.audit.log import sql_store
from fyp.catalog.blocks import Blocking
from fyp.catalog.blocks_check import check_blocks
from fyp.catalog.models import VideoIn
from fyp.catalog.service import Catalog
from fyp.cli.app import app
from fyp.regions.deployment import Deployment


def _cli(d: Deployment, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(app, ["user", "blocks-check", str(d.config.root), *args, "--json"])
    return result.exit_code, json.loads(result.output)


def test_a_block_cut_short_or_restored_away_is_found_and_repaired(deployment: Deployment) -> None:
    _world(deployment)
    Catalog(deployment).create_video(  # ana's video published in eu: cy may block her
        VideoIn(video_id="v9", creator_id="ana", duration_ms=10_000, regions=["eu"])
    )
    blocking = Blocking(deployment)
    blocking.block("cy", "bob")  # cy in eu, bob in us
    blocking.block("cy", "ana")
    assert check_blocks(deployment).ok
    assert _cli(deployment) == (
        0,
        {"ok": True, "blocks": 2, "blocked_sides": 2, "missing": [], "orphaned": [], "repaired": 0},
    )
    us, eu = sql_store(deployment.store("us")), sql_store(deployment.store("eu"))
    # the PUT for bob was cut short after cy's row; ana's block was restored away in eu
    us.execute("DELETE FROM blocked_by WHERE user_id = 'bob'")
    eu.execute("DELETE FROM blocks WHERE creator_id = 'ana'")
    code, report = _cli(deployment)
    assert code == 1 and report["ok"] is False
    assert report["missing"] == [{"blocker": "cy", "blocked": "bob"}]
    assert report["orphaned"] == [{"blocker": "cy", "blocked": "ana"}]
    code, report = _cli(deployment, "--repair")
    assert code == 0 and report["repaired"] == 2
    assert deployment.store("us").blocked_creators("bob") == ["cy"]
    assert deployment.store("us").blocked_creators("ana") == []
    assert check_blocks(deployment).to_dict()["missing"] == []
    assert _cli(deployment)[0] == 0


def test_a_side_whose_blocker_lives_in_no_region_here_is_not_judged(
    deployment: Deployment,
) -> None:
    """A region carved out on its own keeps the blocked sides of blockers homed in the
    regions it left: no row here says the block ended, so the repair keeps them."""
    _world(deployment)
    sql_store(deployment.store("us")).execute(
        "INSERT INTO blocked_by (user_id, creator_id, since_ms) VALUES ('bob', 'far-away', 1)"
    )
    report = check_blocks(deployment, repair=True)
    assert report.ok and report.repaired == 0 and report.blocked_sides == 1
    assert deployment.store("us").blocked_creators("bob") == ["far-away"]
