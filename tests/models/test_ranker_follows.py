"""The ranker learns from follows: training sets the ``followed_creator`` feature as of
each user's cut (from follow/unfollow events and the ``follows`` table), so a head can
learn what serving tells it. Before, the feature was 0 in every training row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from consent_helpers import BACKENDS, on_backend

from fyp.catalog.follows import Following
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.events.schema import StoredEvent, play_labels
from fyp.feed.scoring import head_features
from fyp.feed.state import UserState
from fyp.models.artifacts import EventHasher
from fyp.models.ranker import FEATURES, OBJECTIVES
from fyp.models.ranker_training import FollowHistory, fit_ranker, follow_history
from fyp.models.training import Interactions, TrainParams, read_interactions, train_region
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment

FOLLOWED = FEATURES.index("followed_creator")
LONG_PLAY = OBJECTIVES.index("long_play")
FAST = TrainParams(als_iterations=3, factors=8)


def history(events: list[tuple[int, int, int, bool]], rows: list[tuple[int, int, int]]) -> Any:
    def col(seq: list[Any], k: int, dtype: Any = np.int64) -> np.ndarray:
        return np.asarray([x[k] for x in seq], dtype)

    return FollowHistory(
        col(events, 0),
        col(events, 1),
        col(events, 2),
        col(events, 3, bool),
        col(rows, 0),
        col(rows, 1),
        col(rows, 2),
    )


def test_the_last_event_before_the_cut_decides() -> None:
    # user 0 follows creator 7 at t=1, unfollows at t=5, follows again at t=8
    h = history([(0, 7, 1, True), (0, 7, 5, False), (0, 7, 8, True)], [])
    assert h.at(np.array([3]))[0].tolist() == [7]
    assert 0 not in h.at(np.array([6]))
    assert h.at(np.array([9]))[0].tolist() == [7]
    assert h.at(np.array([1])) == {}  # at t=1 itself: not yet


def test_a_table_row_counts_from_its_start() -> None:
    # an API follow (no event) of creator 3 since t=10; user 1 follows nobody
    h = history([], [(0, 3, 10)])
    assert h.at(np.array([10, 99])) == {}
    assert h.at(np.array([11, 99]))[0].tolist() == [3]


def test_the_latest_action_by_time_decides_whatever_arrived_last() -> None:
    # events in seq order: the unfollow at 5 arrived before the follow at 2 (sent late)
    h = history([(0, 7, 5, False), (0, 7, 2, True)], [])
    assert h.at(np.array([4]))[0].tolist() == [7]
    assert h.at(np.array([6])) == {}
    # of two at the same time the later arrival wins
    h = history([(0, 7, 5, True), (0, 7, 5, False)], [])
    assert h.at(np.array([6])) == {}


def test_an_api_unfollow_ends_a_follow_made_by_an_event() -> None:
    # follow event at 1; the API unfollowed at 5 (no event: the pair's record says so)
    h = replace(
        history([(0, 7, 1, True)], []),
        act_user=np.array([0]),
        act_creator=np.array([7]),
        act_ms=np.array([5]),
        act_on=np.array([False]),
    )
    assert h.at(np.array([3]))[0].tolist() == [7]
    assert h.at(np.array([6])) == {}
    # the record is the latest action: at its time it wins over an event
    tie = replace(h, ev_ts=np.array([5]))
    assert tie.at(np.array([6])) == {}


def test_follow_history_reads_the_pairs_latest_actions() -> None:
    data = Interactions(users=["ana", "bo"], user_index={"ana": 0, "bo": 1})
    actions = [("bo", "ana", 9, False), ("ghost", "ana", 9, True), ("ana", "bo", 8, True)]
    h = follow_history(data, np.zeros(0, np.int64), {"ana": 0, "bo": 1}, [], actions)
    assert list(zip(h.act_user, h.act_creator, h.act_ms, h.act_on, strict=True)) == [
        (1, 0, 9, False),
        (0, 1, 8, True),
    ]


def test_follow_history_maps_videos_to_creators_as_the_trigger_does() -> None:
    data = Interactions(users=["ana", "bo"], user_index={"ana": 0, "bo": 1})
    # videos 0, 1 by ana (creator 0), video 2 by bo (creator 1), video 3 by no one
    creator = np.array([0, 0, 1, -1])
    for u, i, t, on in [(0, 0, 1, True), (0, 2, 2, True), (1, 0, 3, True), (1, 3, 4, True)]:
        data.fol_u.append(u)
        data.fol_i.append(i)
        data.fol_ts.append(t)
        data.fol_on.append(on)
    rows = [("bo", "bo", 5), ("ghost", "ana", 5), ("ana", "someone", 5), ("bo", "ana", 6)]
    h = follow_history(data, creator, {"ana": 0, "bo": 1}, rows)
    # ana following her own video is dropped, and bo's follow of a video without creator
    assert list(zip(h.ev_user, h.ev_creator, strict=True)) == [(0, 1), (1, 0)]
    # rows of users not learned from, or of creators without a video here, are dropped
    assert list(zip(h.row_user, h.row_creator, h.row_since, strict=True)) == [(1, 1, 5), (1, 0, 6)]


def stored(seq: int, user: str, video: str, kind: str) -> StoredEvent:
    return StoredEvent(
        seq, f"e{seq}", user, video, kind, 1000 * seq, None, *astuple(play_labels(None, 1))
    )


def test_read_interactions_keeps_follows_and_unfollows_in_order() -> None:
    events = [
        stored(1, "zed", "v0", "unfollow"),  # before zed did anything: nothing to end
        stored(2, "ana", "v0", "follow"),
        stored(3, "ana", "v0", "unfollow"),
        stored(4, "ana", "v1", "follow"),
    ]
    data = read_interactions(events, {"v0": 0, "v1": 1}, EventHasher())
    assert data.users == ["ana"]
    assert list(zip(data.fol_i, data.fol_ts, data.fol_on, strict=True)) == [
        (0, 2000, True),
        (0, 3000, False),
        (1, 4000, True),
    ]


def synthetic(n_users: int = 200, seed: int = 0) -> tuple[Interactions, dict[str, np.ndarray]]:
    """60 videos of 10 creators. Every user follows 2 creators at t=0 and plays 12
    random videos; their 3 latest long plays (the held-out part) are of the creators
    they follow. Whether a candidate's creator is followed is the one thing that tells
    a target from another video."""
    rng = np.random.default_rng(seed)
    creator = np.repeat(np.arange(10), 6)
    data = Interactions(users=[f"u{u}" for u in range(n_users)])
    for u in range(n_users):
        follows = rng.choice(10, 2, replace=False)
        for c in follows:
            data.fol_u.append(u)
            data.fol_i.append(int(c) * 6)
            data.fol_ts.append(0)
            data.fol_on.append(True)
        theirs = np.nonzero(np.isin(creator, follows))[0]
        others = np.nonzero(~np.isin(creator, follows))[0]
        plays = [*rng.choice(others, 12, replace=False), *rng.choice(theirs, 3, replace=False)]
        for t, i in enumerate(plays, start=1):
            for sink in ((data.u, u), (data.i, int(i)), (data.w, 1.0), (data.ts, t)):
                sink[0].append(sink[1])  # type: ignore[attr-defined]
            data.obj_u.append(u)
            data.obj_i.append(int(i))
            data.obj_k.append(LONG_PLAY)
            data.obj_ts.append(t)
    data.user_index = {name: n for n, name in enumerate(data.users)}
    meta = {
        "category": np.zeros(60, np.int64),
        "creator": creator,
        "created_at_ms": np.arange(60, dtype=np.int64),
        "tag_ptr": np.zeros(61, np.int64),
        "tag_idx": np.zeros(0, np.int64),
    }
    return data, meta


def importance(head: str) -> np.ndarray:
    return np.asarray(lgb.Booster(model_str=head).feature_importance("split"))


def test_the_long_play_head_learns_follows() -> None:
    data, meta = synthetic()
    follows = follow_history(data, meta["creator"], {}, [])
    heads, summary = fit_ranker(data, meta, 60, FAST, follows)
    assert summary["users_following"] == summary["training_users"] > 0
    assert importance(heads["long_play"])[FOLLOWED] > 0
    # the same rows with the flag on and off: following raises P(long play)
    booster = lgb.Booster(model_str=heads["long_play"])
    x = np.zeros((1, len(FEATURES)))
    on, off = x.copy(), x.copy()
    on[0, FOLLOWED] = 1.0
    assert booster.predict(on)[0] > booster.predict(off)[0] + 0.1


def test_without_follow_history_the_feature_is_never_used() -> None:
    """The old behaviour, for contrast: a constant 0 feature is never split on."""
    data, meta = synthetic()
    heads, summary = fit_ranker(data, meta, 60, FAST)
    assert summary["users_following"] == 0
    assert importance(heads["long_play"])[FOLLOWED] == 0


def _region(dep: Deployment, n_users: int, creator_of: Callable[[int], int]) -> list[str]:
    """Users u0.. and creators c0..c9 homed in eu; videos v0..v59, v{n} by c{creator_of(n)}.
    Returns the users."""
    catalog = Catalog(dep)
    users = [f"u{n}" for n in range(n_users)]
    for u in [*users, *(f"c{n}" for n in range(10))]:
        catalog.create_user(UserIn(user_id=u, home_region="eu"))
    for n in range(60):
        catalog.create_video(
            VideoIn(
                video_id=f"v{n}", regions=["eu"], creator_id=f"c{creator_of(n)}", duration_ms=20_000
            )
        )
    return users


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_reads_api_follows_from_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Follows made through the API leave no event: training reads them from the
    region's ``follows`` table, and its manifest counts the users who follow."""
    with on_backend(backend, monkeypatch):
        dep = Deployment.init(tmp_path / "dep", ["eu"])
        users = _region(dep, 60, lambda n: n % 10)
        videos = [f"v{n}" for n in range(60)]
        following = Following(dep)
        for k, u in enumerate(users):
            following.follow(u, f"c{k % 10}")
        # the likes come after the follows (within the allowed clock skew)
        start = datetime.now(UTC) + timedelta(seconds=1)
        ingestor = Ingestor(dep)
        for k, u in enumerate(users):
            likes = [
                {
                    "event_id": f"{u}-{n}",
                    "user_id": u,
                    "video_id": videos[(k * 7 + n * 11) % 60],
                    "type": "like",
                    "ts": (start + timedelta(milliseconds=100 * (8 * k + n))).isoformat(),
                }
                for n in range(8)
            ]
            assert all(r.status == "stored" for r in ingestor.ingest(likes).results)
        manifest, _ = train_region(
            dep.store("eu"), tmp_path / "m", FAST, consent=consent_policy(dep.config, "eu")
        )
        ranker = manifest.metrics["ranker"]
        assert ranker["training_users"] > 0
        assert ranker["users_following"] == ranker["training_users"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_served_model_trained_from_a_store_values_a_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """From the store to the model serving loads: users follow creators through the API,
    then long-play their videos last (held out as targets). The live model's long-play
    head, fed what serving feeds it (``RankerScorer``: ``inputs_for`` with the user's
    followed creators), rates a followed creator's video above the same video unfollowed."""
    from fyp.feed.service import FeedService
    from fyp.models.training import train_and_publish

    with on_backend(backend, monkeypatch):
        dep = Deployment.init(tmp_path / "dep", ["eu"])
        users = _region(dep, 80, lambda n: n // 6)
        rng = np.random.default_rng(3)
        following = Following(dep)
        plan: dict[str, list[int]] = {}
        for u in users:
            theirs = rng.choice(10, 2, replace=False)
            for c in theirs:
                following.follow(u, f"c{c}")
            own = [n for n in range(60) if n // 6 in theirs]
            others = [n for n in range(60) if n // 6 not in theirs]
            plan[u] = [*rng.choice(others, 12, replace=False), *rng.choice(own, 3, replace=False)]
        start = datetime.now(UTC) + timedelta(seconds=1)  # after the follows
        ingestor = Ingestor(dep)
        for k, u in enumerate(users):
            plays = [
                {
                    "event_id": f"{u}-{n}",
                    "user_id": u,
                    "video_id": f"v{video}",
                    "type": "play",
                    "watch_ms": 20_000,
                    "ts": (start + timedelta(milliseconds=200 * k + 10 * n)).isoformat(),
                }
                for n, video in enumerate(plan[u])
            ]
            assert all(r.status == "stored" for r in ingestor.ingest(plays).results)
        train_and_publish(
            dep.store("eu"),
            dep.config.region_dir("eu"),
            FAST,
            consent=consent_policy(dep.config, "eu"),
        )
        model = FeedService(dep).model("eu")
        assert model.heads is not None and "long_play" in model.heads.boosters
        state = FeedService(dep).state("u0", model)
        assert len(state.followed_creators) == 2
        theirs = np.nonzero(np.isin(model.creator, list(state.followed_creators)))[0]

        def long_play(user: UserState) -> np.ndarray:
            x = head_features(model, user, theirs)  # what RankerScorer feeds the heads
            return model.heads.predict(x)["long_play"]  # type: ignore[union-attr]

        unfollowed = replace(state, followed_creators={})
        # 0.25 here; 0 when training sees no follows (the feature is then never split on)
        assert np.median(long_play(state) - long_play(unfollowed)) > 0.05
