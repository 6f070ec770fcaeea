"""The catalogue: users in exactly one region, videos copied to each region they are in."""

from __future__ import annotations

import contextlib
import threading
import unicodedata

import pytest
from pydantic import ValidationError

from fyp.catalog.models import User, UserIn, UserPatch, Video, VideoIn, VideoPatch
from fyp.catalog.service import Catalog
from fyp.errors import (
    AlreadyExists,
    StorageError,
    UnknownRegion,
    UnknownUser,
    UnknownVideo,
    ValidationFailed,
)
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment
from fyp.storage import ErasedCounts, EventRow, LabelRow


@pytest.fixture
def catalog(deployment: Deployment) -> Catalog:
    return Catalog(deployment)


def video_in(video_id: str = "v1", regions: list[str] | None = None, **kw: object) -> VideoIn:
    return VideoIn.model_validate(
        {"video_id": video_id, "duration_ms": 15_000, "regions": regions or ["us"], **kw}
    )


def holders(d: Deployment, video_id: str) -> list[str]:
    return [r for r, s in d.stores.items() if s.get_video(video_id) is not None]


# -- users ----------------------------------------------------------------------------


def test_one_id_created_in_two_regions_at_once_gets_one_home(deployment: Deployment) -> None:
    """Two workers creating one id, one in us and one in eu, both found it free and both
    inserted it (3 of 60 tries in a chaos test): a user with two homes. The check and
    the insert now hold one lock of the deployment directory: the second waits for the
    first to commit, then finds the id taken."""
    inside, go = threading.Event(), threading.Event()
    first = Catalog(deployment)
    us = deployment.store("us")
    real = us.insert_user

    def slow_insert(user: User) -> None:  # the first creator, stopped after its check
        inside.set()
        assert go.wait(10)
        real(user)

    us.insert_user = slow_insert  # type: ignore[method-assign]
    outcome: dict[str, object] = {}

    def create(name: str, catalog: Catalog, region: str) -> None:
        try:
            outcome[name] = catalog.create_user(UserIn(user_id="twin", home_region=region))
        except AlreadyExists as exc:
            outcome[name] = exc

    with Deployment.open(deployment.config.root) as other:  # another process's
        a = threading.Thread(target=create, args=("a", first, "us"))
        a.start()
        assert inside.wait(10)
        b = threading.Thread(target=create, args=("b", Catalog(other), "eu"))
        b.start()
        b.join(0.5)
        assert b.is_alive()  # waiting for the first to finish
        go.set()
        a.join(10)
        b.join(10)
        assert isinstance(outcome["a"], User) and isinstance(outcome["b"], AlreadyExists)
        assert other.store("eu").get_user("twin") is None
    assert deployment.locate_users(["twin"], fresh=True) == {"twin": "us"}


def test_create_user_writes_only_to_the_home_region(
    catalog: Catalog, deployment: Deployment
) -> None:
    user = catalog.create_user(UserIn(user_id="u1", home_region="eu", country="FR"))
    assert isinstance(user, User)
    assert user.home_region == "eu"
    assert user.consents == {} and user.attributes == {}
    assert user.created_at_ms == user.updated_at_ms > 0
    assert deployment.store("eu").get_user("u1") == user
    assert deployment.store("us").get_user("u1") is None
    assert deployment.store("us").count_users() == 0


def test_get_user_finds_the_user_in_any_region(catalog: Catalog) -> None:
    created = catalog.create_user(UserIn(user_id="u1", home_region="eu", birth_year=1999))
    assert catalog.get_user("u1") == created
    assert catalog.get_user("u1").age(at_year=2024) == 25


def test_get_unknown_user(catalog: Catalog) -> None:
    with pytest.raises(UnknownUser) as info:
        catalog.get_user("nobody")
    assert info.value.details["user_id"] == "nobody"


@pytest.mark.parametrize("other_region", ["us", "eu"])
def test_user_id_is_unique_across_regions(catalog: Catalog, other_region: str) -> None:
    catalog.create_user(UserIn(user_id="u1", home_region="us"))
    with pytest.raises(AlreadyExists):
        catalog.create_user(UserIn(user_id="u1", home_region=other_region))


def test_unknown_home_region(catalog: Catalog, deployment: Deployment) -> None:
    with pytest.raises(UnknownRegion) as info:
        catalog.create_user(UserIn(user_id="u1", home_region="mars"))
    assert info.value.details["regions"] == ["eu", "us"]
    assert all(s.count_users() == 0 for s in deployment.stores.values())


def test_user_removed_behind_the_catalogs_back_is_unknown(
    catalog: Catalog, deployment: Deployment
) -> None:
    catalog.create_user(UserIn(user_id="u1", home_region="eu"))
    assert catalog.get_user("u1").home_region == "eu"  # caches the route
    deployment.store("eu").delete_user("u1")
    with pytest.raises(UnknownUser):
        catalog.get_user("u1")
    assert deployment.locate_users(["u1"]) == {}  # the stale route was dropped


def test_update_user(catalog: Catalog, deployment: Deployment) -> None:
    created = catalog.create_user(UserIn(user_id="u1", home_region="eu", country="FR"))
    updated = catalog.update_user(
        "u1", UserPatch(language="fr", consents={"ads": False}, attributes={"k": 1})
    )
    assert updated.country == "FR"  # untouched fields are kept
    assert updated.language == "fr"
    assert updated.consents == {"ads": False}
    assert updated.attributes == {"k": 1}
    assert updated.home_region == "eu"
    assert updated.created_at_ms == created.created_at_ms
    assert updated.updated_at_ms >= created.updated_at_ms
    assert catalog.get_user("u1") == updated
    assert deployment.store("eu").get_user("u1") == updated


def test_update_can_clear_a_field(catalog: Catalog) -> None:
    catalog.create_user(UserIn(user_id="u1", home_region="us", birth_year=1990))
    assert catalog.update_user("u1", UserPatch(birth_year=None)).birth_year is None
    assert catalog.get_user("u1").birth_year is None


def test_home_region_is_fixed(catalog: Catalog) -> None:
    catalog.create_user(UserIn(user_id="u1", home_region="us"))
    with pytest.raises(ValidationError, match="home_region"):
        UserPatch.model_validate({"home_region": "eu"})
    with pytest.raises(ValidationError):
        UserPatch.model_validate({"user_id": "u2"})
    assert catalog.get_user("u1").home_region == "us"


def test_update_unknown_user(catalog: Catalog) -> None:
    with pytest.raises(UnknownUser):
        catalog.update_user("nobody", UserPatch(country="US"))


@pytest.mark.parametrize(
    "raw",
    [
        {"user_id": "u 1", "home_region": "us"},
        {"user_id": "", "home_region": "us"},
        {"user_id": "u" * 65, "home_region": "us"},
        {"user_id": "u1", "home_region": "US"},
        {"user_id": "u1", "home_region": "us", "birth_year": 1800},
        {"user_id": "u1", "home_region": "us", "birth_year": 3000},
        {"user_id": "u1", "home_region": "us", "country": "x" * 65},
        {"user_id": "u1", "home_region": "us", "unknown": 1},
        {"user_id": "u1"},
    ],
)
def test_invalid_user_input(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UserIn.model_validate(raw)


def test_delete_user_erases_profile_events_and_labels(
    catalog: Catalog, deployment: Deployment
) -> None:
    catalog.create_user(UserIn(user_id="u1", home_region="eu"))
    catalog.create_video(video_in("v1", ["eu"]))
    store = deployment.store("eu")
    store.insert_events([EventRow("e1", "u1", "v1", "like", 1, None, None, False, False, False)])
    store.insert_labels([LabelRow("ds", "test", "u1", "v1")])
    assert deployment.home_region("u1") == "eu"  # the route is cached now
    assert catalog.delete_user("u1") == ErasedCounts(users=1, events=1, labels=1)
    with pytest.raises(UnknownUser):
        catalog.get_user("u1")
    with pytest.raises(UnknownUser):
        deployment.home_region("u1")
    with pytest.raises(UnknownUser):
        catalog.delete_user("u1")
    # The id is free again, in any region.
    catalog.create_user(UserIn(user_id="u1", home_region="us"))
    assert catalog.get_user("u1").home_region == "us"


# -- videos ----------------------------------------------------------------------------


def test_video_published_to_two_regions_is_in_both_stores(
    catalog: Catalog, deployment: Deployment
) -> None:
    video = catalog.create_video(video_in("v1", ["us", "eu"], caption="hi"))
    assert isinstance(video, Video)
    assert holders(deployment, "v1") == ["us", "eu"]
    for region in ("us", "eu"):
        assert deployment.store(region).get_video("v1") == video
        assert catalog.get_video("v1", region) == video
    assert catalog.get_video("v1") == video
    assert deployment.locate_video("v1") == ["us", "eu"]


def test_a_retry_completes_a_publish_killed_part_way(
    catalog: Catalog, deployment: Deployment
) -> None:
    """A publish to us and eu killed between the two inserts left the video in us only,
    with no moderation row; the retry answered 409, and nothing reported or fixed it
    (chaos test). Asking for exactly that video again now completes it; anything else
    with its id is still taken."""
    wanted = video_in("v1", ["us", "eu"], caption="晚饭后 #健身")
    t = 1_700_000_000_000
    deployment.store("us").insert_video(
        Video(**wanted.model_dump(), created_at_ms=t, updated_at_ms=t)
    )  # what the killed publish wrote
    with pytest.raises(AlreadyExists):  # another caption under the id: not a retry
        catalog.create_video(video_in("v1", ["us", "eu"], caption="other"))
    with pytest.raises(AlreadyExists):  # nor a publish to fewer regions
        catalog.create_video(video_in("v1", ["us"], caption="晚饭后 #健身"))
    video = catalog.create_video(wanted)
    assert holders(deployment, "v1") == ["us", "eu"]
    assert video.created_at_ms == t and deployment.store("eu").get_video("v1") == video
    assert cell(deployment.store("eu")).mod.states(["v1"])["v1"][0] == "pending"
    with pytest.raises(AlreadyExists):  # whole now: a second retry is a duplicate
        catalog.create_video(wanted)


def test_video_in_one_region_only(catalog: Catalog, deployment: Deployment) -> None:
    catalog.create_video(video_in("v1", ["eu"]))
    assert holders(deployment, "v1") == ["eu"]
    assert catalog.get_video("v1").regions == ["eu"]
    with pytest.raises(UnknownVideo) as info:
        catalog.get_video("v1", "us")
    assert "us" in info.value.message


def test_a_failed_publish_leaves_no_half_published_video(
    catalog: Catalog, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(video: Video) -> None:
        raise StorageError("eu store is down")

    monkeypatch.setattr(deployment.store("eu"), "insert_video", unavailable)
    with pytest.raises(StorageError):
        catalog.create_video(video_in("v1", ["us", "eu"]))
    assert holders(deployment, "v1") == []


def test_duplicate_video(catalog: Catalog) -> None:
    catalog.create_video(video_in("v1", ["us"]))
    with pytest.raises(AlreadyExists):
        catalog.create_video(video_in("v1", ["eu"]))


def test_video_to_an_unknown_region_is_refused_everywhere(
    catalog: Catalog, deployment: Deployment
) -> None:
    with pytest.raises(UnknownRegion):
        catalog.create_video(video_in("v1", ["us", "mars"]))
    assert holders(deployment, "v1") == []


def test_get_unknown_video(catalog: Catalog) -> None:
    with pytest.raises(UnknownVideo):
        catalog.get_video("nope")
    with pytest.raises(UnknownRegion):
        catalog.get_video("nope", "mars")


def test_update_video_fields_in_every_region(catalog: Catalog, deployment: Deployment) -> None:
    created = catalog.create_video(video_in("v1", ["us", "eu"], caption="old", tags=["a"]))
    updated = catalog.update_video("v1", VideoPatch(caption="new", duration_ms=30_000))
    assert updated.caption == "new" and updated.duration_ms == 30_000
    assert updated.tags == ["a"]
    assert updated.created_at_ms == created.created_at_ms
    for region in ("us", "eu"):
        assert deployment.store(region).get_video("v1") == updated
        assert deployment.store(region).video_durations(["v1"]) == {"v1": 30_000}


def test_update_of_regions_removes_the_video_from_dropped_regions(
    catalog: Catalog, deployment: Deployment
) -> None:
    catalog.create_video(video_in("v1", ["us", "eu"]))
    updated = catalog.update_video("v1", VideoPatch(regions=["eu"]))
    assert updated.regions == ["eu"]
    assert holders(deployment, "v1") == ["eu"]
    # ... and adds it to new ones.
    catalog.update_video("v1", VideoPatch(regions=["us"]))
    assert holders(deployment, "v1") == ["us"]
    assert deployment.store("us").get_video("v1") == catalog.get_video("v1")


def test_update_to_an_unknown_region_changes_nothing(
    catalog: Catalog, deployment: Deployment
) -> None:
    catalog.create_video(video_in("v1", ["us"]))
    with pytest.raises(UnknownRegion):
        catalog.update_video("v1", VideoPatch(regions=["mars"]))
    assert holders(deployment, "v1") == ["us"]


def test_update_unknown_video(catalog: Catalog) -> None:
    with pytest.raises(UnknownVideo):
        catalog.update_video("nope", VideoPatch(caption="x"))


@pytest.mark.parametrize("field", ["caption", "hashtags", "attributes", "duration_ms", "regions"])
def test_null_in_a_video_patch_never_corrupts_the_video(
    catalog: Catalog, deployment: Deployment, field: str
) -> None:
    catalog.create_video(video_in("v1", ["us"], caption="c", hashtags=["x"]))
    # Refusing the null is fine; crashing or storing it is not.
    with contextlib.suppress(ValidationError, ValidationFailed):
        catalog.update_video("v1", VideoPatch.model_validate({field: None}))
    stored = deployment.store("us").get_video("v1")
    assert stored is not None
    Video.model_validate(stored.model_dump())  # still a valid video


def test_delete_video(catalog: Catalog, deployment: Deployment) -> None:
    catalog.create_video(video_in("v1", ["us", "eu"]))
    assert catalog.delete_video("v1") == ["us", "eu"]
    assert holders(deployment, "v1") == []
    with pytest.raises(UnknownVideo):
        catalog.delete_video("v1")


def test_creator_must_be_an_existing_user(catalog: Catalog, deployment: Deployment) -> None:
    with pytest.raises(UnknownUser):
        catalog.create_video(video_in("v1", ["us"], creator_id="nobody"))
    assert holders(deployment, "v1") == []
    # A creator from another region is fine: the video only references their id.
    catalog.create_user(UserIn(user_id="maker", home_region="eu"))
    video = catalog.create_video(video_in("v1", ["us"], creator_id="maker"))
    assert video.creator_id == "maker"
    assert deployment.store("us").get_user("maker") is None


# -- normalisation ------------------------------------------------------------------------


def test_hashtag_variants_are_one_hashtag(catalog: Catalog, deployment: Deployment) -> None:
    video = catalog.create_video(
        video_in("v1", ["us"], hashtags=["#搞笑", "＃搞笑", "搞笑", " #搞笑 ", "#", "", "#fun"])
    )
    assert video.hashtags == ["搞笑", "fun"]
    stored = deployment.store("us").get_video("v1")
    assert stored is not None and stored.hashtags == ["搞笑", "fun"]


def test_hashtags_are_nfc_normalised_before_deduplication() -> None:
    decomposed = "#cafe\u0301"
    composed = "#caf\u00e9"
    assert VideoIn.model_validate(
        {"video_id": "v", "duration_ms": 1, "regions": ["us"], "hashtags": [decomposed, composed]}
    ).hashtags == ["caf\u00e9"]


def test_caption_is_nfc_normalised(catalog: Catalog, deployment: Deployment) -> None:
    decomposed = "Cafe\u0301 \u1100\u1161 n\u0303"
    video = catalog.create_video(video_in("v1", ["us"], caption=decomposed))
    assert video.caption == unicodedata.normalize("NFC", decomposed)
    assert unicodedata.is_normalized("NFC", video.caption)
    assert video.caption != decomposed
    stored = deployment.store("us").get_video("v1")
    assert stored is not None and stored.caption == video.caption
    patched = catalog.update_video("v1", VideoPatch(caption="n\u0303"))
    assert patched.caption == "\u00f1"


def test_labels_and_regions_are_deduplicated_in_order() -> None:
    v = VideoIn.model_validate(
        {
            "video_id": "v",
            "duration_ms": 1,
            "regions": ["eu", "us", "eu"],
            "categories": ["b", "a", "b", " a "],
            "tags": ["", "t"],
        }
    )
    assert v.regions == ["eu", "us"]
    assert v.categories == ["b", "a"]
    assert v.tags == ["t"]


@pytest.mark.parametrize(
    "patch",
    [
        {"duration_ms": 0},
        {"duration_ms": 24 * 3600 * 1000 + 1},
        {"regions": []},
        {"regions": ["US"]},
        {"video_id": "v 1"},
        {"caption": "x" * 4001},
        {"hashtags": ["x" * 101]},
        {"surprise": True},
    ],
)
def test_invalid_video_input(patch: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VideoIn.model_validate({"video_id": "v1", "duration_ms": 1_000, "regions": ["us"], **patch})
