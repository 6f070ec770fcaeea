"""The evaluation copy as it stood at the cut (fyp.evaluation.as_of): follows, blocks,
and the feed's time windows measured from the cut."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from fyp.catalog.blocks import Blocking
from fyp.catalog.follows import Following
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.evaluation.offline import rank_engine, train_engine
from fyp.evaluation.temporal import TemporalConfig, run_temporal
from fyp.evaluation.temporal_cut import split_copy
from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService
from fyp.regions.deployment import Deployment
from fyp.sovereignty.region_data import snapshot_region

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_temporal import (  # noqa: F401
    CUT_MS,
    T0,
    _event,
    cut_template,
    histories,
    moderate,
    publish,
    template,
)

DAY_MS = 86_400_000
T0_MS = int(T0.timestamp() * 1000)


def day_ms(day: float) -> int:
    return T0_MS + int(day * DAY_MS)


def follows_in(copy: Path) -> dict[str, set[tuple[Any, ...]]]:
    with closing(sqlite3.connect(copy)) as db:
        return {
            "follows": set(db.execute("SELECT user_id, creator_id, since_ms FROM follows")),
            "actions": set(
                db.execute("SELECT user_id, creator_id, acted_ms, following FROM follow_actions")
            ),
            "blocks": set(db.execute("SELECT user_id, creator_id FROM blocks")),
            "blocked_by": set(db.execute("SELECT user_id, creator_id FROM blocked_by")),
        }


def test_follows_and_blocks_are_as_they_stood_at_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events and the API's own actions, each at a set time (the cut is day 10)."""
    clock = {"now": 0}
    for module in ("fyp.catalog.follows", "fyp.catalog.blocks"):
        monkeypatch.setattr(f"{module}.now_ms", lambda: clock["now"])

    def api(day: float, action: Any, user: str, creator: str) -> None:
        clock["now"] = day_ms(day)
        action(user, creator)

    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        catalog = Catalog(d)
        for user in ("u0", "u1", "u2"):
            catalog.create_user(UserIn(user_id=user, home_region="us"))
        publish(catalog, ["x0", "x1", "x2"])
        follow, unfollow = Following(d).follow, Following(d).unfollow
        block = Blocking(d).block
        ingest = Ingestor(d).ingest
        n = iter(range(100))

        def event(user: str, video: str, kind: str, day: float) -> None:
            ingest([_event(next(n), user, video, kind, day)])

        # u0: three follows made before the cut by events, each ended after it
        event("u0", "x0", "follow", 2)
        event("u0", "x0", "unfollow", 12)  # by an event
        event("u0", "x1", "follow", 3)
        api(12, unfollow, "u0", "by-x1")  # through the API
        event("u0", "x2", "follow", 4)
        api(13, block, "u0", "by-x2")  # by a block, made after the cut
        # u1: an API follow repeated after the cut; a follow ended and made again after
        # it; a follow event while a block made before the cut stands
        api(2, follow, "u1", "by-x0")
        api(12, follow, "u1", "by-x0")
        event("u1", "x1", "follow", 2)
        event("u1", "x1", "unfollow", 5)
        event("u1", "x1", "follow", 12)
        api(3, block, "u1", "by-x2")
        event("u1", "x2", "follow", 4)
        # u2: a follow made after the cut; two pairs sent out of order
        api(11, follow, "u2", "by-x0")
        event("u2", "x1", "unfollow", 6)
        event("u2", "x1", "follow", 4)  # older than the unfollow: changes nothing
        event("u2", "x2", "follow", 7)
        event("u2", "x2", "unfollow", 5)  # older than the follow: changes nothing
        copy = tmp_path / "copy.sqlite"
        snapshot_region(d.config, "us", copy)
    with closing(sqlite3.connect(copy)) as db:
        split_copy(db, d.config, "us", CUT_MS)
    found = follows_in(copy)
    assert found["follows"] == {
        ("u0", "by-x0", day_ms(2)),
        ("u0", "by-x1", day_ms(3)),
        ("u0", "by-x2", day_ms(4)),
        ("u1", "by-x0", day_ms(2)),  # since its start, not the repeat's
        ("u2", "by-x2", day_ms(7)),
    }
    assert found["actions"] == {
        ("u0", "by-x0", day_ms(2), 1),
        ("u0", "by-x1", day_ms(3), 1),
        ("u0", "by-x2", day_ms(4), 1),
        ("u1", "by-x0", day_ms(2), 1),
        ("u1", "by-x1", day_ms(5), 0),
        ("u1", "by-x2", day_ms(3), 0),  # the block ended it; the later event added nothing
        ("u2", "by-x1", day_ms(6), 0),
        ("u2", "by-x2", day_ms(7), 1),
        ("by-x2", "u1", day_ms(3), 0),  # the blocked side: their follow ended too
    }
    assert found["blocks"] == {("u1", "by-x2")}  # u0's block came after the cut
    assert found["blocked_by"] == {("by-x2", "u1")}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(histories(["x0", "x1", "x5"], ["follow", "unfollow"], 30))
@example([("u0", "x0", "follow", 2), ("u0", "x0", "unfollow", 12)])
@example([("u0", "x0", "follow", 12), ("u0", "x0", "unfollow", 2)])
@example([("u1", "x1", "follow", 3), ("u1", "x1", "follow", 3), ("u1", "x1", "unfollow", 3)])
# the unfollow arrives after a follow past the cut (the store ignores it), same ms as the first
@example([("u0", "x0", "follow", 0), ("u0", "x0", "follow", 10), ("u0", "x0", "unfollow", 0)])
# the same before the cut: the store ignored the unfollow, the follow keeps its start
@example(
    [
        ("u0", "x0", "follow", 0),
        ("u0", "x0", "follow", 10),
        ("u0", "x0", "unfollow", 0),
        ("u0", "x0", "follow", 1),
    ]
)
@example([("u1", "x1", "follow", 0), ("u1", "x1", "follow", 1), ("u1", "x1", "unfollow", 0)])
def test_the_follows_match_a_plain_model(
    template: tuple[Path, Any],  # noqa: F811
    tmp_path: Path,
    history: list[tuple[str, str, str, int]],
) -> None:
    """Follow and unfollow events, in any arrival order: in the copy a pair is followed
    when its latest event before the cut (by time, then arrival) is a follow, since one
    of its follows after the last unfollow before that."""
    t0 = CUT_MS - 10 * DAY_MS
    rows = [(f"e{n}", u, v, kind, t0 + day * DAY_MS) for n, (u, v, kind, day) in enumerate(history)]
    _, copy = cut_template(template, tmp_path, "event_id, user_id, video_id, type, ts_ms", rows)
    ordered = sorted(enumerate(rows), key=lambda r: (r[1][4], r[0]))
    latest: dict[tuple[str, str], tuple[int, bool]] = {}
    starts: dict[tuple[str, str], set[int]] = {}  # follows since the pair's last unfollow
    for _, (_, u, v, kind, ts) in ordered:
        if ts >= CUT_MS or u == "u4":
            continue
        pair, on = (u, f"by-{v}"), kind == "follow"
        latest[pair] = (ts, on)
        starts[pair] = starts.get(pair, set()) | {ts} if on else set()
    found = follows_in(copy)
    assert found["actions"] == {(u, c, t, int(on)) for (u, c), (t, on) in latest.items()}
    followed = {(u, c): since for u, c, since in found["follows"]}
    assert set(followed) == {pair for pair, (_, on) in latest.items() if on}
    # since: one of those follows, or the store's own start when one arrived out of
    # order: in arrival order an action older than the pair's latest changes nothing,
    # so an unfollow of a follow's millisecond that arrives after a later follow is
    # ignored and the follow keeps its start
    acted: dict[tuple[str, str], int] = {}
    kept: dict[tuple[str, str], int] = {}
    for _, u, v, kind, ts in rows:
        pair = (u, f"by-{v}")
        if ts >= CUT_MS or u == "u4" or ts < acted.get(pair, ts):
            continue
        acted[pair] = ts
        if kind == "follow":
            kept.setdefault(pair, ts)
        else:
            kept.pop(pair, None)
    assert all(
        since in starts[pair] or since == kept.get(pair) for pair, since in followed.items()
    ), (followed, starts, kept)


# -- the feed as of the cut ----------------------------------------------------------------
def heavy_user(d: Deployment) -> None:
    """User ``h``: not interested in n1 on day 1, then 300 plays of m1 and others (the
    feed reads a user's latest 300 events; older "not interested" marks count within the
    seen window), then after the cut not interested in m1 and likes of n2 (n1's
    creator's) and m2 (m1's creator's). A cut in March 2026 is more than the 30-day
    window before today."""
    catalog = Catalog(d)
    catalog.create_user(UserIn(user_id="h", home_region="us"))
    publish(catalog, ["p0", "p1", "p2", "p3", "n1", "m1"])
    for video, creator in (("n2", "by-n1"), ("m2", "by-m1")):
        catalog.create_video(
            VideoIn(video_id=video, creator_id=creator, duration_ms=20_000, regions=["us"])
        )
    rows = [_event(0, "h", "n1", "not_interested", 1)]
    played = ["p0", "p1", "p2", "p3", "m1"]
    rows += [_event(n + 1, "h", played[n % 5], "play", 2 + n / 50) for n in range(300)]
    rows += [
        _event(301, "h", "m1", "not_interested", 11),
        _event(302, "h", "n2", "like", 12),
        _event(303, "h", "m2", "like", 12),
    ]
    Ingestor(d).ingest(rows)
    with closing(sqlite3.connect(d.config.region_dir("us") / "store.sqlite")) as db, db:
        db.execute("UPDATE videos SET created_at_ms = ?", (CUT_MS - 30 * DAY_MS,))
    moderate(d)


def test_the_feed_measures_its_windows_from_the_cut(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        heavy_user(d)
        with closing(sqlite3.connect(d.config.region_dir("us") / "store.sqlite")) as db, db:
            db.execute("DELETE FROM events WHERE ts_ms >= ?", (CUT_MS,))
        train_engine(d)
        as_of = FeedService(d, as_of_ms=CUT_MS)
        state = as_of.state("h", as_of.model("us"))
        assert "n1" in state.not_interested_videos  # day 1: within 30 days of the cut
        today = FeedService(d)
        assert "n1" not in today.state("h", today.model("us")).not_interested_videos


def test_the_evaluation_ranks_as_of_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mark made before the cut holds: the engine ranks neither n1 nor its creator's
    n2 (ranked by the wall clock, it served n1 again); one made after it does not: m2 is
    ranked. The peers know no marks."""
    import fyp.evaluation.temporal as temporal

    ranked: list[dict[str, list[str]]] = []

    def spy(*args: Any, **kwargs: Any) -> dict[str, list[str]]:
        ranked.append(rank_engine(*args, **kwargs))
        return ranked[-1]

    monkeypatch.setattr(temporal, "rank_engine", spy)
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        heavy_user(d)
    results = run_temporal(
        TemporalConfig(
            directory=tmp_path / "dep",
            out=tmp_path / "out",
            region="us",
            cut_ms=CUT_MS,
            methods=("fyp", "popular"),
            newcomer_events=0,
        ),
        log=lambda _: None,
    ).results
    assert results["config"]["test_users"] == 1
    assert ranked == [{"h": ["m2"]}]
    assert results["offline"]["fyp"]["recall@50"] == pytest.approx(0.5)
    assert results["offline"]["popular"]["recall@50"] == pytest.approx(1.0)
