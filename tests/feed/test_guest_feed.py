"""The guest feed (``GET /v1/regions/{region}/feed``, ``FeedService.guest_feed``): the
region's feed not based on profiling for a viewer nobody knows. Only what For You may
show a viewer of unknown age in that region, no repeats through the cursor alone (even
across a retrained model), nothing stored about the viewer. Runs on SQLite and, through
tests/storage/test_postgres_deployment.py, on PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from experiment_helpers import with_experiment
from fyp.access.keys import KeyStore
from fyp.catalog.models import UserIn, VideoIn, VideoPatch
from fyp.catalog.service import Catalog
from fyp.cli.app import app as cli
from fyp.errors import InvalidRequest, UnknownRegion, ValidationFailed
from fyp.events.ingest import Ingestor
from fyp.feed import guest, live_models
from fyp.feed.filters import allow_all
from fyp.feed.guest import MAX_CURSOR_CHARS, MEMORY, GuestCursor
from fyp.feed.impersonal import REASONS
from fyp.feed.service import FeedService, encode_cursor
from fyp.feed.state import UserState
from fyp.models.training import train_and_publish
from fyp.moderation import Moderator
from fyp.moderation.service import cell
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app
from serving.errors import assert_error

ROUTE = "/v1/regions/{}/feed"
N_VIDEOS = 280
BARS = ("rejected", "age_restricted", "pending", "restricted", "blocked")
"""Verdicts that keep a video out of For You for a viewer of unknown age."""


def _events(d: Deployment, videos: list[str], count: int, tag: str, seed: int = 5) -> None:
    """``count`` plays by the world's users, most on the first of ``videos`` (a long tail)."""
    rng = random.Random(seed)
    rows = [
        {
            "event_id": f"{tag}{k}",
            "user_id": f"u{rng.randrange(40)}",
            "video_id": videos[min(int(rng.expovariate(1 / 60)), len(videos) - 1)],
            "type": "play",
            "watch_ms": 20_000,
        }
        for k in range(count)
    ]
    ingestor = Ingestor(d)
    for k in range(0, len(rows), 1000):
        ingestor.ingest(rows[k : k + 1000])


def train(d: Deployment, region: str = "us") -> None:
    train_and_publish(d.store(region), d.config.region_dir(region), consent=ConsentPolicy())


def build_world(directory: Path) -> Deployment:
    """Regions us and eu; 40 adult users (the first 20 upload), 280 videos published in
    both, approved, with plays on a long tail; trained."""
    d = Deployment.init(directory, ["us", "eu"])
    catalog = Catalog(d)
    for u in range(40):
        region = "us" if u % 2 == 0 else "eu"
        catalog.create_user(UserIn(user_id=f"u{u}", home_region=region, birth_year=1990))
    videos = [f"g{v}" for v in range(N_VIDEOS)]
    for v, video in enumerate(videos):
        catalog.create_video(
            VideoIn(
                video_id=video,
                creator_id=f"u{v % 20}",
                duration_ms=15_000,
                regions=["us", "eu"],
                categories=[f"cat{v % 6}"],
                tags=[str(v % 5)],
            )
        )
    _events(d, videos, 4000, "e")
    for region in d.regions:
        Moderator(d).run(region)
        train(d, region)
    return d


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Deployment]:
    with build_world(tmp_path / "dep") as d:
        yield d


def top_trending(d: Deployment, k: int, region: str = "us") -> list[str]:
    model = FeedService(d).model(region)
    ids: list[str] = model.video_ids[model.trending_order[:k]].tolist()
    return ids


def bar(d: Deployment, region: str, video_id: str, state: str, creator_ok: bool = True) -> None:
    """A verdict for ``video_id`` in ``region``, as a moderator's decision writes it."""
    assert cell(d.store(region)).mod.write(
        video_id, state, creator_ok, "test", "review", "t", 1, {}
    )


def barred_at_the_top(d: Deployment) -> set[str]:
    """The 7 most popular videos of us made ineligible each a different way: a verdict
    of each of BARS, a creator failing the creator rules, one withdrawn from us."""
    top = top_trending(d, 7)
    for video_id, state in zip(top, BARS, strict=False):
        bar(d, "us", video_id, state)
    bar(d, "us", top[5], "approved", creator_ok=False)
    Catalog(d).update_video(top[6], VideoPatch(regions=["eu"]))
    return set(top)


def feed_key(d: Deployment, *regions: str, role: str = "feed") -> dict[str, str]:
    token = KeyStore(d).create(f"{role}-{'-'.join(regions)}", [role], list(regions))[1]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def guest_client(world: Deployment) -> Iterator[TestClient]:
    """A client with a feed key for us alone: what an app's install would hold."""
    with TestClient(create_app(world), headers=feed_key(world, "us")) as c:
        yield c


def get_page(client: TestClient, region: str = "us", **params: Any) -> dict[str, Any]:
    resp = client.get(ROUTE.format(region), params=params)
    assert resp.status_code == 200, resp.text
    page: dict[str, Any] = resp.json()
    return page


def ids(page: dict[str, Any]) -> list[str]:
    return [item["video_id"] for item in page["items"]]


def scroll(client: TestClient, pages: int, n: int = 10, cursor: str | None = None) -> list[str]:
    """What a guest sees in ``pages`` pages (from ``cursor``), each checked as not profiled."""
    seen: list[str] = []
    for _ in range(pages):
        page = get_page(client, n=n, **({"cursor": cursor} if cursor else {}))
        assert page["personalised"] is False and "user_id" not in page
        assert {i["explanation"]["code"] for i in page["items"]} <= REASONS
        assert {i["source"] for i in page["items"]} <= {"trending", "fresh"}
        seen += ids(page)
        cursor = page["next_cursor"]
    return seen


def test_twenty_pages_repeat_nothing_and_show_nothing_for_you_would_not(
    world: Deployment, guest_client: TestClient
) -> None:
    barred = barred_at_the_top(world)
    # without moderation's check, the barred videos (all but the withdrawn one) lead page 1
    unchecked = FeedService(world, eligibility=allow_all).guest_feed("us", n=10)
    assert len({i.video_id for i in unchecked.items} & barred) >= 4
    seen = scroll(guest_client, 20)
    assert len(seen) == 200 and len(set(seen)) == 200
    assert not set(seen) & barred
    # an adult user of us gets the age-restricted one in For You: the guest's bar is the age
    adult = UserState("u0", "us", 1990, np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert FeedService(world).eligibility.check([top_trending(world, 2)[1]], adult) == {}


def test_no_repeats_when_trending_changes_between_pages(
    world: Deployment, guest_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five pages in, the videos already shown become the region's most popular and the
    model is trained again: the next fifteen pages, from the new model, still repeat
    nothing (the cursor names videos, not a model's rows)."""
    monkeypatch.setattr(live_models, "RELOAD_CHECK_S", 0.0)
    first = get_page(guest_client, n=10)
    cursor, shown = first["next_cursor"], ids(first)
    for _ in range(4):
        page = get_page(guest_client, n=10, cursor=cursor)
        cursor, shown = page["next_cursor"], shown + ids(page)
    _events(world, shown, 6000, "boost", seed=9)
    train(world)
    assert top_trending(world, 10)[0] in shown  # trending moved to what was shown
    served_by = guest_client.app.state.fyp.feed  # type: ignore[attr-defined]
    loaded = first["model_version"]
    for _ in range(200):  # the server loads a new model in the background
        loaded = served_by.model("us").manifest.version
        if loaded != first["model_version"]:
            break
        time.sleep(0.05)
    assert loaded != first["model_version"]
    fresh = get_page(guest_client, n=10)  # a new guest starts with them now
    assert fresh["model_version"] != first["model_version"]
    assert len(set(ids(fresh)) & set(shown)) >= 5
    rest = scroll(guest_client, 15, cursor=cursor)
    everything = shown + rest
    assert len(everything) == 200 and len(set(everything)) == 200


def _digest(d: Deployment) -> dict[str, str]:
    """Every row of every table of every region's store (the served log written out)."""
    out: dict[str, str] = {}
    for region in d.regions:
        store = d.store(region)
        store.flush_served()
        for table in store.table_names():
            rows = store.query(f'SELECT * FROM "{table}"')
            out[f"{region}:{table}"] = hashlib.sha256(
                repr(sorted(map(repr, rows))).encode()
            ).hexdigest()
    return out


def test_nothing_about_the_viewer_is_stored(world: Deployment) -> None:
    """Pages, HEADs, errors, with an experiment running in the region and an operator's
    key: no row of any table changes (no user, served log, exposure or audit entry)."""
    with_experiment(world, {"share": 1.0}, ["us", "eu"])
    admin = feed_key(world, "us", "eu", role="admin")
    with TestClient(create_app(world), headers=feed_key(world, "us")) as c:
        before = _digest(world)
        seen = scroll(c, 3, n=7)
        assert len(seen) == 21
        get_page(c, include="video", lang="zh-Hant")
        assert c.head(ROUTE.format("us")).status_code == 200
        assert c.get(ROUTE.format("us"), params={"cursor": "x"}).status_code == 400
        assert c.get(ROUTE.format("eu")).status_code == 403
        assert c.get(ROUTE.format("us"), headers=admin).status_code == 200
        assert c.get(ROUTE.format("eu"), headers=admin).status_code == 200
        assert _digest(world) == before
        # a user's page writes (its served log): the digest would have seen a write
        assert c.get("/v1/users/u0/feed", headers={**admin, "X-Fyp-Reason": "t"}).is_success
        assert _digest(world) != before


def test_a_tampered_or_foreign_cursor_is_a_400(world: Deployment, guest_client: TestClient) -> None:
    first = get_page(guest_client, n=5)
    cursor = first["next_cursor"]
    assert get_page(guest_client, n=5, cursor=cursor)["items"]  # the real one works
    eu = FeedService(world).guest_feed("eu", n=5)
    middle = len(cursor) // 2
    flipped = cursor[:middle] + ("A" if cursor[middle] != "A" else "B") + cursor[middle + 1 :]
    bad = [
        flipped,
        cursor[:-1],
        cursor + "A",
        cursor[:-4],
        cursor.replace("-", "+").replace("_", "/") if ("-" in cursor or "_" in cursor) else "+/",
        encode_cursor(1, 5),  # a user feed's
        eu.cursor,  # another region's
        "@@",
        "é" * 10,
        "A" * (MAX_CURSOR_CHARS + 4),
        base64.urlsafe_b64encode(b"\x01" + bytes(30)).decode(),
    ]
    for cursor_sent in bad:
        resp = guest_client.get(ROUTE.format("us"), params={"cursor": cursor_sent})
        error = assert_error(resp, 400, "invalid_request")
        assert error["details"] == {"field": "cursor"}, cursor_sent
    with pytest.raises(InvalidRequest):
        FeedService(world).guest_feed("us", cursor=flipped)


def test_the_cursor_is_bounded_and_remembers_the_latest_videos() -> None:
    cursor = GuestCursor.start()
    for page in range(40):
        cursor = cursor.then([f"video-{page}-{k}" for k in range(100)])
        encoded = cursor.encode("us")
        assert len(encoded) <= MAX_CURSOR_CHARS and GuestCursor.decode(encoded, "us") == cursor
    assert len(cursor.shown) == MEMORY and len(encoded) == MAX_CURSOR_CHARS == 1388
    assert cursor.shown[-1] == guest.video_hash("video-39-99")  # the newest kept
    assert guest.video_hash("video-37-43") not in cursor.shown  # the oldest forgotten
    with pytest.raises(InvalidRequest):
        GuestCursor.decode(encoded, "eu")


def test_region_key_and_parameters_are_checked_as_on_the_user_feed(
    world: Deployment, guest_client: TestClient
) -> None:
    c = guest_client
    assert_error(c.get(ROUTE.format("zz")), 404, "unknown_region")  # undeclared: no 403
    assert_error(c.get(ROUTE.format("eu")), 403, "forbidden")  # a key for us alone
    ingest = feed_key(world, "us", role="ingest")
    assert_error(c.get(ROUTE.format("us"), headers=ingest), 403, "forbidden")
    assert_error(c.get(ROUTE.format("us"), headers={"Authorization": ""}), 401, "unauthenticated")
    for auditor in (feed_key(world, "eu"), feed_key(world, "eu", role="auditor")):
        assert c.get(ROUTE.format("eu"), headers=auditor).is_success
    for params in ({"n": 0}, {"n": 101}, {"n": "x"}, {"lang": "fr"}, {"include": "creator"}):
        assert_error(c.get(ROUTE.format("us"), params=params), 422, "validation_failed")
    service = FeedService(world)
    with pytest.raises(UnknownRegion):
        service.guest_feed("zz")
    with pytest.raises(ValidationFailed):
        service.guest_feed("us", n=0)


def test_reasons_are_translated_and_videos_included(guest_client: TestClient) -> None:
    english = get_page(guest_client, n=10)
    assert english["lang"] == "en"
    texts = {i["explanation"]["code"]: i["reason"] for i in english["items"]}
    assert texts["not_personalised"] == "popular in your region (personalisation is off)"
    resp = guest_client.get(
        ROUTE.format("us"), params={"n": 10}, headers={"Accept-Language": "zh-TW"}
    )
    assert resp.status_code == 200
    assert (
        resp.headers["content-language"] == "zh-Hant" and "Accept-Language" in resp.headers["vary"]
    )
    hant = resp.json()
    assert hant["lang"] == "zh-Hant" and all(
        i["reason"] not in texts.values() for i in hant["items"]
    )
    hans = get_page(guest_client, n=10, lang="zh-CN", include="video")
    assert hans["lang"] == "zh-Hans"
    for item in hans["items"]:
        assert item["video"]["video_id"] == item["video_id"]
        assert "us" in item["video"]["regions"]


def test_the_end_of_the_feed(trained: Deployment) -> None:
    """A region with 120 videos: three pages of 50 hold every one, once; then an empty
    page says the end."""
    service = FeedService(trained)
    cursor, seen = None, []
    for _ in range(3):
        page = service.guest_feed("us", n=50, cursor=cursor)
        cursor, seen = page.cursor, seen + [i.video_id for i in page.items]
    assert len(seen) == len(set(seen)) == 120
    last = service.guest_feed("us", n=50, cursor=cursor).to_dict()
    assert last["items"] == [] and last["end_of_feed"] is True and last["personalised"] is False


def test_a_guest_never_sees_a_video_twice_nor_one_barred(world: Deployment) -> None:
    """Any page sizes (up to 200 videos in all, of the 250 or more eligible), any verdicts
    of the 30 most popular videos and their creators' standing: every video served is
    eligible for a viewer of unknown age, pages are full, and none comes twice."""
    service, top = FeedService(world), top_trending(world, 30)

    @settings(max_examples=20, deadline=None)
    @given(
        sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12).filter(lambda s: sum(s) <= 200),
        verdicts=st.lists(st.sampled_from(("approved", *BARS)), min_size=30, max_size=30),
        creators_ok=st.lists(st.booleans(), min_size=30, max_size=30),
    )
    def check(sizes: list[int], verdicts: list[str], creators_ok: list[bool]) -> None:
        barred = set()
        for video_id, state, creator_ok in zip(top, verdicts, creators_ok, strict=True):
            bar(world, "us", video_id, state, creator_ok)
            if state != "approved" or not creator_ok:
                barred.add(video_id)
        cursor, seen = None, []
        for n in sizes:
            page = service.guest_feed("us", n=n, cursor=cursor)
            assert len(page.items) == n
            cursor, seen = page.cursor, seen + [i.video_id for i in page.items]
        assert len(seen) == len(set(seen))
        assert not set(seen) & barred

    check()


def test_fyp_recommend_guest_prints_the_regions_guest_feed(trained: Deployment) -> None:
    """``fyp recommend DIR --guest REGION``: the guest feed's first page, nothing written;
    a USER with it, neither, ``--record`` or an unknown region are refused."""
    root = str(trained.config.root)
    before = _digest(trained)
    args = ["recommend", root, "--guest", "eu", "--n", "5", "--lang", "zh-Hans"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "guest feed of eu (not personalised)" in out.output
    assert "你所在地区的热门" in out.output
    assert _digest(trained) == before  # no audit entry, no served log
    for wrong in (
        ["recommend", root],
        ["recommend", root, "u0", "--guest", "us"],
        ["recommend", root, "--guest", "us", "--record"],
        ["recommend", root, "--guest", "zz"],
    ):
        result = CliRunner().invoke(cli, wrong)
        assert result.exit_code != 0, wrong
        assert isinstance(result.exception, (InvalidRequest, UnknownRegion)), wrong
