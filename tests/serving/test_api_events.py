"""HTTP API: /v1/events and /v1/events/batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fyp.config import Limits
from fyp.regions.deployment import Deployment
from serving.errors import assert_error
from storage.locking import locked


@pytest.fixture
def api(client: TestClient) -> TestClient:
    """The client with users alice (us) and bruno (eu), and videos in us, eu and both."""
    for uid, region in (("alice", "us"), ("bruno", "eu")):
        resp = client.post("/v1/users", json={"user_id": uid, "home_region": region})
        assert resp.status_code == 201
    for vid, regions in (("v_us", ["us"]), ("v_eu", ["eu"]), ("v_all", ["us", "eu"])):
        resp = client.post(
            "/v1/videos", json={"video_id": vid, "duration_ms": 10_000, "regions": regions}
        )
        assert resp.status_code == 201
    return client


def ev(event_id: str, user_id: str = "alice", video_id: str = "v_all", **kw: Any) -> Any:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "video_id": video_id,
        "type": "play",
        "watch_ms": 8_000,
        "ts": "2024-03-01T10:00:00Z",
        **kw,
    }


def count_events(d: Deployment) -> int:
    return sum(s.count_events() for s in d.stores.values())


# -- single event --------------------------------------------------------------------------


def test_single_event_201_then_200_for_the_repeat(api: TestClient, deployment: Deployment) -> None:
    first = api.post("/v1/events", json=ev("e1"))
    assert first.status_code == 201
    assert first.json() == {"event_id": "e1", "status": "stored", "region": "us"}
    again = api.post("/v1/events", json=ev("e1"))
    assert again.status_code == 200
    assert again.json() == {"event_id": "e1", "status": "duplicate", "region": "us"}
    clash = api.post("/v1/events", json=ev("e1", watch_ms=1))
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "already_exists"
    assert count_events(deployment) == 1
    stored = deployment.store("us").get_event("e1")
    assert stored is not None and stored.watch_ms == 8_000


def test_single_event_goes_to_the_home_region(api: TestClient, deployment: Deployment) -> None:
    resp = api.post("/v1/events", json=ev("e1", user_id="bruno"))
    assert resp.status_code == 201
    assert resp.json()["region"] == "eu"
    assert deployment.store("eu").get_event("e1") is not None
    assert deployment.store("us").get_event("e1") is None


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (ev("x", type="dance"), 422, "validation_failed"),
        (ev("x", watch_ms="abc"), 422, "validation_failed"),
        (ev("x", watch_ms=-1), 422, "validation_failed"),
        (ev("x", watch_ms=Limits().max_watch_ms + 1), 422, "validation_failed"),
        (ev("x", type="like"), 422, "validation_failed"),  # watch_ms on a like
        ({k: v for k, v in ev("x").items() if k != "watch_ms"}, 422, "validation_failed"),
        (ev("x", ts="1999-01-01T00:00:00Z"), 422, "validation_failed"),
        (ev("x", ts="2999-01-01T00:00:00Z"), 422, "validation_failed"),
        (ev("x", user_id="ghost"), 404, "unknown_user"),
        (ev("x", video_id="nope"), 404, "unknown_video"),
        (ev("x", user_id="bruno", video_id="v_us"), 404, "unknown_video"),
        (ev("x", region="eu"), 403, "residency_violation"),
        ([ev("x")], 422, "validation_failed"),
    ],
)
def test_single_event_errors(
    api: TestClient, deployment: Deployment, event: Any, status: int, code: str
) -> None:
    assert_error(api.post("/v1/events", json=event), status, code)
    assert count_events(deployment) == 0


def test_single_event_malformed_json(api: TestClient) -> None:
    resp = api.post("/v1/events", content=b"{bad", headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_request")


def test_region_header_must_match(api: TestClient, deployment: Deployment) -> None:
    error = assert_error(
        api.post("/v1/events", json=ev("e1"), headers={"X-Fyp-Region": "eu"}),
        403,
        "residency_violation",
    )
    assert error["details"] == {"user_id": "alice", "home_region": "us", "region": "eu"}
    assert count_events(deployment) == 0
    resp = api.post("/v1/events", json=ev("e1"), headers={"X-Fyp-Region": "us"})
    assert resp.status_code == 201
    for header in ("mars", "US", ""):
        error = assert_error(
            api.post("/v1/events", json=ev("e2"), headers={"X-Fyp-Region": header}),
            422,
            "validation_failed",
        )
        assert error["details"]["problems"][0]["field"] == "header.x-fyp-region"
    assert count_events(deployment) == 1


def test_event_shows_up_in_the_users_events(api: TestClient) -> None:
    api.post("/v1/events", json=ev("e1", watch_ms=10_000))
    events = api.get("/v1/users/alice/events").json()["events"]
    assert [e["event_id"] for e in events] == ["e1"]
    assert events[0]["valid_play"] is True and events[0]["long_play"] is True
    assert events[0]["ts_ms"] == int(datetime(2024, 3, 1, 10, tzinfo=UTC).timestamp()) * 1000


# -- batch ------------------------------------------------------------------------------


def test_batch_results_are_per_event_in_input_order(
    api: TestClient, deployment: Deployment
) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    batch = [
        ev("b1", user_id="bruno"),
        ev("a1"),
        "not an event",
        ev("x1", user_id="ghost"),
        ev("a1"),
        ev("x2", ts=future),
        ev("b2", user_id="bruno", video_id="v_us"),
        ev("a2", type="like", watch_ms=None),
    ]
    batch[-1] = {k: v for k, v in batch[-1].items() if v is not None}
    resp = api.post("/v1/events/batch", json={"events": batch})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["stored"], body["duplicate"], body["rejected"]) == (3, 1, 4)
    results = body["results"]
    assert [r["event_id"] for r in results] == ["b1", "a1", None, "x1", "a1", "x2", "b2", "a2"]
    assert [r["status"] for r in results] == [
        "stored",
        "stored",
        "rejected",
        "rejected",
        "duplicate",
        "rejected",
        "rejected",
        "stored",
    ]
    assert [r.get("error", {}).get("code") for r in results] == [
        None,
        None,
        "validation_failed",
        "unknown_user",
        None,
        "validation_failed",
        "unknown_video",
        None,
    ]
    assert results[0]["region"] == "eu" and results[1]["region"] == "us"
    for r in results:
        if "error" in r:
            assert set(r["error"]) == {"code", "message", "status", "details"}
    assert count_events(deployment) == 3


def test_batch_repeat_is_duplicate(api: TestClient, deployment: Deployment) -> None:
    api.post("/v1/events/batch", json={"events": [ev("e1"), ev("e2")]})
    body = api.post("/v1/events/batch", json={"events": [ev("e2"), ev("e3")]}).json()
    assert [r["status"] for r in body["results"]] == ["duplicate", "stored"]
    assert count_events(deployment) == 3


def test_a_region_whose_store_fails_is_told_per_event_and_a_retry_fills_the_gap(
    api: TestClient, deployment: Deployment
) -> None:
    """A cross-region batch whose eu store was locked answered 500 after committing the
    us events (chaos report #6): each eu event is now rejected with a retryable 503
    storage_error, the us events stored; with only eu's events the batch is a 503."""
    batch = {"events": [ev("a1"), ev("b1", user_id="bruno", video_id="v_eu")]}
    with locked(deployment, "eu"):
        resp = api.post("/v1/events/batch", json=batch)
        only_eu = api.post("/v1/events/batch", json={"events": batch["events"][1:]})
    assert resp.status_code == 200
    body = resp.json()
    assert (body["stored"], body["duplicate"], body["rejected"]) == (1, 0, 1)
    assert body["results"][0] == {"event_id": "a1", "status": "stored", "region": "us"}
    failed = body["results"][1]
    assert failed["status"] == "rejected" and failed["region"] == "eu"
    assert failed["error"]["code"] == "storage_error" and failed["error"]["status"] == 503
    assert failed["error"]["details"] == {"region": "eu"}
    assert_error(only_eu, 503, "storage_error")
    assert only_eu.json()["error"]["details"] == {"regions": ["eu"]}
    assert count_events(deployment) == 1
    again = api.post("/v1/events/batch", json=batch).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "stored"]
    assert count_events(deployment) == 2


def test_empty_batch(api: TestClient) -> None:
    resp = api.post("/v1/events/batch", json={"events": []})
    assert resp.status_code == 200
    assert resp.json() == {"stored": 0, "duplicate": 0, "rejected": 0, "results": []}


def test_a_batch_with_an_unknown_field_is_refused_like_a_single_event(
    api: TestClient, deployment: Deployment
) -> None:
    resp = api.post("/v1/events/batch", json={"events": [ev("e1")], "dry_run": True})
    error = assert_error(resp, 422, "validation_failed")
    assert "dry_run" in error["message"]
    assert count_events(deployment) == 0


def test_batch_over_the_limit_is_413_and_writes_nothing(
    api: TestClient, deployment: Deployment
) -> None:
    limit = deployment.config.limits.max_batch
    events = [ev(f"e{i}") for i in range(limit + 1)]
    error = assert_error(
        api.post("/v1/events/batch", json={"events": events}), 413, "payload_too_large"
    )
    assert error["details"] == {"limit": limit, "size": limit + 1}
    assert count_events(deployment) == 0


def test_batch_region_header_mismatch(api: TestClient, deployment: Deployment) -> None:
    resp = api.post(
        "/v1/events/batch",
        json={"events": [ev("a1"), ev("b1", user_id="bruno")]},
        headers={"X-Fyp-Region": "eu"},
    )
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert results[0]["status"] == "rejected"
    assert results[0]["error"]["code"] == "residency_violation"
    assert results[0]["error"]["status"] == 403
    assert results[1]["status"] == "stored"
    assert deployment.store("us").count_events() == 0
    assert deployment.store("eu").count_events() == 1


def test_a_body_naming_an_undeclared_region_is_422_not_403(
    api: TestClient, deployment: Deployment
) -> None:
    """An undeclared region is a mistake in the event, not a residency question: 422
    naming the field, as anywhere else; a declared region not the user's stays 403."""
    error = assert_error(
        api.post("/v1/events", json={**ev("e1"), "region": "mars"}), 422, "validation_failed"
    )
    assert error["details"]["problems"][0]["field"] == "body.region"
    assert error["details"]["regions"] == ["eu", "us"]
    assert_error(
        api.post("/v1/events", json={**ev("e1"), "region": "eu"}), 403, "residency_violation"
    )
    batch = api.post(
        "/v1/events/batch", json={"events": [{**ev("e2"), "region": "mars"}, ev("e3")]}
    )
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert first["status"] == "rejected" and first["error"]["code"] == "validation_failed"
    assert second["status"] == "stored"
    assert count_events(deployment) == 1


def test_batch_unknown_region_header(api: TestClient) -> None:
    assert_error(
        api.post("/v1/events/batch", json={"events": [ev("a1")]}, headers={"X-Fyp-Region": "x"}),
        422,
        "validation_failed",
    )


@pytest.mark.parametrize("body", [[ev("e1")], {"events": "e1"}, {"evts": []}, {}])
def test_batch_body_shape_is_validated(api: TestClient, body: Any) -> None:
    assert_error(api.post("/v1/events/batch", json=body), 422, "validation_failed")


def test_batch_malformed_json(api: TestClient) -> None:
    resp = api.post(
        "/v1/events/batch", content=b"{bad", headers={"content-type": "application/json"}
    )
    assert_error(resp, 400, "invalid_request")


SINGLE_EVENT_CASES: list[tuple[str, Any, dict[str, str]]] = [
    ("stored", ev("f1"), {}),
    ("duplicate", ev("f1"), {}),
    ("eu user", ev("f2", user_id="bruno", video_id="v_eu"), {}),
    ("unknown user", ev("f3", user_id="nobody"), {}),
    ("unknown video", ev("f4", video_id="nope"), {}),
    ("video not in the home region", ev("f5", video_id="v_eu"), {}),
    ("negative watch", ev("f6", watch_ms=-1), {}),
    ("future", ev("f7", ts="2999-01-01T00:00:00Z"), {}),
    ("wrong type", ev("f8", type="teleport"), {}),
    ("region header mismatch", ev("f9"), {"X-Fyp-Region": "eu"}),
    ("unknown region header", ev("f10"), {"X-Fyp-Region": "mars"}),
    ("not an object", [1, 2], {}),
    ("a form", ev("f11"), {"content-type": "application/x-www-form-urlencoded"}),
    ("no key", ev("f12"), {"Authorization": ""}),
]


def test_the_single_event_fast_path_answers_exactly_like_the_route(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case through the fast path, then (fast path off) through the FastAPI route."""
    from fyp.serving.fastpath import HotRoutes

    def through(prefix: str) -> list[tuple[int, Any]]:
        out = []
        for _, body, headers in SINGLE_EVENT_CASES:
            if isinstance(body, dict):
                body = {**body, "event_id": prefix + body["event_id"]}
            resp = api.post("/v1/events", json=body, headers=headers)
            out.append((resp.status_code, resp.json()))
        for raw in (b"{nope", b""):
            resp = api.post("/v1/events", content=raw, headers={"content-type": "application/json"})
            out.append((resp.status_code, resp.json()))
        # repeated headers: the first counts on both paths (the fast path took the last)
        raw = json.dumps(ev(prefix + "f9")).encode()
        for repeated in (
            [("content-type", "text/plain"), ("content-type", "application/json")],
            [("content-type", "application/json"), ("x-fyp-region", "eu"), ("x-fyp-region", "us")],
        ):
            resp = api.post("/v1/events", content=raw, headers=repeated)
            out.append((resp.status_code, resp.json()))
        return out

    fast = through("a-")

    async def router_only(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        return False

    monkeypatch.setattr(HotRoutes, "__call__", router_only)
    slow = through("b-")

    def normalise(answers: list[tuple[int, Any]], prefix: str) -> str:
        import json
        import re

        text = json.dumps(answers).replace(f'"{prefix}f', '"f')
        # "... N s in the future" counts from the clock at the request: the two passes
        # may straddle a second
        return re.sub(r"\d+ s in the", "N s in the", text)

    assert normalise(fast, "a-") == normalise(slow, "b-")
    assert [status for status, _ in fast[:3]] == [201, 200, 201]
    assert {status for status, _ in fast[3:]} <= {400, 401, 403, 404, 413, 415, 422}
