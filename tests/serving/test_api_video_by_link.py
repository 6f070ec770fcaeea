"""A video fetched by link (``GET /v1/videos/{id}``) by the app's feed key keeps the
moderation promises: ``age_restricted`` only for a named viewer certainly 18, nothing of
a creator who fails the creator rules, ``restricted`` viewable by link; operators read
everything. Runs on SQLite and, through tests/storage/test_postgres_deployment.py, on
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from fyp.access.guard import PRINCIPAL
from fyp.access.keys import KeyStore
from fyp.access.ring import Principal
from fyp.catalog.blocks import Blocking
from fyp.catalog.follows import Following
from fyp.catalog.models import CURRENT_YEAR, UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.errors import AgeRestricted
from fyp.moderation import Moderator
from fyp.moderation.service import cell
from fyp.moderation.snapshot import CatalogSnapshot
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.serving.routers.videos import get_video
from serving.errors import assert_error

Answer = tuple[int, str | None]  # status, error code
SHOWN: Answer = (200, None)
AGE: Answer = (403, "age_restricted")
GONE: Answer = (404, "unknown_video")


@pytest.fixture
def web(deployment: Deployment) -> Iterator[TestClient]:
    """A client sending no key by default; people and keys made (see ``_people``)."""
    _people(deployment)
    with TestClient(create_app(deployment)) as c:
        yield c


def _people(d: Deployment) -> None:
    """fan (adult), kid (12), maybe18 (born 18 years ago: maybe still 17), nobirth (age
    unknown) in us; eve (adult) in eu; creators bob (adult) and teen (14) in us."""
    catalog = Catalog(d)
    for user, region, year in (
        ("fan", "us", 1990),
        ("kid", "us", CURRENT_YEAR - 12),
        ("maybe18", "us", CURRENT_YEAR - 18),
        ("nobirth", "us", None),
        ("eve", "eu", 1990),
        ("bob", "us", 1985),
        ("teen", "us", CURRENT_YEAR - 14),
    ):
        catalog.create_user(UserIn(user_id=user, home_region=region, birth_year=year))


def _publish(
    d: Deployment,
    video_id: str,
    state: str,
    creator_ok: bool = True,
    regions: Sequence[str] = ("us",),
) -> None:
    """bob's video, given ``state`` in each of its regions."""
    Catalog(d).create_video(
        VideoIn(video_id=video_id, creator_id="bob", duration_ms=9_000, regions=list(regions))
    )
    for region in regions:
        cell(d.store(region)).mod.write(video_id, state, creator_ok, "t", "review", "t", 0, {})


def _key(
    d: Deployment, role: str | list[str] = "feed", regions: list[str] | None = None
) -> dict[str, str]:
    roles = [role] if isinstance(role, str) else role
    token = KeyStore(d).create(f"{'+'.join(roles)}-{regions}", roles, regions)[1]
    return {"Authorization": f"Bearer {token}", "X-Fyp-Reason": "by-link tests"}


def _answer(c: TestClient, key: dict[str, str], video: str, **params: Any) -> Answer:
    resp = c.get(f"/v1/videos/{video}", params=params, headers=key)
    if resp.status_code == 200:
        assert resp.json()["video_id"] == video
        return SHOWN
    error = assert_error(resp, resp.status_code, resp.json()["error"]["code"])
    assert error["details"]["video_id"] == video, error
    return resp.status_code, error["code"]


# (state, creator passed the creator rules) -> the answer with no viewer, for an adult
# viewer, and for viewers not certainly 18 (kid, maybe18, nobirth)
TABLE: dict[tuple[str, bool], tuple[Answer, Answer, Answer]] = {
    ("approved", True): (SHOWN, SHOWN, SHOWN),
    ("restricted", True): (SHOWN, SHOWN, SHOWN),  # never in For You, viewable by link
    ("age_restricted", True): (AGE, SHOWN, AGE),
    ("pending", True): (GONE, GONE, GONE),
    ("rejected", True): (GONE, GONE, GONE),
    ("blocked", True): (GONE, GONE, GONE),
    ("approved", False): (GONE, GONE, GONE),  # the creator rules bar it, whatever the age
    ("restricted", False): (GONE, GONE, GONE),
    ("age_restricted", False): (GONE, GONE, GONE),
}


def test_what_each_state_answers_a_feed_key(deployment: Deployment, web: TestClient) -> None:
    """The app sees by link what the viewer may watch, and 403 ``age_restricted`` only
    when the viewer's age (or naming none) is all that bars it."""
    for k, (state, creator_ok) in enumerate(TABLE):
        _publish(deployment, f"v{k}", state, creator_ok)
    key = _key(deployment, regions=["us"])
    for k, ((state, creator_ok), (nobody, adult, minor)) in enumerate(TABLE.items()):
        case = f"{state}, creator_ok={creator_ok}"
        assert _answer(web, key, f"v{k}") == nobody, case
        assert _answer(web, key, f"v{k}", viewer_id="fan") == adult, case
        for viewer in ("kid", "maybe18", "nobirth"):
            assert _answer(web, key, f"v{k}", viewer_id=viewer) == minor, f"{case}, {viewer}"
    # a key of every region: the same rule
    assert _answer(web, _key(deployment), "v2") == AGE
    assert _answer(web, _key(deployment), "v2", viewer_id="fan") == SHOWN


@pytest.mark.parametrize("roles", [["feed", "ingest"], ["feed", "metrics"], ["ingest", "feed"]])
def test_a_key_with_the_feed_role_gets_the_viewers_rule_whatever_else_it_holds(
    deployment: Deployment, web: TestClient, roles: list[str]
) -> None:
    """An app's one key for feeds and events shows videos to people too: another service
    role beside ``feed`` must not lift the rule (it did: only a key of ``feed`` alone was
    checked, so such a key read pending and rejected videos by link)."""
    for k, (state, creator_ok) in enumerate(TABLE):
        _publish(deployment, f"v{k}", state, creator_ok)
    key = _key(deployment, roles, regions=["us"])
    for k, (nobody, adult, minor) in enumerate(TABLE.values()):
        assert _answer(web, key, f"v{k}") == nobody
        assert _answer(web, key, f"v{k}", viewer_id="fan") == adult
        assert _answer(web, key, f"v{k}", viewer_id="kid") == minor


def test_a_metrics_key_reads_no_video(deployment: Deployment, web: TestClient) -> None:
    """A Prometheus scraper's key calls ``GET /metrics`` only (it read any video, pending
    ones included, by link)."""
    _publish(deployment, "v", "pending")
    _publish(deployment, "w", "approved")
    for video in ("v", "w"):
        assert_error(
            web.get(f"/v1/videos/{video}", headers=_key(deployment, "metrics")), 403, "forbidden"
        )


def test_a_block_either_way_hides_the_video_from_the_viewer(
    deployment: Deployment, web: TestClient
) -> None:
    """fan blocked bob, or bob blocked fan: bob's video by link is no video for fan (as
    in feeds), and fine for anyone else and with no viewer named."""
    _publish(deployment, "v", "approved")
    Catalog(deployment).create_video(  # so that bob can block fan
        VideoIn(video_id="by-fan", creator_id="fan", duration_ms=9_000, regions=["us"])
    )
    key = _key(deployment, regions=["us"])
    for blocker, blocked in (("fan", "bob"), ("bob", "fan")):
        Blocking(deployment).block(blocker, blocked)
        assert _answer(web, key, "v", viewer_id="fan") == GONE, blocker
        assert _answer(web, key, "v", viewer_id="kid") == SHOWN
        assert _answer(web, key, "v") == SHOWN
        Blocking(deployment).unblock(blocker, blocked)
        assert _answer(web, key, "v", viewer_id="fan") == SHOWN


def test_the_age_restricted_answer_tells_the_app_what_to_show(
    deployment: Deployment, web: TestClient
) -> None:
    _publish(deployment, "adult-only", "age_restricted")
    key = _key(deployment, regions=["us"])
    error = assert_error(web.get("/v1/videos/adult-only", headers=key), 403, "age_restricted")
    assert error["details"] == {"video_id": "adult-only"}
    assert "viewer_id" in error["message"]
    resp = web.get("/v1/videos/adult-only", params={"viewer_id": "kid"}, headers=key)
    error = assert_error(resp, 403, "age_restricted")
    assert error["details"] == {"video_id": "adult-only", "viewer_id": "kid"}
    resp = web.get("/v1/videos/adult-only", params={"viewer_id": "fan"}, headers=key)
    assert resp.status_code == 200 and resp.json()["creator_id"] == "bob"


def test_a_decision_holds_on_the_very_next_request(deployment: Deployment, web: TestClient) -> None:
    _publish(deployment, "v", "approved")
    key = _key(deployment, regions=["us"])
    assert _answer(web, key, "v") == SHOWN
    mod = cell(deployment.store("us")).mod
    mod.write("v", "age_restricted", True, "t", "review", "t", 0, {})
    assert _answer(web, key, "v") == AGE
    assert _answer(web, key, "v", viewer_id="fan") == SHOWN
    mod.write("v", "age_restricted", False, "t", "recheck", "t", 0, {})  # creator re-checked
    assert _answer(web, key, "v", viewer_id="fan") == GONE


def test_restricted_stays_viewable_by_link_unless_the_creator_rules_bar_it(
    deployment: Deployment, web: TestClient
) -> None:
    _publish(deployment, "kept", "restricted")
    _publish(deployment, "kept-minor-creator", "restricted", creator_ok=False)
    Following(deployment).follow("kid", "bob")
    key = _key(deployment, regions=["us"])
    for viewer in (None, "fan", "kid", "nobirth"):  # kid follows bob: fine too
        params = {} if viewer is None else {"viewer_id": viewer}
        assert _answer(web, key, "kept", **params) == SHOWN, viewer
        assert _answer(web, key, "kept-minor-creator", **params) == GONE, viewer


def test_the_creator_rule_with_real_moderation(deployment: Deployment, web: TestClient) -> None:
    """A run of the automated checks: a 14-year-old creator's clean video is approved
    but kept out of For You by the creator rule, and not served by link either."""
    catalog = Catalog(deployment)
    for video, creator in (("by_bob", "bob"), ("by_teen", "teen")):
        catalog.create_video(
            VideoIn(
                video_id=video,
                creator_id=creator,
                caption="今天天气很好我们去公园散步",
                duration_ms=9_000,
                regions=["us"],
            )
        )
    Moderator(deployment).run("us")
    states = cell(deployment.store("us")).mod.states(["by_bob", "by_teen"])
    assert states == {"by_bob": ("approved", True), "by_teen": ("approved", False)}
    key = _key(deployment, regions=["us"])
    assert _answer(web, key, "by_bob") == SHOWN
    assert _answer(web, key, "by_teen") == GONE
    assert _answer(web, key, "by_teen", viewer_id="fan") == GONE


def test_the_viewer_is_judged_in_their_home_region_which_the_key_must_reach(
    deployment: Deployment, web: TestClient
) -> None:
    """eve lives in eu: a us key may not name her (403, as on her own routes); a key
    reaching eu judges the video in eu, where it is not published (404) or blocked."""
    _publish(deployment, "us-only", "age_restricted")
    _publish(deployment, "both", "age_restricted", regions=("us", "eu"))
    us, every = _key(deployment, regions=["us"]), _key(deployment)
    for video in ("us-only", "both"):
        resp = web.get(f"/v1/videos/{video}", params={"viewer_id": "eve"}, headers=us)
        assert_error(resp, 403, "forbidden")
    for viewer in ("ghost", ""):  # no such user: placed nowhere, as a {user_id} would be
        resp = web.get("/v1/videos/both", params={"viewer_id": viewer}, headers=us)
        assert_error(resp, 403, "forbidden")
    both = [("viewer_id", "fan"), ("viewer_id", "eve")]  # every viewer named is checked
    assert_error(web.get("/v1/videos/both", params=both, headers=us), 403, "forbidden")
    assert_error(
        web.get("/v1/videos/both", params={"viewer_id": "ghost"}, headers=every),
        404,
        "unknown_user",
    )
    assert _answer(web, every, "us-only", viewer_id="eve") == GONE  # not in eu's catalogue
    assert _answer(web, every, "both", viewer_id="eve") == SHOWN
    cell(deployment.store("eu")).mod.write("both", "blocked", True, "t", "review", "t", 0, {})
    assert _answer(web, every, "both", viewer_id="eve") == GONE  # eu's verdict, not us's
    assert _answer(web, every, "both", viewer_id="fan") == SHOWN
    # a region other than the viewer's is a mistake of the app's: 422 naming it
    resp = web.get("/v1/videos/both", params={"viewer_id": "fan", "region": "eu"}, headers=every)
    error = assert_error(resp, 422, "validation_failed")
    assert error["details"]["problems"][0]["field"] == "query.region"
    assert _answer(web, every, "both", viewer_id="fan", region="us") == SHOWN
    # a NUL is refused before any store looks it up (PostgreSQL cannot)
    for key in (us, every):
        resp = web.get("/v1/videos/both", params={"viewer_id": "f\x00n"}, headers=key)
        assert_error(resp, 422, "validation_failed")


def test_with_no_viewer_only_the_named_regions_copy_counts(
    deployment: Deployment, web: TestClient
) -> None:
    """Blocked in eu, approved in us: a key reaching both may show it, from us, and not
    when it asks for eu's copy."""
    _publish(deployment, "both", "approved", regions=("us", "eu"))
    cell(deployment.store("eu")).mod.write("both", "blocked", True, "t", "review", "t", 0, {})
    every, eu = _key(deployment), _key(deployment, regions=["eu"])
    assert _answer(web, every, "both") == SHOWN
    assert _answer(web, every, "both", region="us") == SHOWN
    assert _answer(web, every, "both", region="eu") == GONE
    assert _answer(web, eu, "both") == GONE


@pytest.mark.parametrize("role", ["admin", "moderator", "auditor", "ingest"])
def test_operator_and_ingest_keys_read_every_video(
    deployment: Deployment, web: TestClient, role: str
) -> None:
    """What the feed key may not fetch, other roles still read (a viewer named is
    ignored): moderators review it, the uploader's backend reads what it wrote."""
    for k, (state, creator_ok) in enumerate(TABLE):
        _publish(deployment, f"v{k}", state, creator_ok)
    feed, other = _key(deployment, regions=["us"]), _key(deployment, role, regions=["us"])
    for k, (nobody, _, minor) in enumerate(TABLE.values()):
        for params, refused in (({}, nobody), ({"viewer_id": "kid"}, minor)):
            assert _answer(web, other, f"v{k}", **params) == SHOWN
            if refused != SHOWN:
                assert _answer(web, feed, f"v{k}", **params) == refused


def test_a_failing_check_shows_nothing(
    deployment: Deployment, web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(deployment, "v", "approved")
    key = _key(deployment, regions=["us"])
    assert _answer(web, key, "v") == SHOWN

    def broken(self: CatalogSnapshot, video_ids: Sequence[str], adult: bool) -> dict[str, str]:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(CatalogSnapshot, "barred_for_followers", broken)
    assert_error(web.get("/v1/videos/v", headers=key), 503, "storage_error")
    resp = web.get("/v1/videos/v", params={"viewer_id": "fan"}, headers=key)
    assert_error(resp, 503, "storage_error")
    assert _answer(web, _key(deployment, "admin"), "v") == SHOWN  # operators: no check


def test_a_request_with_no_key_reads_as_an_operator_does(
    deployment: Deployment, web: TestClient
) -> None:
    """An app mounting the router without fyp's access check puts no key on the request:
    it reads every video, as before (``fyp serve`` always checks keys). The same call
    with the app's key on it is refused."""
    _publish(deployment, "adult-only", "age_restricted")
    s = web.app.state.fyp  # type: ignore[attr-defined]

    def call(scope: dict[str, Any]) -> Any:
        request = Request({"type": "http", "method": "GET", "headers": [], **scope})
        return asyncio.run(get_video(request, "adult-only", None, "kid", s))

    assert call({}).video_id == "adult-only"
    app_key = Principal("k", "app", frozenset({"feed"}), frozenset({"us"}), False, frozenset())
    with pytest.raises(AgeRestricted):
        call({PRINCIPAL: app_key})
