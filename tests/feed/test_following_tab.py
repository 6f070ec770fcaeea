"""The Following tab (``GET /v1/users/{id}/following/feed``): the followed creators'
videos of the user's home region, newest first, only what the user may watch there,
paged by a keyset cursor that new uploads never shift. Runs on SQLite and, through
tests/storage/test_postgres_deployment.py, on PostgreSQL."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog, sql_store
from fyp.catalog.follows import Following
from fyp.catalog.models import CURRENT_YEAR, UserIn, UserPatch, Video, VideoIn, VideoPatch, now_ms
from fyp.catalog.service import Catalog
from fyp.errors import InvalidRequest, StorageError, UnknownUser, ValidationFailed
from fyp.events.ingest import Ingestor
from fyp.feed.following_tab import FollowingTab
from fyp.moderation import Moderator
from fyp.moderation.service import cell
from fyp.moderation.snapshot import CatalogSnapshot
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from fyp.storage.base import EventRow
from serving.errors import assert_error

T0 = 1_700_000_000_000
ROUTE = "/v1/users/{}/following/feed"


def _people(d: Deployment) -> None:
    """fan (adult), kid (12), maybe18 (born 18 years ago: maybe still 17), nobirth (age
    unknown) in us; eve (adult) in eu; creators bob, cy (adults) and teen (14) in us."""
    catalog = Catalog(d)
    for user, region, year in (
        ("fan", "us", 1990),
        ("kid", "us", CURRENT_YEAR - 12),
        ("maybe18", "us", CURRENT_YEAR - 18),
        ("nobirth", "us", None),
        ("eve", "eu", 1990),
        ("bob", "us", 1985),
        ("cy", "us", 1985),
        ("teen", "us", CURRENT_YEAR - 14),
    ):
        catalog.create_user(UserIn(user_id=user, home_region=region, birth_year=year))


def _publish(
    d: Deployment,
    video_id: str,
    creator: str,
    at_ms: int,
    state: str | None = "approved",
    regions: Sequence[str] = ("us",),
    creator_ok: bool = True,
) -> None:
    """A video uploaded at ``at_ms`` and its verdict in each of its regions (None: no
    verdict row, which is pending)."""
    video = Video(
        video_id=video_id,
        creator_id=creator,
        duration_ms=9_000,
        regions=list(regions),
        created_at_ms=at_ms,
        updated_at_ms=at_ms,
    )
    for region in regions:
        store = d.store(region)
        store.bulk_insert_videos([video])
        if state is not None:
            cell(store).mod.write(video_id, state, creator_ok, "t", "review", "t", at_ms, {})


def _follow(d: Deployment, user: str, *creators: str) -> None:
    for creator in creators:
        Following(d).follow(user, creator)


def _ids(page: dict[str, Any]) -> list[str]:
    return [item["video_id"] for item in page["items"]]


def _page(client: TestClient, user: str = "fan", **params: Any) -> dict[str, Any]:
    resp = client.get(ROUTE.format(user), params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _scroll(
    client: TestClient, user: str = "fan", n: int = 4, after: str | None = None
) -> list[str]:
    """Every video from the first page (or from ``after``) to the end, ``n`` a page."""
    seen: list[str] = []
    cursor = after
    while True:
        page = _page(client, user, n=n, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= n
        seen += _ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def _catalogue(d: Deployment, *followed: str) -> None:
    """bob and cy upload 11 videos between them, some in the same millisecond; fan
    follows ``followed``."""
    _people(d)
    for k in range(11):
        # v03 and v04 share a millisecond, so do v07, v08 and v09
        at = T0 + {4: 3, 8: 7, 9: 7}.get(k, k) * 1000
        _publish(d, f"v{k:02d}", ("bob", "cy")[k % 2], at)
    _follow(d, "fan", *followed)


def test_newest_first_paged_to_the_end(deployment: Deployment, client: TestClient) -> None:
    _catalogue(deployment, "bob", "cy")
    # newest first; within a millisecond by video id
    expected = ["v10", "v07", "v08", "v09", "v06", "v05", "v03", "v04", "v02", "v01", "v00"]
    first = _page(client, n=4)
    assert _ids(first) == expected[:4]
    assert [i["position"] for i in first["items"]] == [0, 1, 2, 3]
    item = first["items"][0]
    assert item == {
        "video_id": "v10",
        "creator_id": "bob",
        "created_at_ms": T0 + 10_000,
        "position": 0,
        "reason": "new from a creator you follow",
        "explanation": {"code": "followed_creator", "params": {}},
    }
    assert first["user_id"] == "fan" and first["region"] == "us" and first["lang"] == "en"
    for n in (1, 3, 4, 11, 100):
        assert _scroll(client, n=n) == expected, n
    last = _page(client, n=11)
    assert _ids(last) == expected and last["next_cursor"] is None  # exactly full: the end
    # a user following nobody, or creators with nothing published here: an empty tab
    assert _page(client, "eve") == {
        "user_id": "eve",
        "region": "eu",
        "lang": "en",
        "items": [],
        "next_cursor": None,
    }


def test_a_new_upload_never_shifts_or_repeats_later_pages(
    deployment: Deployment, client: TestClient
) -> None:
    _catalogue(deployment, "bob", "cy")
    first = _page(client, n=4)
    # between pages: new uploads by a followed creator, one in the very millisecond of
    # the page's last video but sorting before it, and the newest of all
    _publish(deployment, "v07a", "bob", T0 + 7_000)
    _publish(deployment, "v99", "cy", now_ms())
    Catalog(deployment).create_video(  # through the catalogue: pending, so not shown
        VideoIn(video_id="fresh", creator_id="bob", duration_ms=9_000, regions=["us"])
    )
    rest = _scroll(client, n=3, after=first["next_cursor"])
    assert _ids(first) == ["v10", "v07", "v08", "v09"]
    assert rest == ["v06", "v05", "v03", "v04", "v02", "v01", "v00"]
    assert not set(rest) & set(_ids(first))
    # the new ones are on a fresh first page
    assert _ids(_page(client, n=5)) == ["v99", "v10", "v07", "v07a", "v08"]


def test_an_unfollow_takes_the_creator_off_the_next_page(
    deployment: Deployment, client: TestClient
) -> None:
    _catalogue(deployment, "bob", "cy")
    first = _page(client, n=3)
    assert client.delete("/v1/users/fan/following/cy").status_code == 204
    rest = _scroll(client, n=3, after=first["next_cursor"])
    assert rest == ["v06", "v04", "v02", "v00"]  # bob's only, from where the page ended
    # an unfollow event on a video of bob's: his are gone too, a follow event brings
    # them back (the same list the API keeps)
    event = {"event_id": "uf", "user_id": "fan", "video_id": "v00", "type": "unfollow"}
    Ingestor(deployment).ingest([event])
    assert _page(client)["items"] == []
    Ingestor(deployment).ingest([{**event, "event_id": "f", "type": "follow"}])
    assert _ids(_page(client, n=2)) == ["v10", "v08"]


def _not_interested(d: Deployment, user: str, *video_ids: str, days_ago: float = 0) -> None:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    events = [
        {"event_id": f"ni-{user}-{v}-{days_ago}", "user_id": user, "video_id": v}
        | {"type": "not_interested", "ts": at.isoformat()}
        for v in video_ids
    ]
    assert Ingestor(d).ingest(events).counts["stored"] == len(events)


def test_videos_marked_not_interested_are_off_the_tab(
    deployment: Deployment, client: TestClient
) -> None:
    """A video the user marked "not interested" leaves the tab for as long as it is off
    For You (the seen window, 30 days by default), from the next page on, without
    shifting the cursor: nothing skipped, nothing repeated. Only that video: the
    creator's other videos stay (the follow is the user's own word on the creator; a
    block is the lasting "not interested" in one), and another user's choice is theirs."""
    _catalogue(deployment, "bob", "cy")
    Catalog(deployment).create_user(UserIn(user_id="other", home_region="us", birth_year=1990))
    _follow(deployment, "other", "bob", "cy")
    first = _page(client, n=4)
    assert _ids(first) == ["v10", "v07", "v08", "v09"]
    # between pages: a video of the next page, and the one the cursor names (served)
    _not_interested(deployment, "fan", "v05", "v09")
    _not_interested(deployment, "fan", "v03", days_ago=20)  # within the window
    _not_interested(deployment, "fan", "v02", days_ago=40)  # before it: For You forgot it
    _not_interested(deployment, "other", "v06")
    rest = _scroll(client, n=3, after=first["next_cursor"])
    assert rest == ["v06", "v04", "v02", "v01", "v00"]
    everything = ["v10", "v07", "v08", "v06", "v04", "v02", "v01", "v00"]
    for n in (1, 2, 3, 8):
        assert _scroll(client, n=n) == everything, n
    # cy's other videos (v07, v01) stay; the other follower's tab keeps what fan hid
    assert "v05" in _scroll(client, "other") and "v06" not in _scroll(client, "other")


def test_what_each_moderation_state_shows(deployment: Deployment, client: TestClient) -> None:
    """Approved and restricted ("viewable by followers") are shown; age-restricted only
    to viewers certainly 18; pending (with or without a verdict row), rejected and
    blocked never; nothing of a creator who fails the creator rules."""
    _people(deployment)
    states: list[tuple[str, str | None, bool]] = [
        ("approved", "approved", True),
        ("restricted", "restricted", True),
        ("age_restricted", "age_restricted", True),
        ("pending", "pending", True),
        ("no_verdict", None, True),
        ("rejected", "rejected", True),
        ("blocked", "blocked", True),
        ("creator_not_ok", "approved", False),
        ("restricted_creator_not_ok", "restricted", False),
        ("age_restricted_creator_not_ok", "age_restricted", False),
    ]
    for k, (video, state, creator_ok) in enumerate(states):
        _publish(deployment, video, "bob", T0 + k, state, creator_ok=creator_ok)
    for viewer in ("fan", "kid", "maybe18", "nobirth"):
        _follow(deployment, viewer, "bob")
    adult = ["age_restricted", "restricted", "approved"]
    assert _ids(_page(client, "fan")) == adult
    for viewer in ("kid", "maybe18", "nobirth"):
        assert _ids(_page(client, viewer)) == ["restricted", "approved"], viewer
    # a decision shows on the very next page, either way
    mod = cell(deployment.store("us")).mod
    mod.write("approved", "blocked", True, "t", "takedown", "t", T0, {})
    mod.write("pending", "approved", True, "t", "review", "t", T0, {})
    assert _ids(_page(client, "fan")) == ["pending", "age_restricted", "restricted"]


def test_the_creator_rule_with_real_moderation(deployment: Deployment, client: TestClient) -> None:
    """A run of the automated checks: a 14-year-old creator's clean video is approved
    but kept out of For You by the creator rule, and off the Following tab too."""
    _people(deployment)
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
    _follow(deployment, "fan", "bob", "teen")
    assert _page(client)["items"] == []  # not judged yet: pending
    Moderator(deployment).run("us")
    states = cell(deployment.store("us")).mod.states(["by_bob", "by_teen"])
    assert states == {"by_bob": ("approved", True), "by_teen": ("approved", False)}
    assert _ids(_page(client)) == ["by_bob"]


def test_only_the_home_regions_catalogue(deployment: Deployment, client: TestClient) -> None:
    _people(deployment)
    _publish(deployment, "both", "bob", T0 + 3, regions=("us", "eu"))
    _publish(deployment, "eu_only", "bob", T0 + 2, regions=("eu",))
    _publish(deployment, "us_only", "bob", T0 + 1)
    # in eu, "both" is blocked by eu's moderation: its copy there is judged on its own
    cell(deployment.store("eu")).mod.write("both", "blocked", True, "t", "review", "t", T0, {})
    _follow(deployment, "fan", "bob")
    _follow(deployment, "eve", "bob")
    assert _ids(_page(client, "fan")) == ["both", "us_only"]
    assert _ids(_page(client, "eve")) == ["eu_only"]
    # withdrawn from us: off fan's next page; deleted: off everyone's
    Catalog(deployment).update_video("both", VideoPatch(regions=["eu"]))
    assert _ids(_page(client, "fan")) == ["us_only"]
    Catalog(deployment).delete_video("eu_only")
    assert _page(client, "eve")["items"] == []


def test_the_same_with_personalisation_off_and_not_recorded_as_served(
    deployment: Deployment, client: TestClient
) -> None:
    _catalogue(deployment, "bob", "cy")
    on, scrolled = _page(client, n=5), _scroll(client)
    Catalog(deployment).update_user("fan", UserPatch(consents={"personalised_feed": False}))
    assert _page(client, n=5) == on and _scroll(client) == scrolled
    # the For You served log holds none of it: For You may still show these videos
    assert deployment.served_log("us").served_since("fan", 0) == []


def test_languages_and_videos_in_the_items(deployment: Deployment, client: TestClient) -> None:
    _catalogue(deployment, "bob")
    hans = client.get(ROUTE.format("fan"), params={"n": 1, "lang": "zh-CN"})
    assert hans.headers["content-language"] == "zh-Hans"
    assert hans.json()["items"][0]["reason"] == "你关注的创作者发布了新作品"
    hant = client.get(ROUTE.format("fan"), params={"n": 1}, headers={"Accept-Language": "zh-TW"})
    assert hant.json()["lang"] == "zh-Hant" and hant.headers["vary"] == "Accept-Language"
    Catalog(deployment).update_user("fan", UserPatch(language="zh-Hans"))
    assert _page(client, n=1)["lang"] == "zh-Hans"  # the profile's, when the request says none
    assert_error(client.get(ROUTE.format("fan"), params={"lang": "xx"}), 422, "validation_failed")
    page = _page(client, n=2, include="video")
    video = deployment.store("us").get_video("v10")
    assert video is not None
    assert page["items"][0]["video"] == video.model_dump(mode="json")
    assert page["items"][0]["explanation"]["code"] == "followed_creator"


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_the_tabs_errors(deployment: Deployment, client: TestClient) -> None:
    _catalogue(deployment)
    assert_error(client.get(ROUTE.format("ghost")), 404, "unknown_user")
    for n in (0, 101, "x"):
        assert_error(client.get(ROUTE.format("fan"), params={"n": n}), 422, "validation_failed")
    bad = ["@@", "", "e30", _cursor([1]), _cursor(["1", "v"]), _cursor([1.5, "v"])]
    bad += [_cursor([2**63, "v"]), _cursor([True, "v"]), _cursor([1, "v\x00"]), _cursor([1, 2])]
    bad += [_cursor([1, "\ud800"]), _cursor({"p": 1}), "W10"]
    for cursor in bad:
        if cursor == "":
            continue  # no cursor: the first page
        resp = client.get(ROUTE.format("fan"), params={"cursor": cursor})
        assert_error(resp, 400, "invalid_request")
        # the list of follows reads the same kind of cursor (these were 500s there)
        listed = client.get("/v1/users/fan/following", params={"cursor": cursor})
        assert_error(listed, 400, "invalid_request")
    assert client.get(ROUTE.format("fan"), params={"cursor": ""}).status_code == 200
    assert_error(
        client.get(ROUTE.format("fan"), params={"cursor": "x" * 513}), 422, "validation_failed"
    )
    tab = FollowingTab(deployment)
    with pytest.raises(ValidationFailed):
        tab.page("fan", 0)
    with pytest.raises(InvalidRequest):
        tab.page("fan", 10, _cursor([-(2**63) - 1, "v"]))
    with pytest.raises(UnknownUser):
        tab.page("ghost")
    assert tab.page("fan", 10, _cursor([-(2**63), "v"])).items == []  # in range: the end


def test_a_failing_check_leaves_the_videos_out(deployment: Deployment) -> None:
    """Fail closed: what the check could not judge is not shown; the page ends before
    it and its cursor lets the next page try again; a page with nothing shown is a 503."""
    _catalogue(deployment, "bob", "cy")
    calls: list[Sequence[str]] = []

    def second_fails(region: str, video_ids: Sequence[str], adult: bool) -> dict[str, str]:
        calls.append(video_ids)
        if len(calls) == 2:
            raise RuntimeError("moderation store unreachable")
        return {v: "rejected by moderation" for v in video_ids if v in {"v10", "v07", "v08"}}

    tab = FollowingTab(deployment, check=second_fails)
    page = tab.page("fan", 3)  # first batch: 4 read, 3 barred; the second batch fails
    assert [i.video_id for i in page.items] == ["v09"] and page.cursor is not None
    assert len(calls) == 2
    again = tab.page("fan", 3, page.cursor)  # the check works again: from right after v09
    assert [i.video_id for i in again.items] == ["v06", "v05", "v03"]

    def always_fails(region: str, video_ids: Sequence[str], adult: bool) -> dict[str, str]:
        raise RuntimeError("moderation store unreachable")

    with pytest.raises(StorageError):
        FollowingTab(deployment, check=always_fails).page("fan", 3)


def test_a_failing_snapshot_is_a_503_over_http(
    deployment: Deployment, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _catalogue(deployment, "bob")
    assert _page(client)["items"]

    def broken(self: CatalogSnapshot, video_ids: Sequence[str], adult: bool) -> dict[str, str]:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(CatalogSnapshot, "barred_for_followers", broken)
    assert_error(client.get(ROUTE.format("fan")), 503, "storage_error")


def test_many_barred_videos_are_read_past(deployment: Deployment) -> None:
    """A page is filled however many videos in a row the viewer may not see."""
    _people(deployment)
    for k in range(60):
        _publish(deployment, f"r{k:02d}", "bob", T0 + 100 + k, "rejected")
    _publish(deployment, "old", "bob", T0)
    _follow(deployment, "fan", "bob")
    page = FollowingTab(deployment).page("fan", 1)
    assert [i.video_id for i in page.items] == ["old"] and page.cursor is None


def test_keys_reach_the_tab_of_their_regions_only(deployment: Deployment) -> None:
    _catalogue(deployment, "bob")
    keys = KeyStore(deployment)
    tokens = {
        name: keys.create(name, [role], regions)[1]
        for name, role, regions in (
            ("feed-us", "feed", ["us"]),
            ("feed-eu", "feed", ["eu"]),
            ("ingest", "ingest", None),
            ("moderator", "moderator", None),
            ("auditor", "auditor", None),
        )
    }
    head = AuditLog(deployment.store("us")).head()
    with TestClient(create_app(deployment)) as c:

        def get(key: str, reason: str | None = None) -> Any:
            headers = {"Authorization": f"Bearer {tokens[key]}"}
            if reason is not None:
                headers["X-Fyp-Reason"] = reason
            return c.get(ROUTE.format("fan"), headers=headers)

        assert get("feed-us").status_code == 200  # the app: no reason, no audit entry
        assert AuditLog(deployment.store("us")).head() == head
        for key in ("feed-eu", "ingest", "moderator"):
            assert_error(get(key), 403, "forbidden")
        assert_error(get("auditor"), 400, "invalid_request")  # an operator says why
        assert get("auditor", "ticket 7").status_code == 200
        entries = list(AuditLog(deployment.store("us")).entries(after_seq=head[0]))
        assert [e.details["route"] for e in entries] == ["GET /v1/users/{user_id}/following/feed"]
        assert entries[0].details["reason"] == "ticket 7"


_NO_PLAY = (None, None, False, False, False)  # an event's play fields
_SHOWN = {"approved", "restricted"}  # to anyone; age_restricted to adults only
_OK = ("approved", True, ("us",))
_STATES = ["approved"] * 4 + ["restricted", "age_restricted", "pending", "rejected", "blocked"]
_VIDEOS = st.lists(
    st.tuples(
        st.text(alphabet="-.0:AZ_a", min_size=1, max_size=3),  # ids in byte order's corners
        st.integers(0, 2),  # creator
        st.integers(0, 3),  # upload time: few, so ties are common
        st.sampled_from([*_STATES, None]),  # None: no verdict (pending)
        st.sampled_from([True] * 4 + [False]),  # creator passed the creator rules
        st.sampled_from([("us",)] * 3 + [("eu",), ("us", "eu")]),
    ),
    max_size=30,
    unique_by=lambda v: v[0],
)


# a "not interested" mark: (which video, by the viewer now / by the viewer before the
# seen window / by another user now); only the first hides the video
_MARKS = st.lists(st.tuples(st.integers(0, 29), st.sampled_from(["now"] * 3 + ["old", "other"])))
_DAY_MS = 86_400_000


def test_pages_concatenated_are_the_followed_creators_visible_videos_newest_first(
    deployment: Deployment,
) -> None:
    """Any catalogue, follows, "not interested" marks, viewer age and page size: the
    pages, one after another, are exactly a plain model of the tab (the followed
    creators' videos published in the home region that the viewer may watch and did not
    mark "not interested" within the seen window, newest first, then by id in byte
    order), every page but the last full."""
    runs = itertools.count()

    @settings(max_examples=60, deadline=None)
    @given(
        _VIDEOS,
        st.sets(st.integers(0, 2)),
        st.booleans(),
        st.integers(1, 4),
        _MARKS,
    )
    # a millisecond shared by more videos of one creator than a page reads of each
    @example([(v, 0, 1, *_OK) for v in "cab"] + [("d", 0, 0, *_OK)], {0}, True, 1, [])
    # a creator's newest videos, more than a page reads of each, all hidden: the page
    # still reaches their older ones, in order with the other creator's
    @example(
        [(v, 0, 3, *_OK) for v in "abc"] + [("d", 0, 1, *_OK), ("e", 1, 2, *_OK)],
        {0, 1},
        True,
        1,
        [(0, "now"), (1, "now"), (2, "now")],
    )
    def check(
        videos: list[tuple[str, int, int, str | None, bool, tuple[str, ...]]],
        followed: set[int],
        adult: bool,
        n: int,
        marks: list[tuple[int, str]],
    ) -> None:
        run = next(runs)
        user, other, prefix = f"viewer{run}", f"other{run}", f"r{run}-"
        for who in (user, other):
            birth_year = 1990 if adult else CURRENT_YEAR - 12
            Catalog(deployment).create_user(
                UserIn(user_id=who, home_region="us", birth_year=birth_year)
            )
        for vid, creator, at, state, creator_ok, regions in videos:
            c = f"{prefix}c{creator}"
            _publish(deployment, prefix + vid, c, T0 + at, state, regions, creator_ok)
        sql_store(deployment.store("us")).executemany(
            "INSERT INTO follows (user_id, creator_id, since_ms) VALUES (?, ?, ?)",
            [(user, f"{prefix}c{k}", T0) for k in followed],
        )
        t, hidden = now_ms(), set()
        rows = []
        for k, (index, when) in enumerate(marks):
            if not videos:
                break
            vid = prefix + videos[index % len(videos)][0]
            ts = t - 31 * _DAY_MS if when == "old" else t
            who = other if when == "other" else user
            rows.append(EventRow(f"{prefix}ni{k}", who, vid, "not_interested", ts, *_NO_PLAY))
            hidden |= {vid} if when == "now" else set()
        deployment.store("us").bulk_insert_events(rows)
        shown = _SHOWN | ({"age_restricted"} if adult else set())
        model = [
            (prefix + vid)
            for vid, creator, at, state, creator_ok, regions in sorted(
                videos, key=lambda v: (-v[2], (prefix + v[0]).encode())
            )
            if creator in followed
            and "us" in regions
            and state in shown
            and creator_ok
            and prefix + vid not in hidden
        ]
        tab = FollowingTab(deployment)
        pages = [tab.page(user, n)]
        while (cursor := pages[-1].cursor) is not None:
            pages.append(tab.page(user, n, cursor))
        assert [i.video_id for p in pages for i in p.items] == model
        assert all(len(p.items) == n for p in pages[:-1])
        assert 0 < len(pages[-1].items) <= n or model == []

    check()


def test_a_creator_called_feed_is_followed_through_the_api_beside_the_tab(
    deployment: Deployment, client: TestClient
) -> None:
    """``.../following/feed`` is the Following tab for a GET and the creator ``feed`` for
    a PUT or DELETE (it was a 405: such a creator was followed by events only)."""
    _people(deployment)
    Catalog(deployment).create_user(UserIn(user_id="feed", home_region="us", birth_year=1990))
    _publish(deployment, "vf", "feed", T0)
    _publish(deployment, "vb", "bob", T0 + 1000)
    _follow(deployment, "fan", "bob")
    assert _ids(_page(client)) == ["vb"]  # the tab, before
    made = client.put(ROUTE.format("fan"))
    assert made.status_code == 201, made.text
    assert made.json()["creator_id"] == "feed" and made.json()["following"] is True
    assert client.put(ROUTE.format("fan")).status_code == 200  # a retry changes nothing
    listed = client.get("/v1/users/fan/following").json()["following"]
    assert [f["creator_id"] for f in listed] == ["feed", "bob"]
    assert _ids(_page(client)) == ["vb", "vf"]  # the tab, with the creator feed's video
    assert client.delete(ROUTE.format("fan")).status_code == 204
    assert _ids(_page(client)) == ["vb"]
    assert deployment.store("us").followed_creators("fan") == ["bob"]
    blocked = client.put("/v1/users/fan/blocked/feed")
    assert blocked.status_code == 201 and blocked.json()["blocked"] is True
    assert_error(client.put(ROUTE.format("fan")), 409, "conflict")  # blocked: as any creator
