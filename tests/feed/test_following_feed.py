"""The "following" source reads the store's list of follows: a follow reaches the next
page however it was made and however long ago, and an unfollow takes it out."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fyp.access.keys import KeyStore
from fyp.catalog.blocks import Blocking
from fyp.catalog.models import UserPatch
from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

USER = "u2"  # homed in us
BLOCK = "a block between you and this creator"
CREATOR = "u7"  # creates v7, v19, v31, ... (video k is u{k % 12}'s)


def _client(d: Deployment) -> TestClient:
    _, key = KeyStore(d).create("tests", ["admin"])
    # an operator following for the user gives a reason, as an operator's read does
    return TestClient(
        create_app(d), headers={"Authorization": f"Bearer {key}", "X-Fyp-Reason": "t"}
    )


def _from_follows(client: TestClient, n: int = 10) -> list[dict[str, Any]]:
    """The items of the user's next page that the following source put there."""
    page = client.get(f"/v1/users/{USER}/feed", params={"n": n}, headers={"X-Fyp-Reason": "t"})
    assert page.status_code == 200, page.text
    return [i for i in page.json()["items"] if i["source"] == "following"]


def _creator(d: Deployment, video_id: str) -> str | None:
    video = d.store("us").get_video(video_id)
    return None if video is None else video.creator_id


def _shown_and_why(service: FeedService, user: str) -> tuple[set[str | None], set[str]]:
    """The creators of the user's next page, and the reasons the filters gave."""
    catalog = Catalog(service.deployment)
    page = service.feed(user, n=20, record=False)
    removed = service.feed(user, n=5, record=False, debug=True).removed
    assert page.items
    return {catalog.get_video(i.video_id).creator_id for i in page.items}, {
        r["reason"] for r in removed
    }


def test_a_follow_reaches_the_next_page_and_an_unfollow_takes_it_out(
    trained: Deployment,
) -> None:
    with _client(trained) as client:
        assert _from_follows(client) == []  # nobody followed yet
        assert client.put(f"/v1/users/{USER}/following/{CREATOR}").status_code == 201
        followed = _from_follows(client)
        assert followed, "a new follow changes the very next page"
        assert {_creator(trained, i["video_id"]) for i in followed} == {CREATOR}
        assert {i["explanation"]["code"] for i in followed} == {"followed_creator"}
        assert client.delete(f"/v1/users/{USER}/following/{CREATOR}").status_code == 204
        assert _from_follows(client) == []


def test_a_follow_event_counts_however_many_events_came_after(trained: Deployment) -> None:
    """The feed reads a user's latest 300 events; a follow is not one of them to fade."""
    ingest = Ingestor(trained).ingest
    video = "v7"  # CREATOR's
    assert _creator(trained, video) == CREATOR
    service = FeedService(trained)
    model = service.model("us")
    code = model.creator_index[CREATOR]
    assert ingest([{"event_id": "fol", "user_id": USER, "video_id": video, "type": "follow"}])
    assert code in service.state(USER, model).followed_creators
    later = [
        {"event_id": f"imp{k}", "user_id": USER, "video_id": f"v{k % 2}", "type": "impression"}
        for k in range(400)
    ]
    assert all(r.status == "stored" for r in ingest(later).results)
    assert "fol" not in {e.event_id for e in trained.store("us").user_events(USER, 300)}
    assert code in service.state(USER, model).followed_creators
    ingest([{"event_id": "unf", "user_id": USER, "video_id": video, "type": "unfollow"}])
    assert service.state(USER, model).followed_creators == {}


def test_a_blocked_creator_leaves_every_feed(trained: Deployment) -> None:
    """The next page, personalised or not, holds none of the creator's videos, and the
    debug log says why; unblocking lets them back."""
    service = FeedService(trained)
    catalog = Catalog(trained)
    first = service.feed("u6", n=10, record=False)
    creator = catalog.get_video(first.items[0].video_id).creator_id
    assert creator is not None
    Blocking(trained).block("u6", creator)

    def shown_and_why() -> tuple[set[str | None], set[str]]:
        return _shown_and_why(service, "u6")

    creators, why = shown_and_why()
    assert creator not in creators and BLOCK in why
    Catalog(trained).update_user("u6", UserPatch(consents={"personalised_feed": False}))
    assert service.feed("u6", n=5, record=False).personalised is False
    creators, why = shown_and_why()  # the feed not based on profiling keeps to it too
    assert creator not in creators and BLOCK in why
    Blocking(trained).unblock("u6", creator)
    assert BLOCK not in shown_and_why()[1]


def test_a_creator_who_blocked_the_user_leaves_their_feeds(trained: Deployment) -> None:
    """The other side of a block: the creator blocks the viewer, and the viewer's next
    page, personalised or not, holds none of the creator's videos (the same neutral
    reason: it does not say who blocked whom); the unblock lets them back."""
    service = FeedService(trained)
    catalog = Catalog(trained)
    first = service.feed("u8", n=10, record=False)
    creator = catalog.get_video(first.items[0].video_id).creator_id
    assert creator is not None and creator != "u8"
    Blocking(trained).block(creator, "u8")  # u8 creates videos too: v8, v20, ...

    def shown_and_why() -> tuple[set[str | None], set[str]]:
        return _shown_and_why(service, "u8")

    creators, why = shown_and_why()
    assert creator not in creators and BLOCK in why
    Catalog(trained).update_user("u8", UserPatch(consents={"personalised_feed": False}))
    creators, why = shown_and_why()
    assert creator not in creators and BLOCK in why
    Blocking(trained).unblock(creator, "u8")
    assert BLOCK not in shown_and_why()[1]
