"""Each feed item's reason: a stable code with parameters through the pipeline, the
orders stored ahead and both serving paths, rendered in the viewer's language."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from feed.conftest import build
from fyp.access.keys import KeyStore
from fyp.cli.app import app as cli
from fyp.cli.app import fail
from fyp.errors import FypError
from fyp.events.ingest import Ingestor
from fyp.feed import reasons
from fyp.feed.pipeline import FeedPipeline
from fyp.feed.reasons import (
    CODES,
    LANGS,
    Reason,
    accepted_lang,
    category_interest,
    fixed,
    from_text,
    liked_similar,
    match_lang,
    other,
)
from fyp.feed.service import FeedService
from fyp.models.artifacts import (
    current_version,
    read_arrays,
    read_manifest,
    set_current,
    write_artifact,
)
from fyp.models.artifacts import new_version as fresh_version
from fyp.regions.deployment import Deployment
from fyp.serving.app import create_app

USERS = itertools.count(10)
CATEGORIES = ("美食", "旅行", "音乐", "游戏", "萌宠", "体育")
# what fyp served before reasons had codes, and what each language says
OLD_EN = {
    "liked_similar": "because you liked video {video_id}",
    "similar_to_watched": "similar to what you watch",
    "trending_region": "popular in your region",
    "followed_creator": "new from a creator you follow",
    "new_on_fyp": "new on fyp",
    "category_interest": "because you watch {category}",
    "evaluated_set": "in the evaluated set",
}
ZH_HANS = {
    "liked_similar": "因为你赞过视频 {video_id}",
    "similar_to_watched": "与你看过的内容相似",
    "trending_region": "你所在地区的热门",
    "followed_creator": "你关注的创作者发布了新作品",
    "new_on_fyp": "新发布",
    "category_interest": "因为你常看{category}",
    "evaluated_set": "属于评测集",
}
ZH_HANT = {
    "liked_similar": "因為你讚過影片 {video_id}",  # reviewed: 讚 is a like, 影片 a video
    "similar_to_watched": "與你看過的內容相似",
    "trending_region": "你所在地區的熱門",
    "followed_creator": "你追蹤的創作者發布了新作品",  # 追蹤: following, as apps there say
    "new_on_fyp": "新發布",
    "category_interest": "因為你常看{category}",
    "evaluated_set": "屬於評測集",
}
# the non-profiled feed's reasons (fyp.feed.impersonal), new with it
NOT_PERSONALISED = {
    "en": {
        "not_personalised": "popular in your region (personalisation is off)",
        "new_not_personalised": "new on fyp (personalisation is off)",
    },
    "zh-Hans": {
        "not_personalised": "你所在地区的热门（个性化推荐已关闭）",
        "new_not_personalised": "新发布（个性化推荐已关闭）",
    },
    "zh-Hant": {
        "not_personalised": "你所在地區的熱門（個人化推薦已關閉）",
        "new_not_personalised": "新發布（個人化推薦已關閉）",
    },
}
TRADITIONAL = {
    "美食": "美食",
    "旅行": "旅行",
    "音乐": "音樂",
    "游戏": "遊戲",
    "萌宠": "萌寵",
    "体育": "體育",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The feed tests' deployment with Chinese category names, as KuaiRec's, and one
    user who follows a creator (after training: their order is ranked afresh)."""
    d = build(tmp_path_factory.mktemp("reasons") / "dep", categories=CATEGORIES)
    follow = {"event_id": "f1", "user_id": "u5", "video_id": "v7", "type": "follow"}
    assert Ingestor(d).ingest([follow]).counts["stored"] == 1
    try:
        yield d
    finally:
        d.close()


def pages(d: Deployment, users: range = range(60)) -> list[tuple[str, Reason]]:
    service = FeedService(d)
    return [
        (item.reason, item.why)
        for u in users
        for item in service.feed(f"u{u}", n=30, record=False).items
    ]


def expected(table: dict[str, str], why: Reason) -> str:
    params = dict(why.params)
    if table is ZH_HANT and "category" in params:
        params["category"] = TRADITIONAL[params["category"]]
    return table[why.code].format_map(params)


def test_every_code_comes_out_of_the_pipeline_and_renders_in_every_language(
    world: Deployment,
) -> None:
    found = pages(world)
    followed = FeedService(world).feed("u5", n=100, record=False).items
    # an evaluation ranks a fixed set; with no other source, every video is from it
    only_universe = FeedService(world, pipeline=FeedPipeline(sources=[]))
    evaluated = only_universe.feed("u8", n=5, record=False, universe=["v1", "v2", "v3"]).items
    found += [(i.reason, i.why) for i in [*followed, *evaluated]]
    assert {why.code for _, why in found} == set(OLD_EN)  # every code but ``other``
    for text, why in found:
        assert text == why.text("en") == expected(OLD_EN, why)  # the old text, exactly
        assert why.text("zh-Hans") == expected(ZH_HANS, why)
        assert why.text("zh-Hant") == expected(ZH_HANT, why)
        assert set(why.params) == set(CODES[why.code].params)
    categories = {why.params["category"] for _, why in found if why.code == "category_interest"}
    assert categories and categories <= set(CATEGORIES)
    liked = [why for _, why in found if why.code == "liked_similar"]
    assert liked and all(why.params["video_id"].startswith("v") for why in liked)


def test_orders_stored_by_training_carry_codes(world: Deployment) -> None:
    region_dir = world.config.region_dir("us")
    arrays = read_arrays(region_dir, current_version(region_dir) or "")
    codes = set(arrays["ahead_reason_codes"].tolist())
    assert {"liked_similar", "trending_region", "category_interest"} <= codes <= set(CODES)
    assert "other" not in codes
    # served from the stored order (u2 has no event since training): codes, not texts
    model = FeedService(world).model("us")
    assert model.ahead is not None
    order = model.ahead.get("u2")
    assert order is not None
    stored = order.explains.reasons(np.arange(len(order.items)))
    assert all(isinstance(r, Reason) and r.code != "other" for r in stored)


def test_an_artifact_from_before_codes_still_serves_its_reasons(world: Deployment) -> None:
    """An artifact trained before codes holds the English texts only: they are mapped
    back to codes when it loads, and a text nothing maps is served as it is."""
    region_dir = world.config.region_dir("eu")
    live = current_version(region_dir) or ""
    before = FeedService(world).feed("u3", n=10, record=False)
    arrays = read_arrays(region_dir, live)
    old = {
        k: v for k, v in arrays.items() if k not in ("ahead_reason_codes", "ahead_reason_params")
    }
    texts = old["ahead_reasons"].tolist()
    unknown = texts.index(before.items[0].reason)
    texts[unknown] = "hand-picked for you"  # a text of some fork of fyp
    old["ahead_reasons"] = np.asarray(texts, dtype=np.str_)
    manifest = read_manifest(region_dir, live)
    manifest.version = fresh_version()
    write_artifact(region_dir, manifest, old)
    try:
        after = FeedService(world).feed("u3", n=10, record=False)
        assert [i.video_id for i in after.items] == [i.video_id for i in before.items]
        got = after.to_dict(lang="zh-Hans")["items"]
        assert got[0]["reason"] == "hand-picked for you"
        assert got[0]["explanation"] == {"code": "other", "params": {"text": "hand-picked for you"}}
        for old_item, new_item, body in zip(
            before.items[1:], after.items[1:], got[1:], strict=True
        ):
            if old_item.reason != before.items[0].reason:
                assert new_item.why == old_item.why  # the same code and parameters
                assert body["reason"] == old_item.why.text("zh-Hans")
    finally:
        set_current(region_dir, live)


@settings(deadline=None)  # the first example loads OpenCC's dictionaries: no timed unit tests
@given(
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
    st.sampled_from(sorted(n for n, c in CODES.items() if not c.params)),
)
def test_every_reason_renders_in_every_language(video: str, category: str, code: str) -> None:
    made = [liked_similar(video), category_interest(category), fixed(code), other(category)]
    for why in made:
        for lang in LANGS:
            assert isinstance(why.text(lang), str)
        english = OLD_EN | NOT_PERSONALISED["en"]
        assert why.text("en") == english.get(why.code, "{text}").format_map(why.params)
        assert from_text(why.text("en")) == why  # an old artifact's text maps back


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh-Hans", "zh-Hans"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-Hans"),
        ("en;q=0.5, zh-TW;q=0.9", "zh-Hant"),
        ("zh-HK", "zh-Hant"),
        ("fr, de;q=0.9, zh;q=0.2", "zh-Hans"),
        ("fr, de;q=0.9", "en"),
        ("zh;q=0, en-GB", "en"),
        ("*", "en"),
        ("zh-Hant;q=nan, zh-Hans;q=0.1", "zh-Hans"),
        (";;,,q=1", "en"),
        ("", "en"),
    ],
)
def test_accept_language_picks_the_most_preferred_supported_language(
    header: str, lang: str
) -> None:
    assert accepted_lang(header) == lang


def test_lang_tags_fall_back_to_a_supported_language() -> None:
    assert [match_lang(t) for t in ("EN-us", "zh_Hant_TW", "zh-hans", "zh-MO", "ja", "")] == [
        "en",
        "zh-Hant",
        "zh-Hans",
        "zh-Hant",
        None,
        None,
    ]


@pytest.fixture(scope="module")
def client(world: Deployment) -> Iterator[TestClient]:
    _, key = KeyStore(world).create("reasons", ["admin"])
    headers = {"Authorization": f"Bearer {key}", "X-Fyp-Reason": "tests"}
    with TestClient(create_app(world), headers=headers) as c:
        yield c


def items(c: TestClient, lang: str | None, header: str | None, **more: object) -> dict[str, object]:
    params = {"n": 10, **more} | ({"lang": lang} if lang is not None else {})
    user = f"u{next(USERS)}"  # each its own: pages are recorded, and 120 videos run out
    r = c.get(f"/v1/users/{user}/feed", params=params, headers={"Accept-Language": header or ""})
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    assert r.headers["content-language"] == body["lang"] and "Accept-Language" in r.headers["vary"]
    return body


@pytest.mark.parametrize("debug", [False, True])  # the fast path, and the route
@pytest.mark.parametrize(
    ("lang", "header", "want"),
    [
        (None, None, "en"),
        ("zh-Hans", None, "zh-Hans"),
        ("zh-hant", "en", "zh-Hant"),  # the query wins over the header
        ("zh-CN", None, "zh-Hans"),
        (None, "fr;q=1, zh-TW;q=0.7, zh-CN;q=0.6", "zh-Hant"),
        (None, "klingon", "en"),  # a header is not a client error
    ],
)
def test_the_feed_answers_reasons_in_the_language_asked_for(
    client: TestClient, lang: str | None, header: str | None, want: str, debug: bool
) -> None:
    extra = {"debug": True} if debug else {}
    body = items(client, lang, header, **extra)
    assert body["lang"] == want
    listed = body["items"]
    assert isinstance(listed, list) and listed
    tables = {"en": OLD_EN, "zh-Hans": ZH_HANS, "zh-Hant": ZH_HANT}
    for item in listed:
        why = Reason(item["explanation"]["code"], item["explanation"]["params"])
        assert item["reason"] == expected(tables[want], why)


@pytest.mark.parametrize("query", ["lang=fr", "lang=", "n=3&lang=ja-JP"])
def test_an_unsupported_lang_is_a_422_listing_the_supported_ones(
    client: TestClient, query: str
) -> None:
    r = client.get(f"/v1/users/u4/feed?{query}")
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["details"]["supported"] == ["en", "zh-Hans", "zh-Hant"]
    assert error["details"]["problems"][0]["field"] == "query.lang"


def test_fyp_recommend_prints_reasons_in_the_language_asked_for(world: Deployment) -> None:
    root = str(world.config.root)
    zh = CliRunner().invoke(cli, ["recommend", root, "u6", "--lang", "zh-Hans", "--reason", "t"])
    assert zh.exit_code == 0, zh.output
    page = FeedService(world).feed("u6", n=10, record=False)
    for item in page.items:  # the table may wrap a long reason: compare its start
        assert item.why.text("zh-Hans")[:4] in zh.output
    assert "because you" not in zh.output and "popular in" not in zh.output
    bad = CliRunner().invoke(cli, ["recommend", root, "u6", "--lang", "xx", "--reason", "t"])
    error = bad.exception
    assert isinstance(error, FypError) and fail(error).exit_code == 2
    assert "supported: en, zh-Hans, zh-Hant" in error.message


def test_without_opencc_traditional_falls_back_to_simplified_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "opencc", None)  # import fails
    monkeypatch.setattr(reasons, "_s2t", None)
    monkeypatch.setattr(reasons, "_s2t_missing", False)
    monkeypatch.setattr(reasons, "_converted", {})
    with caplog.at_level(logging.WARNING, logger="fyp.feed"):
        first = Reason("category_interest", {"category": "音乐"}).text("zh-Hant")
        again = Reason("trending_region").text("zh-Hant")
    # the templates' Traditional wording is fyp's own; only the data's words stay Simplified
    assert (first, again) == ("因為你常看音乐", "你所在地區的熱門")
    assert sum("opencc is not installed" in r.getMessage() for r in caplog.records) == 1


def test_a_reason_takes_only_its_codes_parameters() -> None:
    with pytest.raises(ValueError):
        Reason("liked_similar", {})
    with pytest.raises(ValueError):
        Reason("no_such_code")


def test_every_code_has_a_reviewed_traditional_wording() -> None:
    """Each template's zh-Hant is written out, not left to OpenCC's character-by-character
    conversion (which made a like 贊 and a video 視頻, mainland words in Traditional
    characters): already Traditional, with the English template's parameters."""
    import string

    from fyp.feed.reasons import CODES, traditional

    for code in CODES.values():
        assert code.zh_hant is not None, code.name
        assert traditional(code.zh_hant) == code.zh_hant, code.name
        assert not set("贊视频关注个性") & set(code.zh_hant), code.name
        names = {f for _, f, _, _ in string.Formatter().parse(code.zh_hant) if f}
        assert names == set(code.params), code.name


CODED = st.one_of(
    st.sampled_from([fixed(name) for name, spec in CODES.items() if not spec.params]),
    st.text(min_size=1).map(liked_similar),
    st.text(min_size=1).map(category_interest),
)


@given(CODED)
@settings(deadline=None)  # the first zh-Hant text loads OpenCC
def test_only_a_text_fyp_never_served_is_untranslated(why: Reason) -> None:
    """Every reason of this version maps back from its English text to its code (as an
    artifact's texts are read), and is rendered from a Chinese template in both Chinese
    languages: so ``other``, served the same in every language, is never one of them,
    but only a text this version has no template for (a newer fyp's, a fork's)."""
    assert from_text(why.text("en")) == why
    assert why.code != "other"
    spec = CODES[why.code]
    assert spec.zh_hans != spec.en and (spec.zh_hant or spec.zh_hans) != spec.en
    for lang in ("zh-Hans", "zh-Hant"):
        assert why.text(lang) != why.text("en")


@given(st.text().filter(lambda t: from_text(t).code == "other"))
def test_other_is_its_text_in_every_language(text: str) -> None:
    assert {other(text).text(lang) for lang in LANGS} == {text}
    assert other(text).to_dict() == {"code": "other", "params": {"text": text}}
