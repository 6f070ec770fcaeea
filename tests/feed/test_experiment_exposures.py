"""Exposures through the real feed service and HTTP app: a user's first page under an
experiment is recorded once, in their home region, with the arm that served it; the
report counts users by it; after ``end`` everyone is control and nothing is recorded.

Run again on PostgreSQL stores and on served logs on Redis (tests/storage/)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from experiment_helpers import US_USERS, arms_of, ranked_live, with_experiment
from fyp.access.keys import KeyStore
from fyp.events.ingest import Ingestor
from fyp.experiments import exposures as exposures_module
from fyp.experiments.arms import region_record
from fyp.experiments.config import CONTROL
from fyp.experiments.exposures import exposures
from fyp.experiments.report import report
from fyp.feed.ahead import ranks_ahead
from fyp.feed.service import FeedService
from fyp.models.schedule import retrain_reason
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

EU_USERS = [f"u{k}" for k in range(1, 60, 2)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The users an exposure was written for from now on (the real write, counted)."""
    written: list[str] = []
    real = exposures_module.record_exposure

    def spy(store: Any, experiment: str, variant: str, user_id: str, ts_ms: int) -> bool:
        written.append(user_id)
        return real(store, experiment, variant, user_id, ts_ms)

    monkeypatch.setattr(exposures_module, "record_exposure", spy)
    return written


def api(d: Deployment) -> TestClient:
    """The app's own kind of client: a feed key (pages are served, not looked at)."""
    _, key = KeyStore(d).create("app", ["feed"])
    return TestClient(create_app(d), headers={"Authorization": f"Bearer {key}"})


def get_page(client: TestClient, user: str) -> dict[str, Any]:
    resp = client.get(f"/v1/users/{user}/feed", params={"n": 3})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_the_first_page_is_recorded_once_in_the_home_region(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_experiment(trained, {"share": 0.5, "exploration_share": 0.3}, ["us", "eu"])
    written = count_writes(monkeypatch)
    service = FeedService(trained)
    us_user, eu_user, unserved = US_USERS[0], EU_USERS[0], US_USERS[1]
    before = now_ms()
    first = service.feed(us_user, n=5)
    after = now_ms()
    assert first.experiment is not None and first.items
    held = exposures(trained.store("us"), "exp")
    assert set(held) == {us_user} and held[us_user].variant == first.experiment.variant
    assert before <= held[us_user].exposed_at_ms <= after
    service.feed(us_user, n=5, cursor=first.cursor)  # the next page: nothing written
    service.feed(unserved, n=5, record=False)  # a page not served (an operator's look)
    assert written == [us_user]
    page = service.feed(eu_user, n=5)
    assert page.experiment is not None
    # each user's exposure is in their own region's store only
    assert set(exposures(trained.store("eu"), "exp")) == {eu_user}
    assert set(exposures(trained.store("us"), "exp")) == {us_user}

    # another serving process writes once for each user it has not recorded itself:
    # for one exposed already, a write that changes nothing (the first stays)
    other = FeedService(trained)
    other.warm()
    written.clear()
    for user in (us_user, eu_user, us_user, unserved, unserved):
        other.feed(user, n=3)
    assert written == [us_user, eu_user, unserved]
    assert exposures(trained.store("us"), "exp")[us_user] == held[us_user]  # the first stays
    assert set(exposures(trained.store("us"), "exp")) == {us_user, unserved}


def test_a_process_remembers_a_bounded_number_of_exposed_users(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory per region and experiment is bounded: the least recently served are
    forgotten first, and a forgotten user's next page writes again without moving
    their first exposure."""
    with_experiment(trained, {"share": 0.5}, ["us"])
    written = count_writes(monkeypatch)
    service = FeedService(trained)
    assert service._exposures is not None
    service._exposures.capacity = 2
    a, b, c = US_USERS[:3]
    for user in (a, b, a, c):  # c pushes out b, the least recently served
        service.feed(user, n=3)
    assert written == [a, b, c]
    assert service._exposures.known("us", "exp") == 2
    first = exposures(trained.store("us"), "exp")
    written.clear()
    for user in (a, c, b):  # a and c remembered; b written again, a no-op
        service.feed(user, n=3)
    assert written == [b]
    assert exposures(trained.store("us"), "exp") == first


def test_a_share_change_keeps_exposed_users_in_their_first_arm(trained: Deployment) -> None:
    """Users served under share 0.5 stay in the arm of their first page in the report
    after the share drops to 0.25; their events before that page, and users never
    served, are not counted."""
    with_experiment(trained, {"share": 0.5, "exploration_share": 0.3}, ["us"])
    then = arms_of(trained)
    early = datetime.now(UTC) - timedelta(minutes=1)  # before anyone's page, after the start
    Ingestor(trained).ingest(  # an event before the user's exposure: never counted
        [
            {
                "event_id": "x0",
                "user_id": then["heads"][0],
                "video_id": "v1",
                "type": "like",
                "ts": early,
            }
        ]
    )
    served = US_USERS[:20]
    with api(trained) as client:
        for user in served:
            body = get_page(client, user)
            assert body["experiment"]["variant"] == ("heads" if user in then["heads"] else CONTROL)
    with_experiment(trained, {"share": 0.25, "exploration_share": 0.3}, ["us"])
    now = arms_of(trained)
    moved = [u for u in served if u in then["heads"] and u not in now["heads"]]
    assert moved  # in the variant first, control now
    with api(trained) as client:  # a restarted server: the new share
        for user in served:
            body = get_page(client, user)
            assert body["experiment"]["variant"] == ("heads" if user in now["heads"] else CONTROL)
    held = exposures(trained.store("us"), "exp")
    assert set(held) == set(served)
    assert all(held[u].variant == ("heads" if u in then["heads"] else CONTROL) for u in served)
    # after their pages: a short play by every user first served as control, a whole one
    # by everyone else (videos of 15 s), so the arms' long-play rates are 0 and 1 (and
    # would not be if a user never served counted)
    Ingestor(trained).ingest(
        [
            {
                "event_id": f"x-{user}",
                "user_id": user,
                "video_id": "v2",
                "type": "play",
                "watch_ms": 1_000 if user in held and held[user].variant == CONTROL else 15_000,
            }
            for user in US_USERS
        ]
    )
    (region,) = report(trained, "exp")["regions"]
    arms = {a["variant"]: a for a in region["arms"]}
    first_heads = [u for u in served if u in then["heads"]]
    assert arms["heads"]["users"] == len(first_heads)
    assert arms[CONTROL]["users"] == len(served) - len(first_heads)
    assert arms["heads"]["metrics"]["long_play_rate"]["mean"] == 1.0
    assert arms[CONTROL]["metrics"]["long_play_rate"]["mean"] == 0.0
    assert arms["heads"]["metrics"]["like_rate"]["mean"] == 0.0  # the early like: before
    assert region["srm"]["observed"] == {CONTROL: arms[CONTROL]["users"], "heads": len(first_heads)}
    assert region["srm"]["expected"] == {CONTROL: 15.0, "heads": 5.0}  # the shares now


def test_after_the_end_everyone_is_control_and_nothing_is_recorded(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_experiment(trained, {"share": 0.5, "exploration_share": 0.3}, ["us"])
    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    train_and_publish(
        store, region_dir, augment=ranks_ahead(trained, "us"), consent=ConsentPolicy()
    )  # for the arms
    arms = arms_of(trained)
    ended = "2025-02-01T00:00:00Z"
    with_experiment(trained, {"share": 0.5, "exploration_share": 0.3}, ["us"], end=ended)
    written = count_writes(monkeypatch)
    service = FeedService(trained)
    for user in US_USERS[:6]:
        page = service.feed(user, n=5)
        assert page.experiment is None and page.items
        assert "experiment" not in page.to_dict()
    assert written == [] and exposures(store, "exp") == {}
    with api(trained) as client:
        body = get_page(client, arms["heads"][0])
        assert "experiment" not in body
    assert service.arm(arms["heads"][0], "us") is None
    # orders ranked for control still serve control's users; the variant's are ranked live
    assert ranked_live(FeedService(trained), US_USERS, monkeypatch) == set(arms["heads"])
    # and `fyp train --if-changed` ranks everyone as control again
    assert region_record(trained.config, "us") is None
    assert retrain_reason(store, region_dir, None) is not None
    train_and_publish(
        store, region_dir, augment=ranks_ahead(trained, "us"), consent=ConsentPolicy()
    )
    assert retrain_reason(store, region_dir, None) is None
    assert ranked_live(FeedService(trained), US_USERS, monkeypatch) == set()


def test_the_end_is_checked_per_request(trained: Deployment) -> None:
    soon = now_ms() + 60_000
    end = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(soon // 1000)) + "Z"
    with_experiment(trained, {"share": 1.0, "exploration_share": 0.3}, ["us"], end=end)
    service = FeedService(trained)
    experiment = trained.config.experiments[0]
    assert experiment.end_ms is not None
    user = US_USERS[0]
    assert service.arm(user, "us") is not None  # running now
    arms = service._arms
    assert arms is not None
    assert arms.of(user, "us", experiment.end_ms - 1) is not None
    assert arms.of(user, "us", experiment.end_ms) is None
    page = service.feed(user, n=3)
    assert page.experiment is not None and page.experiment.variant == "heads"
    assert exposures(trained.store("us"), "exp")[user].variant == "heads"


def test_before_the_start_everyone_is_control_and_nothing_is_recorded(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declared experiment waits for its start: no variant is served, no exposure is
    recorded and training ranks everyone as control; from the start it runs."""
    later = now_ms() + 3_600_000
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later // 1000)) + "Z"
    with_experiment(trained, {"share": 1.0, "exploration_share": 0.3}, ["us"], start=start)
    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    written = count_writes(monkeypatch)
    service = FeedService(trained)
    for user in US_USERS[:4]:
        page = service.feed(user, n=5)
        assert page.experiment is None and "experiment" not in page.to_dict()
    assert written == [] and exposures(store, "exp") == {}
    assert region_record(trained.config, "us") is None  # trained as control meanwhile
    experiment = trained.config.experiments[0]
    arms = service._arms
    assert arms is not None
    user = US_USERS[0]
    assert arms.of(user, "us", experiment.start_ms - 1) is None
    assert arms.of(user, "us", experiment.start_ms) is not None  # the variant, from then
    assert retrain_reason(store, region_dir, None) is None  # nothing to retrain for yet
    # from the start `fyp train --if-changed` (which asks with the record of now) retrains
    started = region_record(trained.config, "us", experiment.start_ms)
    assert started is not None and retrain_reason(store, region_dir, started) is not None


def test_a_serving_store_writes_the_exposure_with_the_served_logs_group(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No transaction of its own (it cost ~9 % of a page's CPU while users met the
    experiment): the exposure joins the served log's group commit, and the store's
    cache of user versions is not emptied by it."""
    with_experiment(trained, {"share": 1.0, "exploration_share": 0.3}, ["us"])
    store = trained.store("us")
    store.start_background_maintenance()  # as `fyp serve` runs it
    written = count_writes(monkeypatch)
    service = FeedService(trained)
    service.feed(US_USERS[0], n=3)  # models, snapshots and exposures loaded
    token = store.change_token()  # type: ignore[attr-defined]
    page = service.feed(US_USERS[1], n=3)
    assert page.experiment is not None and page.experiment.variant == "heads"
    assert written == []  # not written on its own
    assert store.change_token() == token  # type: ignore[attr-defined]
    held = exposures(store, "exp")  # a reader flushes this process's group first
    assert set(held) == set(US_USERS[:2]) and held[US_USERS[1]].variant == "heads"
