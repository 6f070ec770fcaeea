"""Who a user follows: events and the API keep one list in the home region's store,
which erasure, export and the residency scan cover."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.access.keys import KeyStore
from fyp.audit.log import sql_store
from fyp.catalog.follows import Following, user_follows
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.errors import InvalidRequest, UnknownCreator, UnknownUser, ValidationFailed
from fyp.events.ingest import Ingestor
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.export import UserExport
from fyp.sovereignty.residency import ResidencyScanner
from serving.errors import assert_error


def _world(d: Deployment) -> None:
    """ana (us) and eve (eu) follow; bob (us) and cy (eu) create. bob's v1 is published
    in both regions, cy's v2 in eu only, ana's own v3 in us."""
    catalog = Catalog(d)
    for user, region in (("ana", "us"), ("bob", "us"), ("eve", "eu"), ("cy", "eu")):
        catalog.create_user(UserIn(user_id=user, home_region=region))
    for video, creator, regions in (
        ("v1", "bob", ["us", "eu"]),
        ("v2", "cy", ["eu"]),
        ("v3", "ana", ["us"]),
    ):
        catalog.create_video(
            VideoIn(video_id=video, creator_id=creator, duration_ms=10_000, regions=regions)
        )


def _event(n: int, user: str, video: str, kind: str) -> dict[str, Any]:
    return {"event_id": f"f{n}", "user_id": user, "video_id": video, "type": kind}


def _ingest(d: Deployment, *events: dict[str, Any]) -> None:
    results = Ingestor(d).ingest(list(events)).results
    assert all(r.status == "stored" for r in results), results


def test_follow_and_unfollow_events_keep_the_list(deployment: Deployment) -> None:
    _world(deployment)
    us = deployment.store("us")
    _ingest(deployment, _event(1, "ana", "v1", "follow"))
    assert us.followed_creators("ana") == ["bob"]
    first = user_follows(us, "ana")[0].since_ms
    # a second follow keeps the first time; following oneself (ana's own v3) is nothing
    _ingest(deployment, _event(2, "ana", "v1", "follow"), _event(3, "ana", "v3", "follow"))
    assert user_follows(us, "ana")[0].since_ms == first
    assert us.followed_creators("ana") == ["bob"]
    # in one batch, in the order given: the last one stands
    _ingest(deployment, _event(4, "ana", "v1", "unfollow"), _event(5, "ana", "v1", "follow"))
    assert us.followed_creators("ana") == ["bob"]
    _ingest(deployment, _event(6, "ana", "v1", "unfollow"))
    assert us.followed_creators("ana") == []
    _ingest(deployment, _event(7, "ana", "v1", "unfollow"))  # not following: nothing happens
    assert us.followed_creators("ana") == []
    # eve in eu follows a us-homed creator published there, and an eu one
    _ingest(deployment, _event(8, "eve", "v1", "follow"), _event(9, "eve", "v2", "follow"))
    assert sorted(deployment.store("eu").followed_creators("eve")) == ["bob", "cy"]
    # a retried event is a duplicate and changes nothing
    retry = Ingestor(deployment).ingest([_event(6, "ana", "v1", "unfollow")]).results
    assert retry[0].status == "duplicate"


def test_following_through_the_library(deployment: Deployment) -> None:
    _world(deployment)
    following = Following(deployment)
    before = deployment.store("us").get_user("ana")
    made, created = following.follow("ana", "bob")
    assert created and made.creator_id == "bob"
    again, created = following.follow("ana", "bob")
    assert not created and again == made
    after = deployment.store("us").get_user("ana")
    assert before is not None and after is not None
    # the profile version moves on, so a feed ranked ahead is ranked again
    assert after.updated_at_ms > before.updated_at_ms
    with pytest.raises(UnknownCreator):
        following.follow("ana", "cy")  # none of cy's videos is published in us
    with pytest.raises(ValidationFailed):
        following.follow("ana", "ana")
    with pytest.raises(UnknownUser):
        following.follow("nobody", "bob")
    assert following.unfollow("ana", "bob") and not following.unfollow("ana", "bob")
    bumped = deployment.store("us").get_user("ana")
    assert bumped is not None and bumped.updated_at_ms > after.updated_at_ms
    with pytest.raises(InvalidRequest):
        following.page("ana", 10, "not-a-cursor")


def test_pages_are_newest_first_and_complete(deployment: Deployment) -> None:
    catalog = Catalog(deployment)
    catalog.create_user(UserIn(user_id="fan", home_region="us"))
    for k in range(7):
        catalog.create_user(UserIn(user_id=f"c{k}", home_region="us"))
        catalog.create_video(
            VideoIn(video_id=f"w{k}", creator_id=f"c{k}", duration_ms=5_000, regions=["us"])
        )
    # follows in one millisecond share a time: the creator id orders them
    _ingest(deployment, *(_event(k, "fan", f"w{k}", "follow") for k in range(7)))
    following = Following(deployment)
    seen: list[str] = []
    cursor = None
    while True:
        region, page, cursor = following.page("fan", 3, cursor)
        assert region == "us" and len(page) <= 3
        seen += [f.creator_id for f in page]
        if cursor is None:
            break
    assert sorted(seen) == [f"c{k}" for k in range(7)] and len(seen) == 7
    times = [f.since_ms for f in user_follows(deployment.store("us"), "fan")]
    assert times == sorted(times)


def test_the_api_follows_unfollows_and_lists(client: TestClient, deployment: Deployment) -> None:
    _world(deployment)
    made = client.put("/v1/users/ana/following/bob")
    assert made.status_code == 201, made.text
    assert made.json()["creator_id"] == "bob" and made.json()["following"] is True
    again = client.put("/v1/users/ana/following/bob")
    assert again.status_code == 200 and again.json() == made.json()
    listed = client.get("/v1/users/ana/following").json()
    assert listed == {
        "user_id": "ana",
        "region": "us",
        "following": [{"creator_id": "bob", "since_ms": made.json()["since_ms"]}],
        "next_cursor": None,
    }
    assert client.delete("/v1/users/ana/following/bob").status_code == 204
    assert client.delete("/v1/users/ana/following/bob").status_code == 204  # a retry
    assert client.get("/v1/users/ana/following").json()["following"] == []
    error = assert_error(client.put("/v1/users/ana/following/cy"), 404, "unknown_creator")
    assert error["details"] == {"creator_id": "cy", "region": "us"}
    assert_error(client.put("/v1/users/ana/following/ana"), 422, "validation_failed")
    assert_error(client.put("/v1/users/nobody/following/bob"), 404, "unknown_user")
    assert_error(client.get("/v1/users/nobody/following"), 404, "unknown_user")
    assert_error(client.put("/v1/users/ana/following/b%20b"), 422, "validation_failed")
    bad = client.get("/v1/users/ana/following", params={"cursor": "@@"})
    assert_error(bad, 400, "invalid_request")
    assert_error(
        client.get("/v1/users/ana/following", params={"limit": 0}), 422, "validation_failed"
    )


def test_keys_reach_follows_of_their_regions_only(deployment: Deployment) -> None:
    _world(deployment)
    Following(deployment).follow("eve", "cy")
    keys = KeyStore(deployment)
    _, feed_us = keys.create("app-us", ["feed"], ["us"])
    _, ingest_eu = keys.create("ingest-eu", ["ingest"], ["eu"])
    with TestClient(create_app(deployment)) as client:
        feed = {"Authorization": f"Bearer {feed_us}"}
        ingest = {"Authorization": f"Bearer {ingest_eu}"}
        assert client.get("/v1/users/ana/following", headers=feed).status_code == 200
        assert_error(client.get("/v1/users/eve/following", headers=feed), 403, "forbidden")
        assert_error(client.put("/v1/users/ana/following/bob", headers=feed), 403, "forbidden")
        # cy lives in eu, but the creator places nothing: eve's home decides
        assert client.put("/v1/users/eve/following/bob", headers=ingest).status_code == 201
        assert client.get("/v1/users/eve/following", headers=ingest).status_code == 200
        assert_error(client.put("/v1/users/ana/following/bob", headers=ingest), 403, "forbidden")


def test_erasing_the_follower_or_the_creator_removes_the_follow(deployment: Deployment) -> None:
    _world(deployment)
    following = Following(deployment)
    following.follow("eve", "bob")  # eu row naming a us-homed creator
    following.follow("eve", "cy")
    following.follow("ana", "bob")
    scan = ResidencyScanner(deployment.config.root).run()
    assert scan.ok, [f.to_dict() for f in scan.findings]
    receipt = Eraser(deployment).erase("bob")
    assert receipt.removed.get("follows.creator_id", 0) == 2  # eve's in eu, ana's in us
    assert deployment.store("eu").followed_creators("eve") == ["cy"]
    assert deployment.store("us").followed_creators("ana") == []
    assert not verify_erasure(deployment, "bob").remnants  # no row names him anywhere
    assert Eraser(deployment).erase("eve").removed["follows"] == 1  # cy, on her receipt
    assert user_follows(deployment.store("eu"), "eve") == []
    assert not verify_erasure(deployment, "eve").remnants
    for region in deployment.regions:
        assert sql_store(deployment.store(region)).query("SELECT COUNT(*) FROM follows") == [(0,)]


def test_the_export_lists_who_the_user_follows(deployment: Deployment) -> None:
    _world(deployment)
    following = Following(deployment)
    first, _ = following.follow("eve", "cy")
    _ingest(deployment, _event(1, "eve", "v1", "follow"))
    doc = json.loads("".join(UserExport(deployment, "eve").chunks()))
    assert sorted(f["creator_id"] for f in doc["following"]) == ["bob", "cy"]
    assert {"creator_id": "cy", "since_ms": first.since_ms} in doc["following"]
    assert doc["manifest"]["sections"]["following"] == 2


_OPS = st.lists(
    st.tuples(st.sampled_from(["event", "api"]), st.booleans(), st.sampled_from(["v1", "v4"])),
    max_size=12,
)


def test_the_list_is_the_last_word_on_each_creator(deployment: Deployment) -> None:
    """Whatever mix of follow/unfollow events and API calls, in any order, the store's
    list is each creator's last word (the model: a set, added to and taken from)."""
    _world(deployment)
    Catalog(deployment).create_video(
        VideoIn(video_id="v4", creator_id="cy", duration_ms=10_000, regions=["us"])
    )
    creator = {"v1": "bob", "v4": "cy"}
    following = Following(deployment)
    us = deployment.store("us")
    runs = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(_OPS)
    def check(ops: list[tuple[str, bool, str]]) -> None:
        run = next(runs)
        user = f"fan{run}"
        Catalog(deployment).create_user(UserIn(user_id=user, home_region="us"))
        expected: set[str] = set()
        for n, (how, follow, video) in enumerate(ops):
            if how == "event":
                kind = "follow" if follow else "unfollow"
                _ingest(deployment, _event(n, user, video, kind) | {"event_id": f"{user}-{n}"})
            elif follow:
                following.follow(user, creator[video])
            else:
                following.unfollow(user, creator[video])
            (expected.add if follow else expected.discard)(creator[video])
            assert sorted(us.followed_creators(user)) == sorted(expected)

    check()
