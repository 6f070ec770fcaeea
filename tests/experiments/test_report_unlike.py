"""An experiment report's like rate is over likes not taken back (``unlike``), worked out
by hand, from a SQLite and a PostgreSQL store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from test_experiment_report import AFTER, BEFORE, EXPERIMENT, EXPOSED_MS, ids, metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from consent_helpers import BACKENDS, on_backend

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.experiments.exposures import record_exposure
from fyp.experiments.report import report
from fyp.regions.deployment import Deployment


def planted(d: Deployment) -> None:
    (c1,) = ids(d, "control", 1)
    v1, v2 = ids(d, "b", 2)
    catalog = Catalog(d)
    for user, arm in ((c1, "control"), (v1, "b"), (v2, "b")):
        catalog.create_user(UserIn(user_id=user, home_region="us", birth_year=1990))
        assert record_exposure(d.store("us"), "exp", arm, user, EXPOSED_MS)
    for v in range(1, 5):
        catalog.create_video(
            VideoIn(video_id=f"x{v}", creator_id=c1, duration_ms=10_000, regions=["us"])
        )
    planted = [  # in this (seq) order
        (c1, "x1", "like", AFTER),
        (c1, "x1", "unlike", AFTER),  # taken back
        (c1, "x2", "like", AFTER),
        (c1, "x2", "unlike", AFTER),
        (c1, "x2", "like", AFTER),  # liked again: a like
        (c1, "x3", "unlike", AFTER),  # nothing to take back; a video acted on
        (c1, "x4", "like", BEFORE),  # before the start: never counted
        (c1, "x4", "unlike", AFTER),
        (v1, "x1", "like", AFTER),
        (v1, "x2", "like", AFTER),
        (v1, "x2", "unlike", AFTER),
        (v2, "x1", "unlike", AFTER),
        (v2, "x1", "like", AFTER),  # the unlike came first: a like
    ]
    events: list[dict[str, Any]] = [
        {"event_id": f"p{k}", "user_id": u, "video_id": v, "type": t, "ts": ts}
        for k, (u, v, t, ts) in enumerate(planted)
    ]
    assert all(r.status == "stored" for r in Ingestor(d).ingest(events).results)


@pytest.mark.parametrize("backend", BACKENDS)
def test_like_rate_is_over_likes_not_taken_back(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "dep"
    with on_backend(backend, monkeypatch):
        Deployment.init(root, ["us"]).close()
        with (root / "fyp.toml").open("a", encoding="utf-8") as f:
            f.write(EXPERIMENT)
        with Deployment.open(root) as d:
            planted(d)
            found = report(d, "exp")
    control, b = metrics(found, "control"), metrics(found, "b")
    # c1: x2 of x1..x4; v1: x1 of x1, x2; v2: x1 of x1
    assert control["m"]["like_rate"]["mean"] == pytest.approx(1 / 4)
    assert b["m"]["like_rate"]["mean"] == pytest.approx((1 / 2 + 1) / 2)
    assert b["m"]["skip_rate"]["mean"] == control["m"]["skip_rate"]["mean"] == 0.0


def test_an_unlike_done_later_but_sent_first_takes_the_like_back() -> None:
    """By the client's time, whichever arrived first: the like at 2 sent after the
    unlike at 3 is no like; the like at 5 sent after the unlike at 4 is one."""
    from dataclasses import astuple

    from fyp.events.schema import StoredEvent, play_labels
    from fyp.experiments.exposures import Exposure
    from fyp.experiments.report import per_user

    def event(seq: int, video: str, kind: str, ts: int) -> StoredEvent:
        return StoredEvent(
            seq, f"e{seq}", "u", video, kind, ts, None, *astuple(play_labels(None, 1))
        )

    sent = [
        event(1, "x1", "unlike", 3),
        event(2, "x1", "like", 2),
        event(3, "x2", "unlike", 4),
        event(4, "x2", "like", 5),
    ]
    exposed = {"u": Exposure("control", 0)}
    assert per_user(sent, exposed, 0, None)["u"]["like_rate"] == 0.5
