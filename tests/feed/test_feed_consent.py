"""The feed not based on profiling: a user's ``personalised_feed`` consent (their own,
else their home region's default) decides, on both serving paths, in orders ranked
ahead and in ``fyp recommend``; and the profile's language as the reasons' default.
Run again on PostgreSQL by tests/storage/test_postgres_deployment.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from experiment_helpers import with_experiment
from fyp.access.keys import KeyStore
from fyp.catalog.models import UserIn, UserPatch
from fyp.catalog.service import Catalog
from fyp.cli.app import app as cli
from fyp.events.ingest import Ingestor
from fyp.experiments.exposures import exposures
from fyp.feed.ahead import ranks_ahead
from fyp.feed.impersonal import PERSONAL_SOURCES, REASONS
from fyp.feed.page import FeedPage
from fyp.feed.service import FeedService, encode_cursor
from fyp.models.region_model import RegionModel
from fyp.models.training import train_and_publish
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

OFF = {"personalised_feed": False}
ON = {"personalised_feed": True}
CURSOR = encode_cursor(0, 7)  # one session for every page compared


def consent(d: Deployment, user: str, value: dict[str, bool] | None) -> None:
    Catalog(d).update_user(user, UserPatch(consents=value))


def events(d: Deployment, user: str, kind: str, videos: list[str], tag: str) -> None:
    rows = [
        {"event_id": f"{tag}-{user}-{k}", "user_id": user, "video_id": v, "type": kind}
        for k, v in enumerate(videos)
    ]
    assert Ingestor(d).ingest(rows).counts["stored"] == len(rows)


def ranking(page: FeedPage) -> list[tuple[str, float, str, str]]:
    return [(i.video_id, i.score, i.source, i.why.code) for i in page.items]


def assert_not_personal(page: FeedPage) -> None:
    assert page.personalised is False and page.items
    assert {i.source for i in page.items} <= {"trending", "fresh"}
    assert not {i.source for i in page.items} & PERSONAL_SOURCES
    assert {i.why.code for i in page.items} <= REASONS
    assert page.experiment is None


@pytest.fixture
def consent_client(trained: Deployment) -> Iterator[TestClient]:
    """(Not ``client``: tests/conftest.py's, which test_postgres_deployment.py imports too.)"""
    _, key = KeyStore(trained).create("tests", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(trained), headers=headers) as c:
        yield c


def test_an_opted_out_users_page_has_no_personal_source_and_says_why(trained: Deployment) -> None:
    service = FeedService(trained)
    personal = service.feed("u2", n=30, record=False)
    assert personal.personalised is True
    assert {i.source for i in personal.items} & PERSONAL_SOURCES  # u2 has a history
    consent(trained, "u2", OFF)
    page = service.feed("u2", n=30, record=False)
    assert_not_personal(page)
    assert page.to_dict()["personalised"] is False
    shown = service.feed("u2", n=30)  # recorded: the next page moves on
    again = service.feed("u2", n=30, cursor=shown.cursor)
    assert_not_personal(again)
    assert not {i.video_id for i in shown.items} & {i.video_id for i in again.items}


def test_users_with_opposite_histories_get_the_same_page(trained: Deployment) -> None:
    """One likes, shares and follows where the other skips and reports: the same videos
    seen, nothing marked not interested. Profiled, their pages differ; not profiled,
    they are the same, video for video, score for score, reason for reason."""
    catalog = Catalog(trained)
    for user in ("fan", "critic"):
        catalog.create_user(UserIn(user_id=user, home_region="us", birth_year=1990))
    liked = [f"v{k}" for k in range(0, 60, 6)]  # one category
    events(trained, "fan", "like", liked, "a")
    events(trained, "fan", "share", liked[:3], "b")
    events(trained, "fan", "follow", liked[:1], "c")
    events(trained, "critic", "skip", liked, "a")
    events(trained, "critic", "report", liked[:3], "b")
    events(trained, "critic", "skip", liked[:1], "c")
    service = FeedService(trained)
    fan, critic = (service.feed(u, n=20, cursor=CURSOR, record=False) for u in ("fan", "critic"))
    assert ranking(fan) != ranking(critic)
    for user in ("fan", "critic"):
        consent(trained, user, OFF)
    fan, critic = (service.feed(u, n=20, cursor=CURSOR, record=False) for u in ("fan", "critic"))
    assert_not_personal(fan)
    assert ranking(fan) == ranking(critic)
    assert not {i.video_id for i in fan.items} & set(liked)  # what they saw stays out


def test_a_like_does_not_move_an_opted_out_users_feed(trained: Deployment) -> None:
    service = FeedService(trained)
    consent(trained, "u4", OFF)
    first = service.feed("u4", n=10, cursor=CURSOR)  # recorded: seen
    # debug: ranked afresh both times (not the rest of the order the first page began)
    before = service.feed("u4", n=10, cursor=first.cursor, record=False, debug=True)
    # liking what was already shown changes the history, not what was seen
    events(trained, "u4", "like", [i.video_id for i in first.items], "like")
    after = service.feed("u4", n=10, cursor=first.cursor, record=False, debug=True)
    assert_not_personal(after)
    assert ranking(after) == ranking(before)


@pytest.mark.parametrize("route", [False, True])  # the fast path, and the route (debug)
def test_patching_consent_off_and_on_changes_the_very_next_page(
    consent_client: TestClient, route: bool
) -> None:
    client = consent_client
    params: dict[str, Any] = {"n": 10} | ({"debug": True} if route else {})

    def page() -> dict[str, Any]:
        r = client.get("/v1/users/u6/feed", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def patch(value: dict[str, bool] | None) -> None:
        r = client.patch("/v1/users/u6", json={"consents": value})
        assert r.status_code == 200, r.text

    first = page()  # served from u6's order ranked ahead by training
    assert first["personalised"] is True
    assert {i["source"] for i in first["items"]} & PERSONAL_SOURCES
    for _ in range(2):  # off, on, off, on: each the very next page
        patch(OFF)
        off = page()
        assert off["personalised"] is False and off["items"]
        assert {i["source"] for i in off["items"]} <= {"trending", "fresh"}
        assert {i["explanation"]["code"] for i in off["items"]} <= REASONS
        patch(ON)
        on = page()
        assert on["personalised"] is True
        assert {i["source"] for i in on["items"]} & PERSONAL_SOURCES
    patch(None)  # no recorded consent: the region's default (on)
    assert page()["personalised"] is True


def test_a_region_default_off_is_personal_only_for_who_opted_in(trained: Deployment) -> None:
    """``[regions.us.policy.consent] personalised_feed = false``: a new user of us, and
    every us user who recorded nothing, get the feed not based on profiling until they
    opt in, even from orders training ranked before the policy changed; eu is as before."""
    events(trained, "u8", "like", ["v2", "v8"], "early")
    text = (trained.config.root / "fyp.toml").read_text(encoding="utf-8")
    text += "\n[regions.us.policy.consent]\npersonalised_feed = false\n"
    (trained.config.root / "fyp.toml").write_text(text, encoding="utf-8")
    with Deployment.open(trained.config.root) as d:
        Catalog(d).create_user(UserIn(user_id="newbie", home_region="us", birth_year=2000))
        events(d, "newbie", "like", ["v0", "v6", "v12"], "n")
        service = FeedService(d)
        for user in ("newbie", "u2", "u8"):  # u2: an order ranked by training, unchanged
            assert_not_personal(service.feed(user, n=10))
        assert service.feed("u3", n=10).personalised is True  # eu's default is on
        consent(d, "newbie", ON)
        page = service.feed("newbie", n=30)
        assert page.personalised is True
        assert {i.source for i in page.items} & PERSONAL_SOURCES
        consent(d, "newbie", None)  # back to the region's default
        assert_not_personal(service.feed("newbie", n=10))


def test_training_ranks_a_non_profiled_order_for_an_opted_out_user(trained: Deployment) -> None:
    """An opted-out user's pages come from an order ranked ahead like everyone's (no
    pipeline run per page), ranked the non-profiled way, and served only while the
    consent stays off."""
    consent(trained, "u10", OFF)
    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    policy = consent_policy(trained.config, "us")
    train_and_publish(store, region_dir, augment=ranks_ahead(trained, "us"), consent=policy)
    model = RegionModel.load(region_dir)
    assert model.ahead is not None
    off, on = model.ahead.get("u10"), model.ahead.get("u12")
    assert off is not None and off.personalised is False
    assert on is not None and on.personalised is True
    rows = np.arange(len(off.items))
    assert set(off.explains.sources(rows)) <= {"trending", "fresh"}
    assert {r.code for r in off.explains.reasons(rows)} <= REASONS
    service = FeedService(trained)
    page = service.feed("u10", n=10)
    assert_not_personal(page)
    assert [i.video_id for i in page.items] == model.video_ids[off.items[:10]].tolist()
    consent(trained, "u10", ON)  # the non-profiled order is not served to a profiled user
    assert service.feed("u10", n=10).personalised is True


def test_a_changed_default_is_a_reason_to_rank_the_orders_again(trained: Deployment) -> None:
    """Orders ranked under one ``personalised_feed`` default are of the wrong kind for
    users who recorded nothing once it changes: ``fyp train --if-changed`` ranks again."""
    from fyp.models.schedule import retrain_reason

    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    policy = consent_policy(trained.config, "us")
    train_and_publish(store, region_dir, augment=ranks_ahead(trained, "us"), consent=policy)
    assert retrain_reason(store, region_dir, None, policy) is None
    text = (trained.config.root / "fyp.toml").read_text(encoding="utf-8")
    text += "\n[regions.us.policy.consent]\npersonalised_feed = false\n"
    (trained.config.root / "fyp.toml").write_text(text, encoding="utf-8")
    with Deployment.open(trained.config.root) as d:
        store, off = d.store("us"), consent_policy(d.config, "us")
        reason = retrain_reason(store, region_dir, None, off)
        assert reason is not None and "personalised_feed default changed" in reason
        train_and_publish(store, region_dir, augment=ranks_ahead(d, "us"), consent=off)
        assert retrain_reason(store, region_dir, None, off) is None
        model = RegionModel.load(region_dir)
        assert model.ahead is not None
        order = model.ahead.get("u2")
        assert order is not None and order.personalised is False


def test_an_erasure_keeps_the_orders_kinds_in_step(trained: Deployment) -> None:
    """Erasing a user removes their order's flag with it: the users after them keep
    their own kind (a flag out of step would serve a profiled order to an opted-out
    user)."""
    from fyp.sovereignty.erasure import Eraser

    consent(trained, "u12", OFF)
    store, region_dir = trained.store("us"), trained.config.region_dir("us")
    policy = consent_policy(trained.config, "us")
    train_and_publish(store, region_dir, augment=ranks_ahead(trained, "us"), consent=policy)
    before = RegionModel.load(region_dir).ahead
    assert before is not None
    kinds = {u: o.personalised for u in ("u10", "u12", "u14") if (o := before.get(u))}
    assert kinds == {"u10": True, "u12": False, "u14": True}
    Eraser(trained).erase("u10")  # sorts before u12: every later row moves up one
    after = RegionModel.load(region_dir).ahead
    assert after is not None and after.get("u10") is None
    kinds = {u: o.personalised for u in ("u12", "u14") if (o := after.get(u))}
    assert kinds == {"u12": False, "u14": True}


def test_not_interested_still_removes_from_the_non_profiled_feed(trained: Deployment) -> None:
    service = FeedService(trained)
    consent(trained, "u14", OFF)
    top = service.feed("u14", n=10, record=False).items[0].video_id
    events(trained, "u14", "not_interested", [top], "ni")
    store = trained.store("us")

    def creator(video_id: str) -> str | None:
        video = store.get_video(video_id)
        assert video is not None
        return video.creator_id

    page = service.feed("u14", n=40, debug=True)
    assert_not_personal(page)
    assert top not in {i.video_id for i in page.items}
    assert creator(top) not in {creator(i.video_id) for i in page.items}
    assert any(r["stage"] == "not_interested" for r in page.removed)


@pytest.mark.parametrize(
    ("profile", "query", "header", "want"),
    [
        ("zh-TW", None, None, "zh-Hant"),  # the profile's language
        ("zh", None, None, "zh-Hans"),
        ("pt-BR", None, None, "en"),  # not supported: en
        (None, None, None, "en"),
        ("zh-TW", None, "en-GB", "en"),  # Accept-Language before the profile
        ("zh-TW", None, "fr", "en"),  # a header unsupported means en, not the profile's
        ("en", "zh-Hans", "en", "zh-Hans"),  # ?lang= before both
    ],
)
@pytest.mark.parametrize("route", [False, True])
def test_the_profile_language_is_the_default_language(
    consent_client: TestClient,
    profile: str | None,
    query: str | None,
    header: str | None,
    want: str,
    route: bool,
) -> None:
    client = consent_client
    r = client.patch("/v1/users/u16", json={"language": profile})
    assert r.status_code == 200, r.text
    params: dict[str, Any] = {"n": 5} | ({"lang": query} if query else {})
    params |= {"debug": True} if route else {}
    headers = {"Accept-Language": header} if header else {}
    r = client.get("/v1/users/u16/feed", params=params, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["lang"] == want and r.headers["content-language"] == want
    assert all(i["reason"] for i in r.json()["items"])


def test_fyp_recommend_honours_consent_and_the_profile_language(trained: Deployment) -> None:
    Catalog(trained).update_user("u18", UserPatch(language="zh-HK", consents=OFF))
    root = str(trained.config.root)
    out = CliRunner().invoke(cli, ["recommend", root, "u18", "--reason", "t"])
    assert out.exit_code == 0, out.output
    assert "not personalised" in out.output
    assert "你所在地區的熱門" in out.output  # zh-Hant, from the profile
    assert "co_engagement" not in out.output and "embedding" not in out.output
    en = CliRunner().invoke(cli, ["recommend", root, "u18", "--lang", "en", "--reason", "t"])
    assert en.exit_code == 0 and "popular in your region" in en.output


def test_a_patch_through_another_process_is_seen_by_its_next_page(trained: Deployment) -> None:
    """Another process (here: another deployment object, its own store connections)
    turns the consent off and on: this process's next page honours each change."""
    service = FeedService(trained)
    assert service.feed("u20", n=10, record=False).personalised is True  # profile cached
    with Deployment.open(trained.config.root) as other:
        consent(other, "u20", OFF)
        assert_not_personal(service.feed("u20", n=10, record=False))
        consent(other, "u20", ON)
        assert service.feed("u20", n=10, record=False).personalised is True


def test_the_openapi_document_describes_personalised_and_consents(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        spec = create_app(d).openapi()
    page = spec["components"]["schemas"]["FeedPage"]
    assert "personalised" in page["required"]
    assert "not based on profiling" in page["properties"]["personalised"]["description"]
    patch = spec["components"]["schemas"]["UserPatch"]["properties"]["consents"]
    assert "personalised_feed" in patch["description"]


def test_an_experiment_neither_changes_nor_exposes_an_opted_out_user(
    trained: Deployment,
) -> None:
    """Everyone of us in a variant with another exploration share: an opted-out user's
    page is what it is without the experiment, carries no arm, and records no exposure;
    opted in, their next page is the variant's and exposes them."""
    consent(trained, "u22", OFF)
    plain = FeedService(trained).feed("u22", n=10, cursor=CURSOR, record=False, debug=True)
    with_experiment(trained, {"share": 1.0, "exploration_share": 0.5}, ["us"])
    service = FeedService(trained)
    page = service.feed("u22", n=10, cursor=CURSOR, record=False, debug=True)
    assert_not_personal(page)
    assert ranking(page) == ranking(plain)
    served = service.feed("u22", n=10)
    assert_not_personal(served)
    assert "u22" not in exposures(trained.store("us"), "exp")
    consent(trained, "u22", ON)
    again = service.feed("u22", n=10)
    assert again.personalised and again.experiment is not None
    assert again.experiment.variant == "heads"
    assert exposures(trained.store("us"), "exp")["u22"].variant == "heads"
