"""The offline protocol's training positives (what the peers learn from) leave out likes
taken back by a later ``unlike``, as the engine's training does."""

from __future__ import annotations

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.evaluation.offline import build_protocol
from fyp.events.ingest import Ingestor
from fyp.regions.deployment import Deployment


def test_taken_back_likes_are_no_training_positives(deployment: Deployment) -> None:
    catalog = Catalog(deployment)
    for user in ("a", "b"):
        catalog.create_user(UserIn(user_id=user, home_region="us"))
    for v in range(4):
        catalog.create_video(VideoIn(video_id=f"x{v}", duration_ms=10_000, regions=["us"]))
    planted = [
        ("a", "x0", "like"),
        ("a", "x0", "unlike"),  # taken back
        ("a", "x1", "like"),
        ("a", "x1", "unlike"),
        ("a", "x1", "like"),  # liked again
        ("a", "x2", "unlike"),  # nothing to take back
        ("b", "x0", "like"),  # another user's like of x0 stands
        ("b", "x3", "share"),
        ("b", "x3", "unlike"),  # a share is not taken back
    ]
    Ingestor(deployment).ingest(
        [
            {"event_id": f"p{k}", "user_id": u, "video_id": v, "type": t}
            for k, (u, v, t) in enumerate(planted)
        ]
    )
    protocol = build_protocol(deployment, lambda region, store: ({}, set()), log=lambda _: None)
    us = next(r for r in protocol.regions if r.region == "us")
    positives = {
        (user, protocol.video_ids[item])
        for user, row in us.user_index.items()
        for item in us.x[row].indices
    }
    assert positives == {("a", "x1"), ("b", "x0"), ("b", "x3")}
    assert protocol.train_counts == {"x0": 1.0, "x1": 1.0, "x3": 1.0}


def test_an_unlike_done_later_but_sent_first_takes_the_like_back(deployment: Deployment) -> None:
    """By the client's time: the like at 2 s sent after the unlike at 3 s is none; the
    like at 5 s sent after the unlike at 4 s counts."""
    catalog = Catalog(deployment)
    catalog.create_user(UserIn(user_id="a", home_region="us"))
    for v in range(2):
        catalog.create_video(VideoIn(video_id=f"x{v}", duration_ms=10_000, regions=["us"]))
    planted = [("x0", "unlike", 3), ("x0", "like", 2), ("x1", "unlike", 4), ("x1", "like", 5)]
    results = (
        Ingestor(deployment)
        .ingest(
            [
                {"event_id": f"q{k}", "user_id": "a", "video_id": v, "type": t, "ts": 1.7e9 + s}
                for k, (v, t, s) in enumerate(planted)
            ]
        )
        .results
    )
    assert all(r.status == "stored" for r in results), results
    protocol = build_protocol(deployment, lambda region, store: ({}, set()), log=lambda _: None)
    us = next(r for r in protocol.regions if r.region == "us")
    assert protocol.train_counts == {"x1": 1.0}
    assert [protocol.video_ids[i] for i in us.x[us.user_index["a"]].indices] == ["x1"]
