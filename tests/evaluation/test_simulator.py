"""The interactive simulator: hand-checked sessions, and the engine's real loop.

Unit tests drive ``play_session`` with a scripted policy, so the leave rule, the cap,
rewards and repeats are checked against sequences worked out by hand. The engine
tests run fyp itself on a small two-region deployment whose test positives and tags
are known, and check what the simulator wrote back into the stores.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fyp.catalog.models import UserIn, Video
from fyp.catalog.service import Catalog
from fyp.errors import AlreadyExists, InvalidRequest
from fyp.evaluation.offline import Protocol, prepare, train_engine
from fyp.evaluation.simulator import (
    Environment,
    Policy,
    SimParams,
    SimResult,
    play_session,
    run_interactive,
    session_seed,
    simulate,
)
from fyp.events.ingest import Ingestor
from fyp.moderation import Moderator
from fyp.regions.deployment import Deployment
from fyp.storage import LabelRow

# -- scripted sessions ------------------------------------------------------------


class Scripted(Policy):
    """Shows a fixed list of videos and remembers the reactions it heard."""

    name = "scripted"

    def __init__(self, videos: list[str | None]) -> None:
        self.videos = videos
        self.heard: list[tuple[int, str, bool]] = []

    def next_video(self, user_id: str, step: int) -> str | None:
        return self.videos[step] if step < len(self.videos) else None

    def react(self, user_id: str, step: int, video_id: str, positive: bool) -> None:
        self.heard.append((step, video_id, positive))


def env_of(tags: dict[str, list[str]], positives: set[str]) -> Environment:
    return Environment(
        universe=list(tags),
        truth={"u": positives},
        tags={v: frozenset(t) for v, t in tags.items()},
        category={v: f"cat{int(v[1:]) % 2}" for v in tags},
        durations=dict.fromkeys(tags, 15_000),
    )


def test_leaves_when_a_tag_repeats_within_the_last_four() -> None:
    # v0..v4 have distinct tags; v5 shares "a" with v0, which is 5 back: not in the
    # window (v1..v4), so the user stays. v6 shares "c" with v2 (window v2..v5): leaves.
    tags = {
        "v0": ["a"],
        "v1": ["b"],
        "v2": ["c"],
        "v3": ["d"],
        "v4": ["e"],
        "v5": ["a", "x"],
        "v6": ["c"],
        "v7": ["y"],
    }
    env = env_of(tags, positives={"v1", "v5", "v6", "v7"})
    policy = Scripted(list(tags))
    s = play_session(policy, env, "u", SimParams())
    assert s.videos == ["v0", "v1", "v2", "v3", "v4", "v5", "v6"]  # the trigger is shown
    assert s.rewards == [0, 1, 0, 0, 0, 1, 1]
    assert (s.length, s.reward, s.end, s.repeats) == (7, 3, "tag_repeat", 0)
    assert s.categories == ["cat0", "cat1", "cat0", "cat1", "cat0", "cat1", "cat0"]
    assert policy.heard[-1] == (6, "v6", True)  # the leaving video is still reacted to
    assert env.leaves(["v0", "v1", "v2", "v3"], "v5", 4)
    assert not env.leaves(["v0", "v1", "v2", "v3", "v4"], "v5", 4)


def test_cap_untagged_videos_and_exhaustion() -> None:
    tags = {f"v{k}": [f"t{k}"] for k in range(40)}
    s = play_session(Scripted(list(tags)), env_of(tags, {"v3"}), "u", SimParams())
    assert (s.length, s.reward, s.end) == (30, 1, "max_length")
    # videos without tags never trigger leaving, whatever came before
    bare = {f"v{k}": [] for k in range(5)}
    s = play_session(Scripted([*bare, None]), env_of(bare, set()), "u", SimParams())
    assert (s.length, s.end) == (5, "exhausted")
    # a shorter cap and window are honoured
    s = play_session(Scripted(list(tags)), env_of(tags, set()), "u", SimParams(max_length=3))
    assert (s.length, s.end) == (3, "max_length")


def test_a_repeat_is_counted_and_earns_nothing() -> None:
    tags = {"v0": ["a"], "v1": ["b"]}
    s = play_session(Scripted(["v0", "v0", "v1"]), env_of(tags, {"v0"}), "u", SimParams())
    # the repeat shares tag "a" with v0 itself, so the user also leaves on it
    assert (s.videos, s.rewards, s.repeats, s.end) == (["v0", "v0"], [1, 0], 1, "tag_repeat")


def test_summary_and_details_by_hand() -> None:
    tags = {f"v{k}": [f"t{k}"] for k in range(4)} | {"v9": ["t0"]}
    env = env_of(tags, {"v0", "v2"})
    params = SimParams()
    sessions = [
        play_session(Scripted(["v0", "v1", "v2", None]), env, "u", params),  # 3 steps, 2
        play_session(Scripted(["v1", "v9", "v0"]), env, "u", params),  # v0 repeats t0
    ]
    result = SimResult("scripted", sessions, 1.0, params)
    # 6 steps, reward 2 + 1. Categories: s1 v0 cat0, v1 cat1, v2 cat0; s2 v1 cat1,
    # v9 cat1, v0 cat0 -> 3 each; the top category holds 3 of 6 videos.
    assert result.summary() == {
        "reward": 1.5,
        "length": 3.0,
        "reward_per_step": 0.5,
        "top_category_share": 0.5,
    }
    d = result.details()
    assert d["reward_by_position"][:4] == [0.5, 0.0, 1.0, None]
    assert d["sessions_by_position"][:4] == [2, 2, 2, 0]
    assert d["length_histogram"][3] == 2 and sum(d["length_histogram"]) == 2
    assert d["ends"] == {"exhausted": 1, "tag_repeat": 1}


# -- the engine on a real deployment ------------------------------------------------

N_USERS = 16
N_VIDEOS = 60
TEST_VIDEOS = [f"v{k}" for k in range(20, 60)]  # the universe: 40 videos
TagOf = Callable[[int], list[str]]


def positives_of(u: int) -> set[str]:
    """User u's known test positives: 8 of the 40 test videos."""
    return {TEST_VIDEOS[(5 * u + j) % 40] for j in range(8)}


def build_world(directory: Path, tag_of: TagOf) -> Deployment:
    """Two regions, 16 users, 60 videos (tags from ``tag_of``), trained; test labels
    for every user (stored as the KuaiRec-EAR test split, so ``prepare`` reads them)."""
    d = Deployment.init(directory, ["us", "eu"])
    catalog = Catalog(d)
    for u in range(N_USERS):
        catalog.create_user(UserIn(user_id=f"u{u}", home_region=("us", "eu")[u % 2]))
        # training-only users: they engage with every video, test videos included
        catalog.create_user(UserIn(user_id=f"w{u}", home_region=("us", "eu")[u % 2]))
    videos = [
        Video(
            video_id=f"v{v}",
            duration_ms=10_000,
            regions=["us", "eu"],
            categories=[f"cat{v % 3}"],
            tags=tag_of(v),
            attributes={"source": "test-import"},  # creator-less: allowed as imported
            created_at_ms=v,
            updated_at_ms=v,
        )
        for v in range(N_VIDEOS)
    ]
    for region in ("us", "eu"):  # the importers' path (an upload may not claim "source")
        d.store(region).bulk_insert_videos(videos)
    rng = random.Random(5)
    events = []
    for k in range(600):
        # test users' own history is outside the test videos (as in KuaiRec-EAR), so
        # all 40 test videos stay unseen for them
        test_user = k % 3 == 0
        events.append(
            {
                "event_id": f"train-{k}",
                "user_id": f"{'u' if test_user else 'w'}{rng.randrange(N_USERS)}",
                "video_id": f"v{rng.randrange(20 if test_user else N_VIDEOS)}",
                "type": "play",
                "watch_ms": rng.choice([1_000, 20_000]),
            }
        )
    Ingestor(d).ingest(events)
    for u in range(N_USERS):
        store = d.store(("us", "eu")[u % 2])
        store.insert_labels([LabelRow("kuairec-ear", "test", f"u{u}", v) for v in positives_of(u)])
    moderator = Moderator(d)  # API-created videos are pending until moderated
    for region in d.regions:
        moderator.run(region)
    train_engine(d)
    return d


@pytest.fixture
def unique_tags(tmp_path: Path) -> Iterator[Deployment]:
    with build_world(tmp_path / "unique", lambda v: [f"t{v}"]) as d:
        yield d


def test_engine_sessions_run_through_the_real_feed_and_ingestion(unique_tags: Deployment) -> None:
    d = unique_tags
    protocol = prepare(d, log=lambda _m: None)
    assert protocol.universe == TEST_VIDEOS
    before = {r: s.count_events() for r, s in d.stores.items()}
    params = SimParams(seed=3)
    results = run_interactive(protocol, params, ["fyp", "popular"], log=lambda _m: None)
    fyp = results["fyp"]
    assert len(fyp.sessions) == N_USERS
    stored = 0
    for s in fyp.sessions:
        u = int(s.user_id[1:])
        store = d.store(("us", "eu")[u % 2])
        other = d.store(("eu", "us")[u % 2])
        # every tag is unique, so nobody leaves early: 30 distinct test videos each
        assert (s.length, s.end, s.repeats) == (30, "max_length", 0)
        assert len(set(s.videos)) == 30 and set(s.videos) <= set(TEST_VIDEOS)
        assert s.rewards == [int(v in positives_of(u)) for v in s.videos]
        served_log = d.served_log(("us", "eu")[u % 2])
        assert set(served_log.served_since(s.user_id, 0)) == set(s.videos)
        for step, (video, reward) in enumerate(zip(s.videos, s.rewards, strict=True)):
            prefix = f"sim:3:{s.user_id}:{step}"
            if reward:
                play, like = store.get_event(f"{prefix}:play"), store.get_event(f"{prefix}:like")
                assert play is not None and like is not None
                assert (play.video_id, play.watch_ms, play.long_play) == (video, 20_000, True)
                assert like.type == "like" and store.get_event(f"{prefix}:skip") is None
                stored += 2
            else:
                skip = store.get_event(f"{prefix}:skip")
                assert skip is not None and (skip.video_id, skip.watch_ms) == (video, 1000)
                assert skip.short_play and store.get_event(f"{prefix}:play") is None
                stored += 1
            assert other.get_event(f"{prefix}:skip") is None  # residency: home store only
            assert other.get_event(f"{prefix}:play") is None
    after = {r: s.count_events() for r, s in d.stores.items()}
    assert fyp.events_stored == stored == sum(after.values()) - sum(before.values())
    assert fyp.summary()["length"] == 30.0
    # bookkeeping only: a 16-user toy says nothing about quality
    assert fyp.summary()["reward"] == pytest.approx(sum(s.reward for s in fyp.sessions) / 16)

    # the popular peer (fitted per region) shows one static ranking to a region's users
    popular = results["popular"]
    for parity in (0, 1):
        firsts = {tuple(s.videos) for s in popular.sessions if int(s.user_id[1:]) % 2 == parity}
        assert len(firsts) == 1
    assert all(s.length == 30 and s.repeats == 0 for s in popular.sessions)
    assert after == {r: s.count_events() for r, s in d.stores.items()}  # peers write nothing

    # a second run with the same seed on the same deployment is refused, not skewed
    with pytest.raises(AlreadyExists, match="already simulated"):
        run_interactive(protocol, params, ["fyp"], log=lambda _m: None)


def test_one_shared_tag_ends_every_session_at_the_second_video(tmp_path: Path) -> None:
    with build_world(tmp_path / "same", lambda v: ["same"]) as d:
        protocol = prepare(d, log=lambda _m: None)
        results = run_interactive(protocol, SimParams(), log=lambda _m: None)
    assert set(results) == {"fyp", "random", "popular", "als", "bpr", "ease"}
    for result in results.values():
        assert [s.length for s in result.sessions] == [2] * N_USERS
        assert {s.end for s in result.sessions} == {"tag_repeat"}
        assert result.summary()["length"] == 2.0
        assert sum(s.repeats for s in result.sessions) == 0


def _sessions(protocol: Protocol, seed: int) -> list[tuple[str, ...]]:
    result = run_interactive(protocol, SimParams(seed=seed), ["fyp"], log=lambda _m: None)
    return [tuple(s.videos) for s in result["fyp"].sessions]


def test_fixed_seeds_give_the_same_sessions(tmp_path: Path) -> None:
    # Two copies of one trained deployment (a rebuild would differ in creation times).
    build_world(tmp_path / "a", lambda v: [f"t{v % 4}"]).close()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    runs = []
    for name in ("a", "b"):
        with Deployment.open(tmp_path / name) as d:
            runs.append(_sessions(prepare(d, log=lambda _m: None), seed=1))
    assert runs[0] == runs[1]
    assert any(len(s) < 30 for s in runs[0])  # 4 tags, a window of 4: the 5th video repeats one
    assert session_seed(1, "u1") == session_seed(1, "u1") != session_seed(2, "u1")


def test_simulate_reports_progress() -> None:
    env = env_of({"v0": ["a"]}, set())
    lines: list[str] = []
    result = simulate(Scripted(["v0"]), env, ["u"] * 3, SimParams(), lines.append, progress_s=0)
    assert len(result.sessions) == 3
    assert [line.split(" (")[0] for line in lines] == ["scripted: 1/3 users", "scripted: 2/3 users"]


def test_the_lookalike_ablation_shows_a_peer_under_the_engines_rule(tmp_path: Path) -> None:
    with build_world(tmp_path / "w", lambda v: [f"t{v % 7}"]) as d:
        protocol = prepare(d, log=lambda _m: None)
        results = run_interactive(
            protocol, SimParams(), ["popular"], log=lambda _m: None, ablations=["popular_lookalike"]
        )
        env = Environment.from_protocol(protocol)
    plain, ruled = results["popular"], results["popular_lookalike"]
    assert [s.user_id for s in ruled.sessions] == [s.user_id for s in plain.sessions]
    for p, r in zip(plain.sessions, ruled.sessions, strict=True):
        assert r.videos[0] == p.videos[0]  # popular's best video opens both
        assert r.repeats == 0
        # 7 tags and a window of 4: an unshown video unlike the last 4 is always there
        assert r.end in {"max_length", "exhausted"}
        for k, video in enumerate(r.videos):
            assert not env.leaves(r.videos[:k], video, 4)
    assert any(s.end == "tag_repeat" for s in plain.sessions)
    with pytest.raises(InvalidRequest, match="unknown methods"):
        run_interactive(protocol, SimParams(), ["popular"], ablations=["nope"])
