"""Likes resolve by when the user acted (the event's ``ts``), not by when the event
arrived, in the feed's user state read from the store and in training alike: an unlike
tapped later but sent first takes back the like sent after it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService
from fyp.models.artifacts import EventHasher
from fyp.models.ranker import OBJECTIVES
from fyp.models.training import read_interactions
from fyp.regions.deployment import Deployment


def test_an_unlike_done_later_but_sent_first_takes_the_like_back(trained: Deployment) -> None:
    store = trained.store("us")
    acted = {e.video_id for e in store.user_events("u0", 10_000)}
    fresh = [f"v{k}" for k in range(120) if f"v{k}" not in acted][:2]
    t = time.time() - 60

    def at(s: float) -> str:
        return datetime.fromtimestamp(t + s, UTC).isoformat()

    taken, kept = fresh
    sent = [  # in the order they arrive
        (taken, "unlike", 3),
        (taken, "like", 2),  # tapped before the unlike, on a device that was offline
        (kept, "unlike", 2),
        (kept, "like", 3),
    ]
    results = (
        Ingestor(trained)
        .ingest(
            [
                {"event_id": f"late{k}", "user_id": "u0", "video_id": v, "type": kind, "ts": at(s)}
                for k, (v, kind, s) in enumerate(sent)
            ]
        )
        .results
    )
    assert all(r.status == "stored" for r in results), results
    service = FeedService(trained)
    model = service.model("us")
    state = service.state("u0", model)
    positives = {str(model.video_ids[i]) for i in state.positives}
    assert kept in positives and taken not in positives
    assert taken in state.seen  # acted on all the same
    data = read_interactions(store.iter_events(), dict(model.video_index), EventHasher())
    u0 = data.user_index["u0"]
    liked = {
        str(model.video_ids[i])
        for u, i, k in zip(data.obj_u, data.obj_i, data.obj_k, strict=True)
        if u == u0 and k == OBJECTIVES.index("like")
    }
    assert liked == {kept}
