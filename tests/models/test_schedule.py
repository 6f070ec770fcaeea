"""A region's models catch up with its store on a schedule: a video uploaded after
training reaches feeds once the serving process's training child has run."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.cli.app import app
from fyp.config import TrainingConfig
from fyp.events.ingest import Ingestor
from fyp.feed.ahead import ranks_ahead
from fyp.feed.service import FeedService
from fyp.models.artifacts import ARRAYS, MANIFEST, current_version, models_dir
from fyp.models.schedule import TrainingScheduler, config_reason, retrain_reason
from fyp.models.training import train_and_publish
from fyp.moderation import Moderator
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment

USERS, VIDEOS = 30, 40


def video(video_id: str, n: int) -> VideoIn:
    return VideoIn(
        video_id=video_id,
        creator_id=f"u{n % 8}",
        duration_ms=15_000,
        regions=["us"],
        categories=[f"cat{n % 5}"],
        tags=[str(n % 7)],
    )


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.init(tmp_path / "dep", ["us"])
    catalog = Catalog(d)
    for u in range(USERS):
        catalog.create_user(UserIn(user_id=f"u{u}", home_region="us", birth_year=1990))
    for v in range(VIDEOS):
        catalog.create_video(video(f"v{v}", v))
    rng = random.Random(5)
    Ingestor(d).ingest(
        [
            {
                "event_id": f"e{k}",
                "user_id": f"u{rng.randrange(USERS)}",
                "video_id": f"v{rng.randrange(VIDEOS)}",
                "type": "play",
                "watch_ms": rng.choice([1_000, 30_000]),
            }
            for k in range(600)
        ]
    )
    Moderator(d).run("us")
    train_and_publish(
        d.store("us"),
        d.config.region_dir("us"),
        augment=ranks_ahead(d, "us"),
        consent=ConsentPolicy(),
    )
    try:
        yield d
    finally:
        d.close()


def shown_everywhere(d: Deployment) -> set[str]:
    service = FeedService(d)
    return {i.video_id for u in range(USERS) for i in service.feed(f"u{u}", n=10).items}


def reason(d: Deployment) -> str | None:
    return retrain_reason(d.store("us"), d.config.region_dir("us"))


def test_a_freshly_trained_region_is_not_behind(dep: Deployment) -> None:
    assert reason(dep) is None


def test_no_model_and_new_events_are_reasons_to_train(tmp_path: Path, dep: Deployment) -> None:
    with Deployment.init(tmp_path / "empty", ["us"]) as empty:
        assert retrain_reason(empty.store("us"), empty.config.region_dir("us")) == "no model yet"
    Ingestor(dep).ingest([{"event_id": "late", "user_id": "u1", "video_id": "v2", "type": "like"}])
    assert reason(dep) == (
        f"events changed since version {current_version(dep.config.region_dir('us'))} "
        "(600 learned, 601 now)"
    )


def test_an_upload_after_training_reaches_feeds_once_the_scheduled_child_ran(
    dep: Deployment,
) -> None:
    region_dir = dep.config.region_dir("us")
    before = current_version(region_dir)
    Catalog(dep).create_video(video("new-upload", 3))
    Moderator(dep).run("us")  # approved: eligible, but the live model has never seen it
    assert reason(dep) == f"the catalogue changed since version {before}"
    assert "new-upload" not in shown_everywhere(dep)

    scheduler = TrainingScheduler(dep.config)
    assert scheduler.tick() and (scheduler.runs, scheduler.failures) == (1, 0)
    after = current_version(region_dir)
    assert after != before and reason(dep) is None
    service = FeedService(dep)
    new = [
        i
        for u in range(USERS)
        for i in service.feed(f"u{u}", n=10, record=False).items
        if i.video_id == "new-upload"
    ]
    assert new and {(i.source, i.reason) for i in new} == {("fresh", "new on fyp")}

    assert scheduler.tick()  # nothing changed since: the child trains nothing
    assert current_version(region_dir) == after and scheduler.runs == 2


def test_a_failing_child_is_counted_and_logged(
    dep: Deployment, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = replace(dep.config, root=tmp_path / "not-a-deployment")
    scheduler = TrainingScheduler(gone)
    with caplog.at_level(logging.ERROR, logger="fyp.background"):
        assert not scheduler.tick()
    assert (scheduler.runs, scheduler.failures) == (1, 1)
    assert "fyp-training: `fyp train" in caplog.text and "not found" in caplog.text


def test_every_zero_leaves_training_to_cron(dep: Deployment) -> None:
    off = TrainingScheduler(replace(dep.config, training=TrainingConfig(every_minutes=0)))
    off.start()
    assert off._thread is None


def test_train_if_changed_says_what_it_skips_and_why(dep: Deployment) -> None:
    root = str(dep.config.root)
    before = current_version(dep.config.region_dir("us"))
    skipped = CliRunner().invoke(app, ["train", root, "--if-changed"])
    assert skipped.exit_code == 0, skipped.output
    assert "us: unchanged since the live model; not trained" in skipped.output
    assert current_version(dep.config.region_dir("us")) == before
    Ingestor(dep).ingest([{"event_id": "late", "user_id": "u1", "video_id": "v2", "type": "like"}])
    trained = CliRunner().invoke(app, ["train", root, "--if-changed", "--jobs", "1"])
    assert trained.exit_code == 0, trained.output
    assert (
        "us: events changed since version" in trained.output
        and "trained 1 region" in trained.output
    )
    assert current_version(dep.config.region_dir("us")) != before


def test_train_if_changed_retrains_a_live_model_whose_arrays_are_damaged(dep: Deployment) -> None:
    """The review's case: arrays.npz damaged under an unchanged manifest was "unchanged
    since the live model", so the region went on without a usable model."""
    root, region_dir = str(dep.config.root), dep.config.region_dir("us")
    before = current_version(region_dir)
    assert before is not None
    arrays = models_dir(region_dir) / before / ARRAYS
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit's worth of rot, size unchanged
    arrays.write_bytes(bytes(data))
    why = f"the live model {before} is damaged ({ARRAYS} does not match its manifest's sha256"
    assert (reason(dep) or "").startswith(why)
    trained = CliRunner().invoke(app, ["train", root, "--if-changed", "--jobs", "1"])
    assert trained.exit_code == 0, trained.output
    assert f"us: {why}" in " ".join(trained.output.split()) and "trained 1 region" in trained.output
    assert current_version(region_dir) != before and reason(dep) is None


def test_the_next_training_removes_what_a_killed_artifact_write_left(dep: Deployment) -> None:
    """`fyp train` killed while writing its artifact left models/.<version>.tmp/arrays.npz,
    user ids in it, and nothing ever removed it (chaos report #2). The next training's
    publish removes it (and a killed removal's .deleting), under the models lock."""
    region_dir = dep.config.region_dir("us")
    live = current_version(region_dir)
    assert live is not None
    whole = (models_dir(region_dir) / live / ARRAYS).read_bytes()
    cut = models_dir(region_dir) / ".20260101T000000-000000001.tmp"
    cut.mkdir()
    (cut / ARRAYS).write_bytes(whole[: len(whole) * 2 // 3])
    empty = models_dir(region_dir) / ".20260101T000000-000000002.tmp"  # killed at mkdir
    empty.mkdir()
    (empty / ARRAYS).touch()
    deleting = models_dir(region_dir) / ".20250101T000000-000000003.deleting"
    deleting.mkdir()
    (deleting / ARRAYS).write_bytes(whole)
    trained = CliRunner().invoke(app, ["train", str(dep.config.root), "--jobs", "1"])
    assert trained.exit_code == 0, trained.output
    assert not cut.exists() and not empty.exists() and not deleting.exists()
    assert current_version(region_dir) != live
    left = sorted(p.name for p in models_dir(region_dir).iterdir())
    assert left == sorted([".lock", "current", live, str(current_version(region_dir))])


def test_a_manifest_without_an_arrays_hash_is_checked_by_loading_the_arrays(
    dep: Deployment,
) -> None:
    region_dir = dep.config.region_dir("us")
    version = current_version(region_dir)
    assert version is not None
    path = models_dir(region_dir) / version / MANIFEST
    older = {k: v for k, v in json.loads(path.read_text("utf-8")).items() if k != "arrays_sha256"}
    path.write_text(json.dumps(older), "utf-8")  # as written before the hash was recorded
    assert reason(dep) is None
    arrays = models_dir(region_dir) / version / ARRAYS
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
    assert (reason(dep) or "").startswith(
        f"the live model {version} is damaged (cannot read model arrays"
    )


def test_train_if_changed_retrains_for_other_feed_settings(dep: Deployment) -> None:
    """Orders ranked ahead under other ``[feed.sources]``/``[feed.rerank]`` are served to
    nobody: ``--if-changed`` ranks them again (then has nothing to do)."""
    from fyp.config import FeedConfig, load_config, write_config

    root, region_dir = str(dep.config.root), dep.config.region_dir("us")
    before = current_version(region_dir)
    tuned = FeedConfig.from_dict({"sources": {"fresh": 0}, "rerank": {"exploration_share": 0.1}})
    write_config(replace(load_config(dep.config.root), feed=tuned))
    trained = CliRunner().invoke(app, ["train", root, "--if-changed", "--jobs", "1"])
    assert trained.exit_code == 0, trained.output
    assert "us: the feed's settings ([ranking], [feed.sources], [feed.rerank]) changed" in (
        " ".join(trained.output.split())
    )
    assert current_version(region_dir) != before
    again = CliRunner().invoke(app, ["train", root, "--if-changed"])
    assert "us: unchanged since the live model; not trained" in again.output, again.output


def with_rerank(d: Deployment, **changes: float) -> Any:
    feed = d.config.feed
    return replace(d.config, feed=replace(feed, rerank=replace(feed.rerank, **changes)))


def test_a_restart_with_other_settings_trains_at_once(
    dep: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """Orders ranked under other settings are served to nobody: the first round comes
    when the schedule starts, not an interval later."""
    assert config_reason(dep.config, "us") is None
    assert not TrainingScheduler(dep.config).due_now()
    edited = with_rerank(dep, creator_decay=0.7)
    version = current_version(dep.config.region_dir("us"))
    assert config_reason(edited, "us") == (
        "the feed's settings ([ranking], [feed.sources], [feed.rerank]) changed since "
        f"version {version} ranked its orders"
    )

    class Counted(TrainingScheduler):
        ticked = threading.Event()

        def tick(self) -> bool:
            self.ticked.set()
            return True

    for config, due in ((dep.config, False), (edited, True)):
        scheduler = Counted(config)  # an hour's interval: only a start-up round can tick
        with caplog.at_level(logging.INFO, logger="fyp.background"):
            scheduler.start()
            try:
                assert scheduler.ticked.wait(10 if due else 0.5) is due
            finally:
                scheduler.stop()
        assert ("region us: the feed's settings" in caplog.text) is due
        Counted.ticked = threading.Event()


def test_config_reason_needs_a_readable_model(tmp_path: Path, dep: Deployment) -> None:
    with Deployment.init(tmp_path / "empty", ["us"]) as empty:
        assert config_reason(empty.config, "us") is None  # the round says "no model yet"
    region_dir = dep.config.region_dir("us")
    version = current_version(region_dir)
    assert version is not None
    (models_dir(region_dir) / version / MANIFEST).write_text("{", encoding="utf-8")
    assert config_reason(with_rerank(dep, creator_decay=0.7), "us") is None
