"""Feeds served from orders ranked ahead: the same pipeline's output, used only while
the user's profile and events are unchanged, with the same final checks."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from fyp.catalog.service import Catalog
from fyp.config import FeedConfig
from fyp.events.ingest import Ingestor
from fyp.feed.ahead import ranks_ahead
from fyp.feed.service import FeedService
from fyp.models.artifacts import current_version, read_arrays
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment
from fyp.sovereignty.remnants import artifact_names


def stored_order(d: Deployment, user: str) -> list[str]:
    service = FeedService(d)
    model = service.model(d.home_region(user))
    assert model.ahead is not None
    order = model.ahead.get(user)
    assert order is not None
    return [str(model.video_ids[i]) for i in order.items.tolist()]


def test_training_ranks_every_user_of_the_region_ahead(trained: Deployment) -> None:
    for region in trained.regions:
        model = FeedService(trained).model(region)
        users = {u.user_id for u in trained.store(region).iter_users()}
        assert model.ahead is not None and len(model.ahead) == len(users)
        for user in users:
            order = model.ahead.get(user)
            assert order is not None
            # the page windows' exploration slots come on top (120 videos: enough for all)
            length = trained.config.feed.rank_ahead
            assert length <= len(order.items) <= length * 1.25
            assert len(set(order.items.tolist())) == len(order.items)


def test_the_first_pages_are_the_stored_order_and_never_repeat(trained: Deployment) -> None:
    order = stored_order(trained, "u2")
    service = FeedService(trained)
    shown: list[str] = []
    cursor = None
    for _ in range(4):
        page = service.feed("u2", n=10, cursor=cursor)
        assert all(i.reason and i.source for i in page.items)
        shown += [i.video_id for i in page.items]
        cursor = page.cursor
    assert len(shown) == len(set(shown)) == 40
    # the same videos as the order, in its order (creators kept apart may swap a pair)
    assert set(shown[:10]) <= set(order[:13])
    assert sorted(shown, key=order.index) == shown or len(set(shown) - set(order)) == 0


def test_the_orders_are_used_up_and_then_ranked_again_without_repeats(
    trained: Deployment,
) -> None:
    service = FeedService(trained)
    stored = len(stored_order(trained, "u4"))
    shown = [i.video_id for _ in range(9) for i in service.feed("u4", n=10).items]
    assert len(shown) == len(set(shown)) > stored + 10


def test_paging_through_an_order_without_events_ranks_further_ahead(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an event the next order is one page ahead (the next event usually makes it
    stale); a user who then pages through it without one gets ``rank_ahead`` videos."""
    service = FeedService(trained)
    lengths: list[int] = []
    rank = service._rank_long

    def counting(*args: Any) -> Any:
        lengths.append(args[-1])
        return rank(*args)

    monkeypatch.setattr(service, "_rank_long", counting)
    liked = stored_order(trained, "u3")[-1]
    event = {"event_id": "p-1", "user_id": "u3", "video_id": liked, "type": "like"}
    assert Ingestor(trained).ingest([event]).results[0].status == "stored"
    shown = [i.video_id for _ in range(4) for i in service.feed("u3", n=5).items]
    assert len(shown) == len(set(shown)) == 20
    assert lengths == [10, trained.config.feed.rank_ahead]  # pages 1-2, then 3-4 and on


def test_pages_of_an_order_are_tracked_without_reading_the_served_log(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What this process serves from an order (stored, or ranked here when one is used
    up) is kept in step as it is recorded: the served log is read again only when
    another process served the user (the test above)."""
    service = FeedService(trained)
    reads: list[int] = []
    served_since = service._ahead.served_since

    def counting(user: str, model: Any, order: Any, seq: int, read: Any) -> Any:
        return served_since(user, model, order, seq, lambda ms: reads.append(ms) or read(ms))

    monkeypatch.setattr(service._ahead, "served_since", counting)
    stored = len(stored_order(trained, "u5"))
    shown = [i.video_id for _ in range(12) for i in service.feed("u5", n=10).items]
    assert len(shown) == len(set(shown)) > stored + 20  # two orders ranked here
    assert reads == []


def test_an_event_makes_the_order_stale_at_once(trained: Deployment) -> None:
    """Read-your-writes: "not interested" removes the creator from the very next page,
    though the stored order was ranked before it and holds the creator's videos."""
    order = stored_order(trained, "u6")
    catalog = Catalog(trained)
    video = order[0]
    creator = catalog.get_video(video).creator_id
    assert any(catalog.get_video(v).creator_id == creator for v in order[1:])
    Ingestor(trained).ingest(
        [{"event_id": "ni-a", "user_id": "u6", "video_id": video, "type": "not_interested"}]
    )
    page = FeedService(trained).feed("u6", n=20)
    assert page.items
    assert all(catalog.get_video(i.video_id).creator_id != creator for i in page.items)


def test_another_process_serving_the_user_is_seen(trained: Deployment) -> None:
    """Two workers share the stored order; the served counter tells each what the other
    showed."""
    a, b = FeedService(trained), FeedService(trained)
    with Deployment.open(trained.config.root) as other:
        b = FeedService(other)
        first = [i.video_id for i in a.feed("u8", n=10).items]
        second = [i.video_id for i in b.feed("u8", n=10).items]
        third = [i.video_id for i in a.feed("u8", n=10).items]
    assert len(set(first + second + third)) == 30


def test_the_final_checks_apply_to_pages_from_orders(trained: Deployment) -> None:
    order = stored_order(trained, "u10")
    banned = set(order[:5])

    def check(video_ids, state):  # type: ignore[no-untyped-def]
        return {v: "taken down" for v in video_ids if v in banned}

    page = FeedService(trained, eligibility=check).feed("u10", n=10, record=False)
    assert len(page.items) == 10 and not {i.video_id for i in page.items} & banned

    def broken(video_ids, state):  # type: ignore[no-untyped-def]
        raise RuntimeError("classifier down")

    assert FeedService(trained, eligibility=broken).feed("u10", n=10, record=False).items == []


def test_debug_runs_the_pipeline_and_lists_the_removals(trained: Deployment) -> None:
    service = FeedService(trained)
    service.feed("u12", n=10)  # served from the order: nothing was filtered on the way
    page = service.feed("u12", n=10, debug=True)
    assert any(r["stage"] == "already_seen" for r in page.removed)


def test_erasure_removes_the_users_order_from_the_artifact(trained: Deployment) -> None:
    from fyp.sovereignty.erasure import Eraser

    region = trained.home_region("u14")
    region_dir = trained.config.region_dir(region)
    before = current_version(region_dir)
    assert before is not None
    assert "ahead_user_ids" in artifact_names(region_dir, before, "u14")
    others = len(read_arrays(region_dir, before)["ahead_user_ids"]) - 1
    Eraser(trained).erase("u14")
    after = current_version(region_dir)
    assert after is not None and after != before
    arrays = read_arrays(region_dir, after)
    assert "u14" not in arrays["ahead_user_ids"].tolist()
    assert len(arrays["ahead_user_ids"]) == others  # everyone else keeps theirs
    assert FeedService(trained).feed("u16", n=5).items


def test_rank_ahead_zero_ranks_only_the_page(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = replace(trained.config.feed, rank_ahead=0)
    monkeypatch.setattr(trained, "config", replace(trained.config, feed=feed))
    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    train_and_publish(
        store, region_dir, augment=ranks_ahead(trained, "us"), consent=ConsentPolicy()
    )
    service = FeedService(trained)
    assert service.model("us").ahead is None
    shown = [i.video_id for _ in range(3) for i in service.feed("u2", n=10).items]
    assert len(shown) == len(set(shown)) == 30
    assert not service._ahead._slots  # nothing kept between pages


def test_rank_ahead_is_read_from_the_config() -> None:
    assert FeedConfig.from_dict({"rank_ahead": 30}).rank_ahead == 30
    assert FeedConfig().rank_ahead == 50
    for bad in (-1, 1.5, True, "50"):
        with pytest.raises(Exception, match="rank_ahead"):
            FeedConfig.from_dict({"rank_ahead": bad})


def test_an_order_older_than_a_served_record_skips_what_was_served(
    trained: Deployment,
) -> None:
    order = stored_order(trained, "u18")
    served_log = trained.served_log(trained.home_region("u18"))
    served_log.record_served("u18", order[:3], time.time_ns() // 1_000_000)  # another worker
    page = FeedService(trained).feed("u18", n=10)
    assert set(order[:3]).isdisjoint(i.video_id for i in page.items)


def test_fyp_train_ranks_ahead_in_one_process_per_region(trained: Deployment) -> None:
    from typer.testing import CliRunner

    from fyp.cli.app import app

    root = trained.config.root
    before = {r: current_version(trained.config.region_dir(r)) for r in trained.regions}
    served_log = trained.served_log(trained.home_region("u18"))
    long_ago = time.time_ns() // 1_000_000 - trained.config.feed.seen_window_ms - 60_000
    served_log.record_served("u18", ["v-long-ago"], long_ago)
    counter = served_log.user_version("u18")
    result = CliRunner().invoke(app, ["train", str(root), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "feeds ranked ahead in" in result.output and "trained 2 region(s)" in result.output
    # pages older than the seen window are forgotten, the served counter stays
    assert "forgot 1 served pages beyond the window" in result.output
    assert "v-long-ago" not in served_log.served_since("u18", 0)
    assert served_log.user_version("u18") == counter
    for region in trained.regions:
        region_dir = trained.config.region_dir(region)
        after = current_version(region_dir)
        assert after is not None and after != before[region]
        users = {u.user_id for u in trained.store(region).iter_users()}
        assert set(read_arrays(region_dir, after)["ahead_user_ids"].tolist()) == users
    refused = CliRunner().invoke(app, ["train", str(root), "--region", "mars"])
    assert refused.exit_code != 0 and "mars" in str(refused.exception)  # main() prints it
