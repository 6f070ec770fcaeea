"""Popularity: user-normalised votes, with the activity exponent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.models.training import TrainParams, user_normalised_popularity
from fyp.regions.deployment import Deployment


def _matrix() -> sp.csr_matrix:
    """Video 0: one selective user (1 positive). Video 1: five heavy users (4 each)."""
    rows, cols = [0], [0]
    for user in range(1, 6):
        rows += [user] * 4
        cols += [1, 2 + user, 8 + user, 14 + user]
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(6, 20))


def test_exponent_one_is_one_vote_per_user() -> None:
    x = _matrix()
    pop = user_normalised_popularity(x, x, 1.0)
    assert np.isclose(pop.sum(), 6.0)  # six users, one vote each
    assert pop[1] > pop[0]  # 5 x 1/4 > 1


def test_higher_exponent_favours_selective_users() -> None:
    x = _matrix()
    pop = user_normalised_popularity(x, x, 1.5)
    assert np.isclose(pop[0], 1.0)
    assert np.isclose(pop[1], 5 / 8)  # each heavy vote is 1 / 4 ** 1.5
    assert pop[0] > pop[1]


def test_default_exponent_is_the_validated_one() -> None:
    assert TrainParams().activity_exponent == 1.5
    x = _matrix()
    assert np.allclose(user_normalised_popularity(x, x), user_normalised_popularity(x, x, 1.0))


def test_train_keeps_only_the_newest_versions_and_never_the_live_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fyp.cli.app import app
    from fyp.models.artifacts import current_version, list_versions, prune_versions, set_current

    directory = tmp_path / "dep"
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(directory), "--regions", "us"]).exit_code == 0
    with Deployment.open(directory) as d:
        Catalog(d).create_user(UserIn(user_id="u1", home_region="us"))
        Catalog(d).create_video(VideoIn(video_id="v1", duration_ms=9_000, regions=["us"]))
        Ingestor(d).ingest([{"event_id": "e1", "user_id": "u1", "video_id": "v1", "type": "like"}])
    for _ in range(4):
        result = runner.invoke(app, ["train", str(directory), "--keep", "2"])
        assert result.exit_code == 0, result.output
    region_dir = directory / "regions" / "us"
    versions = list_versions(region_dir)
    assert len(versions) == 2 and current_version(region_dir) == versions[-1]
    set_current(region_dir, versions[0])  # an operator rolled back to the older one
    assert prune_versions(region_dir, 1) == []  # the live version is never deleted
    assert list_versions(region_dir) == versions
