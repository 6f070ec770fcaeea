"""``GET /metrics``: Prometheus counts that match what the server answered, read by a
scraper's key, naming no user or video."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fyp.filelock import open_locked, unlock
from fyp.models.training import TrainParams, train_and_publish
from fyp.moderation.schedule import ModerationScheduler
from fyp.moderation.service import cell
from fyp.regions.background import schedule_lock
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

MakeKey = Callable[..., str]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, token: str) -> tuple[str, Samples]:
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    return resp.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def assert_no_for_you_page(after: Samples) -> None:
    for name in ("fyp_feed_pages_total", "fyp_feed_items_total"):
        assert not any(n == name for n, _ in after), name  # no For You page was served


@pytest.fixture
def served(client: TestClient, deployment: Deployment) -> TestClient:
    """Region us: 8 users, 30 moderated videos, a trained model."""
    rng = random.Random(3)
    for k in range(8):
        client.post("/v1/users", json={"user_id": f"u{k}", "home_region": "us", "birth_year": 1990})
    for k in range(30):
        body = {
            "video_id": f"v{k}",
            "creator_id": f"u{k % 8}",
            "caption": f"第{k}个视频，今天天气很好",
            "duration_ms": 15_000,
            "regions": ["us"],
            "tags": [str(k % 5)],
        }
        assert client.post("/v1/videos", json=body).status_code == 201
    events = [
        {
            "event_id": f"e{k}",
            "user_id": f"u{k % 8}",
            "video_id": f"v{rng.randrange(30)}",
            "type": "play",
            "watch_ms": rng.choice([1_000, 20_000]),
        }
        for k in range(200)
    ]
    assert client.post("/v1/events/batch", json={"events": events}).status_code == 200
    assert client.post("/v1/moderation/runs", json={"region": "us"}).status_code == 200
    train_and_publish(
        deployment.store("us"),
        deployment.config.region_dir("us"),
        TrainParams(ranker=False),
        consent=ConsentPolicy(),
    )
    return client


def test_pages_are_counted_by_whether_they_were_profiled(
    served: TestClient, make_key: MakeKey
) -> None:
    """An operator sees how much of the feed is the one not based on profiling."""
    scraper = make_key("metrics", name="prometheus")
    _, before = scrape(served, scraper)
    off = {"consents": {"personalised_feed": False}}
    reason = {"X-Fyp-Reason": "tests"}
    assert served.patch("/v1/users/u6", json=off, headers=reason).status_code == 200
    for user in ("u6", "u7"):  # the fast path
        assert served.get(f"/v1/users/{user}/feed", params={"n": 3}).status_code == 200
    debug = served.get("/v1/users/u6/feed", params={"n": 3, "debug": True})  # the route
    assert debug.json()["personalised"] is False
    _, after = scrape(served, scraper)

    def pages(profiled: str) -> float:
        name, region = "fyp_feed_pages_total", "us"
        return value(after, name, region=region, personalised=profiled) - value(
            before, name, region=region, personalised=profiled
        )

    assert pages("false") == 2 and pages("true") == 1


def test_counts_match_what_was_answered(
    served: TestClient, deployment: Deployment, make_key: MakeKey
) -> None:
    scraper = make_key("metrics", name="prometheus")
    _, before = scrape(served, scraper)
    items: dict[str, int] = {}
    for k in range(5):
        page = served.get(f"/v1/users/u{k}/feed", params={"n": 4})
        assert page.status_code == 200
        for item in page.json()["items"]:
            items[item["source"]] = items.get(item["source"], 0) + 1
    debug = served.get("/v1/users/u5/feed", params={"n": 3, "debug": True})  # the router's path
    for item in debug.json()["items"]:
        items[item["source"]] = items.get(item["source"], 0) + 1
    assert served.get("/v1/users/nobody/feed").status_code == 404
    event = {"event_id": "x1", "user_id": "u1", "video_id": "v1", "type": "like"}
    assert served.post("/v1/events", json=event).status_code == 201
    assert served.get("/v1/users/u1").status_code == 200

    _, after = scrape(served, scraper)
    feed = "/v1/users/{user_id}/feed"
    requests = "fyp_http_requests_total"
    assert (
        value(after, requests, route=feed, method="GET", status="200")
        - value(before, requests, route=feed, method="GET", status="200")
        == 6
    )
    assert value(after, requests, route=feed, method="GET", status="404") == 1
    assert value(after, requests, route="/v1/events", method="POST", status="201") == 1
    assert value(after, requests, route="/v1/users/{user_id}", method="GET", status="200") == 1
    assert value(after, requests, route="/v1/events/batch", method="POST", status="200") == 1
    assert value(after, "fyp_http_request_duration_seconds_count", route=feed) == 7 + value(
        before, "fyp_http_request_duration_seconds_count", route=feed
    )
    for source, n in items.items():
        assert value(after, "fyp_feed_items_total", region="us", source=source) == n
    assert sum(v for (name, _), v in after.items() if name == "fyp_feed_items_total") == sum(
        items.values()
    )
    assert value(after, "fyp_region_up", region="us") == 1
    assert value(after, "fyp_region_up", region="eu") == 1
    states = cell(deployment.store("us")).mod.count_by_state()
    for state, n in states.items():
        assert value(after, "fyp_moderation_videos", region="us", state=state) == n
    version = served.get("/v1/users/u1/feed").json()["model_version"]
    assert value(after, "fyp_model_info", region="us", version=version) == 1
    ids = {"nobody", "x1"} | {f"u{k}" for k in range(8)} | {f"v{k}" for k in range(30)}
    labels = {v for _, pairs in after for _, v in pairs}
    assert not labels & ids and not any(i in v for v in labels for i in ("nobody", "u1/"))


def test_only_a_scraper_or_an_admin_reads_metrics(
    deployment: Deployment, make_key: MakeKey
) -> None:
    with TestClient(create_app(deployment)) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        feed_key = make_key("feed")
        denied = anonymous.get("/metrics", headers={"Authorization": f"Bearer {feed_key}"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
        scrape(anonymous, make_key("admin"))


def test_a_region_that_cannot_be_read_is_down_and_the_scrape_still_answers(
    client: TestClient, deployment: Deployment, make_key: MakeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = type(cell(deployment.store("eu")).mod)
    real = mod.count_by_state

    def failing(self: object) -> dict[str, int]:
        if self is cell(deployment.store("eu")).mod:
            raise OSError("disk I/O error")
        return real(self)  # type: ignore[arg-type]

    monkeypatch.setattr(mod, "count_by_state", failing)
    _, samples = scrape(client, make_key("metrics"))
    assert value(samples, "fyp_region_up", region="eu") == 0
    assert value(samples, "fyp_region_up", region="us") == 1


def test_background_children_are_counted(
    client: TestClient, deployment: Deployment, make_key: MakeKey
) -> None:
    s = client.app.state.fyp  # type: ignore[attr-defined]
    schedule = ModerationScheduler(deployment.config, s.moderator.run_reason)
    client.post("/v1/videos", json={"video_id": "w", "duration_ms": 9_000, "regions": ["us"]})
    assert schedule.tick()
    client.post("/v1/videos", json={"video_id": "w2", "duration_ms": 9_000, "regions": ["us"]})
    fd = open_locked(schedule_lock(deployment.config.region_dir("us"), "moderation"))
    try:  # another host moderates us right now
        assert not schedule.tick()
    finally:
        unlock(fd)
    s.schedules = [schedule]
    _, samples = scrape(client, make_key("metrics"))
    assert value(samples, "fyp_background_runs_total", schedule="fyp-moderation") == 1
    assert value(samples, "fyp_background_failures_total", schedule="fyp-moderation") == 0
    assert value(samples, "fyp_background_skipped_total", schedule="fyp-moderation") == 1


def test_a_key_for_one_region_sees_only_that_region(served: TestClient, make_key: MakeKey) -> None:
    served.get("/v1/users/u1/feed")
    _, samples = scrape(served, make_key("metrics", regions=["eu"]))
    regions = {v for (_, pairs), _ in samples.items() for k, v in pairs if k == "region"}
    assert regions == {"eu"}
    assert (
        value(
            samples,
            "fyp_http_requests_total",
            route="/v1/users/{user_id}/feed",
            method="GET",
            status="200",
        )
        >= 1
    )


def test_a_body_refused_before_routing_is_counted_by_its_route(
    client: TestClient, make_key: MakeKey
) -> None:
    """A declared body over ``[limits] max_body_bytes`` is answered 413 before routing
    (and before the access check): it was not counted at all."""
    scraper = make_key("metrics")
    big = b"x" * (client.app.max_body_bytes + 1)  # type: ignore[attr-defined]
    headers = {"content-type": "application/json"}
    assert client.post("/v1/events/batch", content=big, headers=headers).status_code == 413
    assert client.post("/v1/nowhere", content=big, headers=headers).status_code == 413
    _, after = scrape(client, scraper)
    requests = "fyp_http_requests_total"
    assert value(after, requests, route="/v1/events/batch", method="POST", status="413") == 1
    assert value(after, requests, route="other", method="POST", status="413") == 1
    assert value(after, "fyp_http_request_duration_seconds_count", route="/v1/events/batch") == 1


def test_following_tab_pages_and_items_are_counted_by_region(
    client: TestClient, make_key: MakeKey
) -> None:
    """The Following tab has counters of its own (it is not For You: its pages leave
    ``fyp_feed_pages`` and ``fyp_feed_items`` alone), by region, naming no user or video."""
    for user, region in (("fan", "us"), ("bob", "us"), ("eve", "eu")):
        body = {"user_id": user, "home_region": region, "birth_year": 1990}
        assert client.post("/v1/users", json=body).status_code == 201
    for k in range(3):
        video = {"video_id": f"clip{k}", "creator_id": "bob", "duration_ms": 9_000}
        video |= {"regions": ["us"], "caption": "今天天气很好我们去公园散步"}
        assert client.post("/v1/videos", json=video).status_code == 201
    assert client.post("/v1/moderation/runs", json={"region": "us"}).status_code == 200
    assert client.put("/v1/users/fan/following/bob").status_code == 201
    scraper = make_key("metrics", name="prometheus")
    _, before = scrape(client, scraper)
    first = client.get("/v1/users/fan/following/feed", params={"n": 2}).json()
    cursor = first["next_cursor"]
    rest = client.get("/v1/users/fan/following/feed", params={"n": 2, "cursor": cursor}).json()
    assert [len(first["items"]), len(rest["items"])] == [2, 1]
    assert client.get("/v1/users/eve/following/feed").json()["items"] == []  # still a page
    assert client.get("/v1/users/ghost/following/feed").status_code == 404  # not a page
    text, after = scrape(client, scraper)
    assert "# TYPE fyp_following_tab_pages_total counter" in text
    assert "# TYPE fyp_following_tab_items_total counter" in text
    assert grew(before, after, "fyp_following_tab_pages_total", region="us") == 2
    assert grew(before, after, "fyp_following_tab_items_total", region="us") == 3
    assert grew(before, after, "fyp_following_tab_pages_total", region="eu") == 1
    assert grew(before, after, "fyp_following_tab_items_total", region="eu") == 0
    assert_no_for_you_page(after)
    route = "/v1/users/{user_id}/following/feed"
    ok = value(after, "fyp_http_requests_total", route=route, method="GET", status="200")
    assert ok == 3
    ids = {"fan", "bob", "eve", "ghost"} | {f"clip{k}" for k in range(3)}
    labels = {v for _, pairs in after for _, v in pairs}
    assert not labels & ids and not any(i in v for v in labels for i in ids)
    _, eu_only = scrape(client, make_key("metrics", regions=["eu"], name="eu-scraper"))
    assert value(eu_only, "fyp_following_tab_pages_total", region="eu") == 1
    assert not any(
        n.startswith("fyp_following_tab") and ("region", "us") in pairs for n, pairs in eu_only
    )


def test_guest_feed_pages_and_items_are_counted_by_region(
    served: TestClient, make_key: MakeKey
) -> None:
    """A guest page is nobody's For You: counted by region in counters of its own
    (``fyp_feed_pages`` and ``fyp_feed_items`` stay as they were); an error is no page."""
    scraper = make_key("metrics", name="prometheus")
    _, before = scrape(served, scraper)
    first = served.get("/v1/regions/us/feed", params={"n": 4}).json()
    cursor = first["next_cursor"]
    rest = served.get("/v1/regions/us/feed", params={"n": 3, "cursor": cursor}).json()
    assert [len(first["items"]), len(rest["items"])] == [4, 3]
    assert served.get("/v1/regions/zz/feed").status_code == 404  # not a page
    assert served.get("/v1/regions/us/feed", params={"cursor": "x"}).status_code == 400
    text, after = scrape(served, scraper)
    assert "# TYPE fyp_guest_feed_pages_total counter" in text
    assert "# TYPE fyp_guest_feed_items_total counter" in text
    assert grew(before, after, "fyp_guest_feed_pages_total", region="us") == 2
    assert grew(before, after, "fyp_guest_feed_items_total", region="us") == 7
    assert_no_for_you_page(after)
    route = "/v1/regions/{region}/feed"
    assert value(after, "fyp_http_requests_total", route=route, method="GET", status="200") == 2
    _, eu_only = scrape(served, make_key("metrics", regions=["eu"], name="eu-scraper"))
    assert not any(n.startswith("fyp_guest_feed") for n, _ in eu_only)
