"""Blocking a creator: kept in the blocker's home region, it keeps the creator out of
their feeds until unblocked and ends a follow; its mirror in the blocked user's home
region keeps the blocker out of theirs and refuses their follow of the blocker."""

from __future__ import annotations

import itertools
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.test_follows import _event, _ingest, _world
from fyp.access.keys import KeyStore
from fyp.catalog.blocks import Blocking, user_blocks
from fyp.catalog.follows import Following
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.errors import Conflict, UnknownCreator, ValidationFailed
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.export import UserExport
from fyp.sovereignty.residency import ResidencyScanner
from serving.errors import assert_error


def test_a_block_ends_the_follow_and_keeps_follows_out(deployment: Deployment) -> None:
    _world(deployment)
    us = deployment.store("us")
    blocking, following = Blocking(deployment), Following(deployment)
    following.follow("ana", "bob")
    before = us.get_user("ana")
    made, created = blocking.block("ana", "bob")
    assert created and made.creator_id == "bob"
    assert blocking.block("ana", "bob") == (made, False)
    assert us.blocked_creators("ana") == ["bob"] and us.followed_creators("ana") == []
    after = us.get_user("ana")
    assert before is not None and after is not None and after.updated_at_ms > before.updated_at_ms
    with pytest.raises(Conflict):
        following.follow("ana", "bob")
    _ingest(deployment, _event(1, "ana", "v1", "follow"))  # the button on a video: nothing
    assert us.followed_creators("ana") == []
    assert blocking.unblock("ana", "bob") and not blocking.unblock("ana", "bob")
    _ingest(deployment, _event(2, "ana", "v1", "follow"))
    assert us.followed_creators("ana") == ["bob"]
    with pytest.raises(UnknownCreator):
        blocking.block("ana", "cy")  # none of cy's videos is published in us
    with pytest.raises(ValidationFailed):
        blocking.block("ana", "ana")


def test_the_api_blocks_unblocks_and_lists(client: TestClient, deployment: Deployment) -> None:
    _world(deployment)
    assert client.put("/v1/users/ana/following/bob").status_code == 201
    made = client.put("/v1/users/ana/blocked/bob")
    assert made.status_code == 201, made.text
    assert made.json()["blocked"] is True and made.json()["creator_id"] == "bob"
    assert client.put("/v1/users/ana/blocked/bob").status_code == 200
    assert client.get("/v1/users/ana/following").json()["following"] == []
    listed = client.get("/v1/users/ana/blocked").json()
    assert listed["blocked"] == [{"creator_id": "bob", "since_ms": made.json()["since_ms"]}]
    assert listed["region"] == "us" and listed["next_cursor"] is None
    assert_error(client.put("/v1/users/ana/following/bob"), 409, "conflict")
    assert client.delete("/v1/users/ana/blocked/bob").status_code == 204
    assert client.delete("/v1/users/ana/blocked/bob").status_code == 204
    assert client.get("/v1/users/ana/blocked").json()["blocked"] == []
    assert client.put("/v1/users/ana/following/bob").status_code == 201
    assert_error(client.put("/v1/users/ana/blocked/cy"), 404, "unknown_creator")
    assert_error(client.get("/v1/users/nobody/blocked"), 404, "unknown_user")


def test_blocks_are_erased_exported_and_reachable_by_key(deployment: Deployment) -> None:
    _world(deployment)
    Blocking(deployment).block("eve", "bob")
    Blocking(deployment).block("eve", "cy")
    doc = json.loads("".join(UserExport(deployment, "eve").chunks()))
    assert sorted(b["creator_id"] for b in doc["blocked"]) == ["bob", "cy"]
    assert doc["manifest"]["sections"]["blocked"] == 2
    _, feed_eu = KeyStore(deployment).create("app-eu", ["feed"], ["eu"])
    with TestClient(create_app(deployment)) as client:
        auth = {"Authorization": f"Bearer {feed_eu}"}
        assert client.get("/v1/users/eve/blocked", headers=auth).status_code == 200
        assert_error(client.get("/v1/users/ana/blocked", headers=auth), 403, "forbidden")
        assert_error(client.put("/v1/users/eve/blocked/bob", headers=auth), 403, "forbidden")
    Eraser(deployment).erase("bob")
    assert deployment.store("eu").blocked_creators("eve") == ["cy"]
    assert not verify_erasure(deployment, "bob").remnants
    assert Eraser(deployment).erase("eve").removed["blocks"] == 1  # cy, on her receipt
    assert user_blocks(deployment.store("eu"), "eve") == []


def test_the_blocked_user_no_longer_sees_or_follows_the_blocker(deployment: Deployment) -> None:
    """bob blocks ana (both in us): ana's follow of bob ends, she cannot follow him again
    by API or event, and bob is among the creators kept out of her feeds, until he
    unblocks. Her own list of blocks stays empty: she blocked no one."""
    _world(deployment)
    us = deployment.store("us")
    blocking, following = Blocking(deployment), Following(deployment)
    following.follow("ana", "bob")
    before = us.get_user("ana")
    blocking.block("bob", "ana")  # ana's v3 is published in us
    assert us.blocked_creators("ana") == ["bob"] and us.followed_creators("ana") == []
    assert user_blocks(us, "ana") == [] and us.blocked_creators("bob") == ["ana"]
    after = us.get_user("ana")
    assert before is not None and after is not None and after.updated_at_ms > before.updated_at_ms
    with pytest.raises(Conflict) as refused:
        following.follow("ana", "bob")
    assert "blocked" not in refused.value.message  # who blocked whom is not said
    _ingest(deployment, _event(1, "ana", "v1", "follow"))
    assert us.followed_creators("ana") == []
    assert blocking.unblock("bob", "ana")
    assert us.blocked_creators("ana") == [] and following.follow("ana", "bob")[1]


def test_a_block_across_regions_is_kept_where_each_user_lives(deployment: Deployment) -> None:
    """cy (eu) blocks bob (us), whose v1 is published in eu: cy's row in eu, bob's side
    in us. Both are erased with either person, and the residency scan finds nothing
    foreign (the blocker is named in a creator column, as the catalogue names creators)."""
    _world(deployment)
    Catalog(deployment).create_video(
        VideoIn(video_id="v5", creator_id="cy", duration_ms=10_000, regions=["us", "eu"])
    )
    us, eu = deployment.store("us"), deployment.store("eu")
    Following(deployment).follow("bob", "cy")
    Blocking(deployment).block("cy", "bob")
    assert eu.blocked_creators("cy") == ["bob"]
    assert us.blocked_creators("bob") == ["cy"] and us.followed_creators("bob") == []
    assert not ResidencyScanner(deployment.config.root).run().findings
    Blocking(deployment).block("cy", "bob")  # a repeated PUT: no second row either side
    assert us.blocked_creators("bob") == ["cy"]
    assert Eraser(deployment).erase("bob").removed["blocked_by"] == 1
    assert eu.blocked_creators("cy") == []  # erasing the blocked user takes the block too
    Catalog(deployment).create_user(UserIn(user_id="bob", home_region="us"))
    Catalog(deployment).create_video(
        VideoIn(video_id="v6", creator_id="bob", duration_ms=10_000, regions=["eu"])
    )
    Blocking(deployment).block("cy", "bob")
    Eraser(deployment).erase("cy")
    assert us.blocked_creators("bob") == []  # and erasing the blocker
    assert not verify_erasure(deployment, "cy").remnants


_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "follow_event",
                "unfollow_event",
                "follow",
                "unfollow",
                "block",
                "unblock",
                "blocked",  # the creator blocks the user
                "unblocked",
            ]
        ),
        st.sampled_from(["v1", "v4"]),
    ),
    max_size=14,
)


def test_follows_and_blocks_keep_their_rules_in_any_order(deployment: Deployment) -> None:
    """Any mix of follow/unfollow events, API follows and blocks: the store's two lists
    are the model's (a block ends a follow; no follow of a blocked creator, by event or
    API, until unblocked)."""
    _world(deployment)
    Catalog(deployment).create_video(
        VideoIn(video_id="v4", creator_id="cy", duration_ms=10_000, regions=["us"])
    )
    creator = {"v1": "bob", "v4": "cy"}
    following, blocking = Following(deployment), Blocking(deployment)
    us = deployment.store("us")
    runs = itertools.count()

    @settings(max_examples=40, deadline=None)
    @given(_ACTIONS)
    def check(actions: list[tuple[str, str]]) -> None:
        user = f"mix{next(runs)}"
        Catalog(deployment).create_user(UserIn(user_id=user, home_region="us"))
        Catalog(deployment).create_video(  # so that creators can block them
            VideoIn(video_id=f"{user}-v", creator_id=user, duration_ms=10_000, regions=["us", "eu"])
        )
        follows: set[str] = set()
        blocks: set[str] = set()
        blockers: set[str] = set()
        for n, (action, video) in enumerate(actions):
            c = creator[video]
            if action.endswith("_event"):
                kind = action.removesuffix("_event")
                _ingest(deployment, _event(n, user, video, kind) | {"event_id": f"{user}-{n}"})
                if kind == "unfollow":
                    follows.discard(c)
                elif c not in blocks | blockers:
                    follows.add(c)
            elif action == "follow":
                if c in blocks | blockers:
                    with pytest.raises(Conflict):
                        following.follow(user, c)
                else:
                    following.follow(user, c)
                    follows.add(c)
            elif action == "unfollow":
                following.unfollow(user, c)
                follows.discard(c)
            elif action == "block":
                blocking.block(user, c)
                blocks.add(c)
                follows.discard(c)
            elif action == "unblock":
                blocking.unblock(user, c)
                blocks.discard(c)
            elif action == "blocked":
                blocking.block(c, user)
                blockers.add(c)
                follows.discard(c)
            else:
                blocking.unblock(c, user)
                blockers.discard(c)
            assert sorted(us.followed_creators(user)) == sorted(follows), actions[: n + 1]
            assert sorted(us.blocked_creators(user)) == sorted(blocks | blockers), actions[: n + 1]
            assert {b.creator_id for b in user_blocks(us, user)} == blocks, actions[: n + 1]

    check()
