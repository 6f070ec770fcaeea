"""One rule for the videos a viewer chose (``fyp.feed.watch``): the Following tab and a
video by link show the same videos to the same viewer, and a by-link refusal names the
age only when the age is all that bars it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from fyp.access.keys import KeyStore
from fyp.catalog.follows import Following
from fyp.catalog.models import CURRENT_YEAR, UserIn, Video
from fyp.catalog.service import Catalog
from fyp.errors import AgeRestricted, StorageError, UnknownVideo
from fyp.feed.watch import Viewer, WatchCheck, link_region
from fyp.moderation.service import cell
from fyp.moderation.snapshot import State, followers_barred_reason
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

STATES = ["approved", "restricted", "age_restricted", "pending", "rejected", "blocked"]
FAILS = "check fails"

# per region: its moderation state, None (not published there) or a check that raises
Region = State | None | str
regions_st = st.lists(
    st.one_of(st.tuples(st.sampled_from(STATES), st.booleans()), st.none(), st.just(FAILS)),
    min_size=1,
    max_size=4,
)


def _check(states: Sequence[Region]) -> tuple[list[str], WatchCheck]:
    names = [f"r{k}" for k in range(len(states))]
    by_name = dict(zip(names, states, strict=True))

    def check(region: str, video_ids: Sequence[str], adult: bool) -> dict[str, str]:
        state = by_name[region]
        if state == FAILS:
            raise RuntimeError("store unreachable")
        if state is None or isinstance(state, str):
            return {v: "not available" for v in video_ids}
        why = followers_barred_reason(state, adult)
        return {} if why is None else {v: why for v in video_ids}

    return names, check


def _serves(state: Region, adult: bool) -> bool:
    return isinstance(state, tuple) and followers_barred_reason(state, adult) is None


@given(regions_st, st.booleans())
def test_a_link_is_served_refused_or_failed_by_the_rule(states: list[Region], adult: bool) -> None:
    names, check = _check(states)
    try:
        region = link_region(check, "v", names, adult)
    except StorageError:
        assert FAILS in states and not any(_serves(s, adult) for s in states)
    except AgeRestricted:
        assert not adult and FAILS not in states
        assert any(_serves(s, True) for s in states)  # an adult would see it
        assert not any(_serves(s, False) for s in states)
    except UnknownVideo:
        assert FAILS not in states
        assert not any(_serves(s, True) for s in states)  # no adult would see it either
    else:
        assert _serves(states[names.index(region)], adult)
        assert all(not _serves(s, adult) for s in states[: names.index(region)])


def test_an_unknown_or_uncertain_age_is_not_adult() -> None:
    assert Viewer("a", "us", CURRENT_YEAR - 19, None).adult
    assert not Viewer("b", "us", CURRENT_YEAR - 18, None).adult  # maybe still 17
    assert not Viewer("c", "us", None, None).adult


def test_the_tab_and_the_link_show_the_same_videos(deployment: Deployment) -> None:
    """Every state, with and without the creator rules passed, to an adult, a child and
    a viewer of unknown age who follow the creator: on the tab exactly when by link."""
    catalog = Catalog(deployment)
    viewers = {"fan": 1990, "kid": CURRENT_YEAR - 12, "nobirth": None}
    for user, year in {**viewers, "bob": 1985}.items():
        catalog.create_user(UserIn(user_id=user, home_region="us", birth_year=year))
    store, mod = deployment.store("us"), cell(deployment.store("us")).mod
    videos: list[str] = []
    for k, (state, creator_ok) in enumerate((s, ok) for s in STATES for ok in (True, False)):
        video = f"{state}-{creator_ok}"
        at = 1_700_000_000_000 + k
        store.bulk_insert_videos(
            [
                Video(
                    video_id=video,
                    creator_id="bob",
                    duration_ms=9_000,
                    regions=["us"],
                    created_at_ms=at,
                    updated_at_ms=at,
                )
            ]
        )
        mod.write(video, state, creator_ok, "t", "review", "t", at, {})
        videos.append(video)
    token = KeyStore(deployment).create("app", ["feed"], ["us"])[1]
    with TestClient(create_app(deployment), headers={"Authorization": f"Bearer {token}"}) as c:
        for viewer in viewers:
            Following(deployment).follow(viewer, "bob")
            page = c.get(f"/v1/users/{viewer}/following/feed", params={"n": 100})
            assert page.status_code == 200, page.text
            on_tab = {item["video_id"] for item in page.json()["items"]}
            by_link = {
                v
                for v in videos
                if c.get(f"/v1/videos/{v}", params={"viewer_id": viewer}).status_code == 200
            }
            assert on_tab == by_link, viewer
            assert on_tab, viewer  # approved and restricted at least


@pytest.mark.parametrize("adult", [True, False])
def test_no_region_is_not_found(adult: bool) -> None:
    names, check = _check([])
    with pytest.raises(UnknownVideo):
        link_region(check, "v", names, adult)
