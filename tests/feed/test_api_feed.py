from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.access.keys import KeyStore
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app


def test_feed_route(trained: Deployment) -> None:
    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(trained), headers=headers) as client:
        r = client.get("/v1/users/u2/feed", params={"n": 5})
        assert r.status_code == 200
        body = r.json()
        assert body["region"] == "us" and len(body["items"]) == 5
        item = set(body["items"][0])
        assert item == {"video_id", "position", "score", "source", "reason", "explanation"}
        nxt = client.get("/v1/users/u2/feed", params={"n": 5, "cursor": body["next_cursor"]})
        assert not {i["video_id"] for i in nxt.json()["items"]} & {
            i["video_id"] for i in body["items"]
        }
        debug = client.get("/v1/users/u2/feed", params={"n": 5, "debug": True}).json()
        assert any(r["stage"] == "already_seen" for r in debug["removed"])
        assert client.get("/v1/users/nobody/feed").json()["error"]["code"] == "unknown_user"
        assert client.get("/v1/users/u2/feed", params={"n": 0}).status_code == 422
        bad = client.get("/v1/users/u2/feed", params={"cursor": "@@"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
        assert body["end_of_feed"] is False


def test_a_feed_page_can_carry_its_videos(trained: Deployment) -> None:
    """With include=video each item holds its video as GET /v1/videos/{id} gives it, so
    an app needs no request per video; without it the items stay as they were."""
    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(trained), headers=headers) as client:
        page = client.get("/v1/users/u5/feed", params={"n": 6, "include": "video"})
        assert page.status_code == 200
        items = page.json()["items"]
        assert len(items) == 6
        for item in items:
            assert item["video"] == client.get(f"/v1/videos/{item['video_id']}").json()
        # the same user's next page, without: no video key, and nothing repeated
        plain = client.get("/v1/users/u5/feed", params={"n": 6}).json()["items"]
        assert all("video" not in i for i in plain)
        assert not {i["video_id"] for i in plain} & {i["video_id"] for i in items}
        bad = client.get("/v1/users/u5/feed", params={"include": "creator"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"


def test_a_video_gone_since_the_page_was_ranked_is_null(trained: Deployment) -> None:
    from fyp.serving.routers.feed import with_videos

    store = trained.store("us")
    real = next(iter(store.iter_videos())).video_id
    items: list[dict[str, Any]] = [{"video_id": real}, {"video_id": "deleted-since"}]
    with_videos(items, store)
    assert items[0]["video"]["video_id"] == real and items[1]["video"] is None


def test_a_feed_shown_whole_says_so(trained: Deployment) -> None:
    """A client that has shown everything gets an empty page marked end_of_feed, not an
    endless run of empty pages that look like a glitch (acceptance review)."""
    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(trained), headers=headers) as client:
        cursor, shown = None, 0
        for _ in range(20):
            params: dict[str, Any] = {"n": 100} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/users/u3/feed", params=params).json()
            if page["end_of_feed"]:
                break
            assert page["items"]
            shown += len(page["items"])
            cursor = page["next_cursor"]
        assert page["end_of_feed"] and page["items"] == [] and shown > 50


FEED_CASES = [
    ("plain", "/v1/users/u2/feed"),
    ("n", "/v1/users/u4/feed?n=7"),
    ("n and cursor", "/v1/users/u6/feed?n=3&cursor="),
    ("n too large", "/v1/users/u2/feed?n=101"),
    ("n zero", "/v1/users/u2/feed?n=0"),
    ("n not a number", "/v1/users/u2/feed?n=ten"),
    ("n repeated", "/v1/users/u2/feed?n=2&n=3"),
    ("bad cursor", "/v1/users/u2/feed?cursor=%40%40"),
    ("unknown user", "/v1/users/nobody/feed"),
    ("unknown parameter", "/v1/users/u8/feed?colour=red"),
    ("debug", "/v1/users/u10/feed?n=2&debug=true"),
    ("include video", "/v1/users/u16/feed?n=2&include=video"),
    ("lang", "/v1/users/u12/feed?n=3&lang=zh-Hant"),
    ("lang tag", "/v1/users/u14/feed?lang=zh-TW&n=2"),
    ("lang unsupported", "/v1/users/u2/feed?lang=fr"),
]


def test_the_feed_fast_path_answers_like_the_route(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case through the fast path, then (fast path off) through the FastAPI route:
    same statuses, same errors, pages of the same shape and size."""
    from fyp.serving.fastpath import HotRoutes

    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}

    def through() -> list[tuple[int, Any]]:
        with TestClient(create_app(trained), headers=headers) as client:
            out = []
            for _, url in FEED_CASES:
                r = client.get(url)
                body = r.json()
                if r.status_code == 200:  # pages move on (served): compare their shape
                    body = {
                        **body,
                        "items": [sorted(i) for i in body["items"]],
                        "next_cursor": "",
                        "removed": len(body.get("removed", [])) > 0,
                    }
                out.append((r.status_code, body))
            return out

    fast = through()

    async def router_only(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        return False

    monkeypatch.setattr(HotRoutes, "__call__", router_only)
    slow = through()
    assert fast == slow
    assert [status for status, _ in fast] == [
        200,
        200,
        200,
        422,
        422,
        422,
        200,
        400,
        404,
        200,
        200,
        200,
        200,
        200,
        422,
    ]


def test_the_feed_fast_path_fails_like_the_route(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the access check refuses, and a bug in the service: the same status
    and JSON error body with and without the fast path."""
    from fyp.feed.service import FeedService
    from fyp.serving.fastpath import HotRoutes

    _, key = KeyStore(trained).create("tests", ["admin"])

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a bug")

    def through() -> list[tuple[int, Any]]:
        app = create_app(trained)
        with TestClient(app, raise_server_exceptions=False) as client:
            refused = client.get("/v1/users/u2/feed", headers={"Authorization": "Bearer nope"})
            with monkeypatch.context() as m:
                m.setattr(FeedService, "feed", broken)
                failed = client.get(
                    "/v1/users/u2/feed",
                    headers={"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"},
                )
            return [(r.status_code, r.json()) for r in (refused, failed)]

    fast = through()

    async def router_only(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        return False

    monkeypatch.setattr(HotRoutes, "__call__", router_only)
    assert fast == through()
    assert [status for status, _ in fast] == [401, 500]
    assert fast[1][1]["error"]["status"] == 500


def test_the_fast_path_steps_aside_when_fastapi_telemetry_is_on(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OpenTelemetry on, hot routes go through FastAPI's stack to get their spans."""
    from fyp.serving.fastpath import HotRoutes

    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    taken: list[str] = []
    hot_call = HotRoutes.__call__

    async def counted(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        taken.append(scope["path"])
        return await hot_call(self, scope, receive, send)

    monkeypatch.setattr(HotRoutes, "__call__", counted)
    for on in (False, True):
        app = create_app(trained)
        telemetry = getattr(app, "_native_telemetry", None)
        if telemetry is None:
            pytest.skip("this FastAPI has no OpenTelemetry support of its own")
        monkeypatch.setattr(telemetry, "enabled", lambda on=on: on)
        taken.clear()
        with TestClient(app, headers=headers) as client:
            assert client.get("/v1/users/u2/feed?n=2").status_code == 200
        assert taken == ([] if on else ["/v1/users/u2/feed"])


def test_the_fast_path_serves_under_a_root_path(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy that mounts the API under a prefix (``--root-path``), the hot routes
    still answer, and what they answer is what the routes would."""
    from fyp.serving.fastpath import HotRoutes

    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    answered: list[bool] = []
    hot_call = HotRoutes.__call__

    async def counted(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        answered.append(await hot_call(self, scope, receive, send))
        return answered[-1]

    monkeypatch.setattr(HotRoutes, "__call__", counted)

    def through() -> list[tuple[int, Any]]:
        with TestClient(create_app(trained), headers=headers, root_path="/api") as client:
            page = client.get("/api/v1/users/u2/feed?n=2")
            unknown = client.get("/api/v1/users/nobody/feed")
        return [
            (page.status_code, len(page.json()["items"])),
            (unknown.status_code, unknown.json()),
        ]

    fast = through()
    assert answered == [True, True]
    assert fast[0] == (200, 2) and fast[1][1]["error"]["code"] == "unknown_user"

    async def router_only(self: HotRoutes, scope: Any, receive: Any, send: Any) -> bool:
        return False

    monkeypatch.setattr(HotRoutes, "__call__", router_only)
    assert through() == fast


def test_only_plain_feed_queries_take_the_fast_path() -> None:
    from fyp.serving.fastpath import _plain_feed_params

    taken = {
        name: _plain_feed_params(url.partition("?")[2].encode()) is not None
        for name, url in FEED_CASES
    }
    assert taken == {
        "plain": True,
        "n": True,
        "n and cursor": True,
        "n too large": False,
        "n zero": False,
        "n not a number": False,
        "n repeated": False,
        "bad cursor": True,  # the service refuses it, as the route would
        "unknown user": True,
        "unknown parameter": False,
        "debug": False,
        "include video": False,  # the route reads the videos
        "lang": True,
        "lang tag": True,
        "lang unsupported": False,  # the route answers its 422
    }
    assert _plain_feed_params(b"n=%31%30") == (10, None, None)  # decoded like the router does


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="n=&%+;cursor01aé ", max_size=30))
def test_the_fast_paths_query_pairs_are_parse_qsls(query: str) -> None:
    """Split directly when there is nothing to decode, the pairs are still parse_qsl's."""
    from fyp.serving.fastpath import _pairs

    assert _pairs(query) == parse_qsl(query, keep_blank_values=True)
