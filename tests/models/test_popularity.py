"""Popularity: user-normalised votes, with the activity exponent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


def test_serving_popularity_normalises_by_activity_and_halves_per_half_life() -> None:
    from fyp.models.training import serving_popularity

    day = 86_400_000
    users = np.array([0, 1, 1, 1, 1])
    items = np.array([0, 1, 2, 3, 4])
    weights = np.ones(5)
    ts = np.array([14 * day, 0, 14 * day, 14 * day, 14 * day])  # user 1's video 1 is old
    pop = serving_popularity(users, items, weights, ts, (2, 5), TrainParams())
    assert np.isclose(pop[0], 1.0)  # a selective user's fresh vote
    assert np.isclose(pop[1], 0.5 / 4**1.5)  # one half-life old, from a user of 4
    assert np.isclose(pop[2], 1 / 4**1.5)


def test_old_popularity_never_collapses_behind_one_new_event() -> None:
    """Six years of data and one event of today: the old videos keep their order."""
    from fyp.models.training import decay_weights, serving_popularity

    day = 86_400_000
    # videos 0, 1, 2 liked by 3, 2 and 1 of users 0-2 in 2020; user 3 likes video 3 today
    users = np.array([0, 1, 2, 0, 1, 0, 3])
    items = np.array([0, 0, 0, 1, 1, 2, 3])
    ts = np.array([0, 0, 0, 0, 0, 0, 6 * 365 * day])
    pop = serving_popularity(users, items, np.ones(7), ts, (4, 4), TrainParams())
    assert pop[0] > pop[1] > pop[2] > 0  # the long-run order, at 1 % weight
    assert pop[3] > pop[0]  # and today's engagement still trends above it
    assert decay_weights(np.array([0]), 6 * 365 * day, 14.0, 0.01)[0] == 0.01
    assert decay_weights(np.array([0]), 14 * day, 14.0, 0.01)[0] == 0.5  # no floor yet


def test_ranker_features_use_the_serving_popularity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heads must learn on the feature serving gives them (same exponent, decay)."""
    from fyp.models import training
    from fyp.models.ranker_training import fit_ranker

    calls: list[TrainParams] = []
    real = training.serving_popularity

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(args[5])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "serving_popularity", spy)
    rng = np.random.default_rng(0)
    data = training.Interactions(users=[f"u{u}" for u in range(40)])
    for u in range(40):
        for k, i in enumerate(rng.choice(30, 10, replace=False)):
            data.u.append(u)
            data.i.append(int(i))
            data.w.append(1.0)
            data.ts.append(k)
            data.obj_u.append(u)
            data.obj_i.append(int(i))
            data.obj_k.append(0)
            data.obj_ts.append(k)
    meta = {
        "category": np.zeros(30, np.int64),
        "creator": np.full(30, -1, np.int64),
        "tag_ptr": np.zeros(31, np.int64),
        "tag_idx": np.zeros(0, np.int64),
    }
    params = TrainParams(activity_exponent=1.25, half_life_days=3.0)
    fit_ranker(data, meta, 30, params)
    assert calls and all(c is params for c in calls)
