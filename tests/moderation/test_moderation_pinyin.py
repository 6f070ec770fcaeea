"""Chinese terms written in pinyin or with homophones, in a region that opts in
(``match_pinyin``): what is caught, what must not be, and that the switch changes
nothing when it is off."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moderation_helpers import video, with_policies

from fyp.catalog.service import Catalog
from fyp.errors import ConfigError
from fyp.moderation import Moderator, PolicyEngine, parse_policy, pinyin
from fyp.moderation.models import ModerationInput, State
from fyp.moderation.pinyin import MAX_READINGS, PinyinTerms, term_readings
from fyp.moderation.policy import PINYIN_LISTS
from fyp.moderation.rules import BannedTerms
from fyp.moderation.service import cell
from fyp.moderation.text import TermMatcher, segment

TERMS = {
    "banned_terms": ["赌博", "毒品", "银行卡", "casino"],
    "banned_hashtags": ["约炮"],
    "review_terms": ["整容"],
}
ON = PolicyEngine(parse_policy("cn", {**TERMS, "match_pinyin": True}))
OFF = PolicyEngine(parse_policy("cn", TERMS))


def judge(engine: PolicyEngine, **fields: Any) -> tuple[State, str]:
    verdict = engine.evaluate(ModerationInput("v", "cn", creator="imported", **fields))
    return verdict.state, verdict.reason


@pytest.mark.parametrize(
    ("fields", "how"),
    [
        ({"caption": "一起来dubo吧"}, "pinyin"),  # joined, beside Chinese text
        ({"caption": "come du bo tonight"}, "pinyin"),
        ({"caption": "DuBo"}, "pinyin"),  # any case
        ({"caption": "DU-BO"}, "pinyin"),
        ({"caption": "du.bo!"}, "pinyin"),
        ({"caption": "du_bo"}, "pinyin"),
        ({"caption": "du · bo"}, "pinyin"),  # up to three separators
        ({"caption": "dǔbó"}, "pinyin"),  # tone marks
        ({"caption": "du3bo2"}, "pinyin"),  # tone digits
        ({"caption": "du3 bo2 走起"}, "pinyin"),
        ({"caption": "ｄｕｂｏ"}, "pinyin"),  # full width: folded first
        ({"caption": "d u b o"}, "pinyin"),  # spelled out
        ({"caption": "看 #dubo"}, "pinyin"),  # inline hashtag
        ({"caption": "看", "hashtags": ("DuBo",)}, "pinyin"),  # the hashtag field
        ({"caption": "看 #DuBoNight"}, "pinyin"),  # CamelCase humps
        ({"caption": "网上赌bo"}, "pinyin"),  # mixed: a character and a syllable
        ({"caption": "du博"}, "pinyin"),
        ({"caption": "dupin 别碰"}, "pinyin"),  # 毒品
        ({"caption": "yin hang ka"}, "pinyin"),  # 银行卡, 行 read hang
        ({"caption": "yinxingka"}, "pinyin"),  # 行's other reading (heteronym)
        ({"caption": "网上堵博"}, "homophone"),
        ({"caption": "来赌搏一把"}, "homophone"),
        ({"caption": "网上堵，博"}, "homophone"),  # punctuation between
        ({"caption": "網上堵博"}, "homophone"),  # traditional: folded first
        ({"caption": "小心独品"}, "homophone"),
    ],
)
def test_a_term_in_pinyin_or_homophones_is_caught(fields: dict[str, Any], how: str) -> None:
    state, reason = judge(ON, **fields)
    assert state is State.rejected, reason
    assert f"({how})" in reason
    assert judge(OFF, **fields)[0] is State.approved  # the switch is what catches it


@pytest.mark.parametrize(
    "caption",
    [
        "dubois and dubonnet",  # inside a longer Latin word
        "xdubo",
        "dubob",
        "du2bob",
        "du - - bo",  # more than three separators
        "du\nbo",  # not across lines
        "du的bo",  # a Chinese character between
        "du",
        "读书写字",  # other characters, other reading
        "大家好今天天气很好",
        "杜泊羊",  # du bo, but none of the term's characters: all-homophone runs are noise
        "他在读博士",  # 读 reads du, but 博 is part of the word 博士
        "今天的病毒",  # no term reads bing du here
        "dubo2024",  # digits that are not a tone
    ],
)
def test_what_is_not_a_pinyin_or_homophone_match(caption: str) -> None:
    state, reason = judge(ON, caption=caption)
    assert state is State.approved, reason


def test_homophones_inside_ordinary_words_or_without_the_terms_characters_are_not_matched() -> None:
    """Measured on KuaiRec (docs/moderation.md): 冰毒 in 病毒 (a word), 大麻 in 大妈."""
    terms = {"冰毒": "冰毒", "大麻": "大麻", "赌博": "赌博"}
    shipped = PinyinTerms(terms, words=segment)
    assert shipped.in_chinese("新冠病毒溯源") == []
    assert shipped.in_chinese("大爷大妈们") == []
    assert shipped.in_chinese("黑头杜泊") == []
    assert PinyinTerms(terms, anchored=False, words=segment).in_chinese("黑头杜泊") == ["赌博"]
    # without the word rule a run inside words matches (拥堵 + 博物馆: du3 bo2)
    assert PinyinTerms(terms).in_chinese("拥堵博物馆") == ["赌博"]
    assert shipped.in_chinese("拥堵博物馆") == []


def test_a_homophone_must_read_with_the_terms_tones() -> None:
    """Every toneless homophone on KuaiRec was 大码 (da4 ma3, plus size) read as 大麻
    (da4 ma2); tones tell them apart, and 病毒 (bing4) is not 冰毒 (bing1)."""
    terms = {"冰毒": "冰毒", "大麻": "大麻", "赌博": "赌博"}
    bare = PinyinTerms(terms)  # no word rule: only the tones decide
    assert bare.in_chinese("大码女装") == []
    assert bare.in_chinese("新冠病毒溯源") == []
    assert bare.in_chinese("网上堵博") == ["赌博"]  # du3 bo2, as 赌博
    assert bare.in_chinese("网上读博") == []  # du2: another tone


def test_the_reading_of_a_hashtag_field_and_banned_hashtags() -> None:
    for tags, how in [(("yuepao",), "pinyin"), (("约泡",), "homophone"), (("Yue-Pao",), "pinyin")]:
        state, reason = judge(ON, caption="看", hashtags=tags)
        assert state is State.rejected and f"'约炮' ({how})" in reason, reason
        assert judge(OFF, caption="看", hashtags=tags)[0] is State.approved
    assert judge(ON, caption="看 #yuepao")[0] is State.rejected
    assert judge(ON, caption="看", hashtags=("yuepaoo",))[0] is State.approved
    state, reason = judge(ON, caption="看", hashtags=("约炮",))
    assert reason.split(";")[0] == "banned_hashtags: uses banned hashtag(s) '约炮'"  # as before


def test_the_ways_that_say_more_win() -> None:
    assert TermMatcher(["赌博"], pinyin=True).matches("赌博 dubo") == {"赌博": "word"}
    assert TermMatcher(["赌博"], pinyin=True).matches("dubo") == {"赌博": "pinyin"}


def test_heteronyms_give_every_reading_within_the_bound() -> None:
    assert term_readings("银行") == (("yin",), ("hang", "xing", "heng"))
    assert term_readings("重庆")[0][0] == "chong"  # the reading in context comes first
    many = term_readings("行长还要重重")
    assert many is not None and all(many)
    count = 1
    for options in many:
        count *= len(options)
    assert count <= MAX_READINGS
    assert term_readings("赌") is None and term_readings("v信") is None
    assert TermMatcher(["女人"], pinyin=True).matches("nvren", "nü ren") == {"女人": "pinyin"}


def test_per_list_switch() -> None:
    review_only = PolicyEngine(parse_policy("cn", {**TERMS, "match_pinyin": ["review_terms"]}))
    assert judge(review_only, caption="dubo")[0] is State.approved
    state, reason = judge(review_only, caption="zheng rong 之后")
    assert state is State.pending and "(pinyin)" in reason


@pytest.mark.parametrize(
    ("value", "lists"),
    [(True, PINYIN_LISTS), (False, ()), (["review_terms", "banned_terms"], PINYIN_LISTS[::2])],
)
def test_match_pinyin_values(value: Any, lists: tuple[str, ...]) -> None:
    assert parse_policy("cn", {"match_pinyin": value}).match_pinyin == lists


@pytest.mark.parametrize("value", ["yes", 1, ["blocked_categories"], ["banned_term"], [1]])
def test_bad_match_pinyin_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="match_pinyin must be true, false or a list"):
        parse_policy("cn", {"match_pinyin": value})


def test_off_changes_no_digest_and_no_rule_version() -> None:
    """A policy without the switch keeps the digest and rule versions it had before the
    key existed: the upgrade re-judges no catalogue."""
    assert (
        parse_policy("cn", TERMS).digest()
        == parse_policy("cn", {**TERMS, "match_pinyin": False}).digest()
    )
    assert "match_pinyin" not in parse_policy("cn", TERMS).to_dict()
    assert parse_policy("cn", {"match_pinyin": True}).digest() != parse_policy("cn", {}).digest()
    assert "pinyin" not in BannedTerms(["赌博"]).rule_version
    on = BannedTerms(["赌博"], pinyin=True).rule_version
    assert on.endswith(f"+{pinyin.version()}") and "pypinyin-" in on
    assert ON.versions["rule:banned_terms"] != OFF.versions["rule:banned_terms"]
    assert ON.versions["rule:categories"] == OFF.versions["rule:categories"]


def test_without_pypinyin_the_rule_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypinyin", None)  # an import of it fails
    monkeypatch.setattr(pinyin, "_module", None)
    engine = PolicyEngine(parse_policy("cn", {**TERMS, "match_pinyin": True}))
    verdict = engine.evaluate(ModerationInput("v", "cn", creator="imported", caption="hello"))
    assert verdict.state is State.pending
    assert "pypinyin is not installed" in verdict.reason


# --- properties -------------------------------------------------------------------------

SYLLABLES = {"赌博": ("du", "bo"), "毒品": ("du", "pin"), "整容": ("zheng", "rong")}
MATCHER = TermMatcher(list(SYLLABLES), pinyin=True)
PLAIN = TermMatcher(list(SYLLABLES))
pieces = st.sampled_from([*"dubopinzhegr 赌博毒品整容堵读书大家-.#3", "du", "bo", "pin"])
texts = st.lists(pieces, max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_the_switch_only_adds_matches(text: str) -> None:
    """With pinyin on, every term found without it is found the same way; the new ways
    only add terms."""
    before = PLAIN.matches(text)
    after = MATCHER.matches(text)
    assert {t: h for t, h in after.items() if t in before} == before
    assert all(h in ("pinyin", "homophone") for t, h in after.items() if t not in before)


@settings(max_examples=300, deadline=None)
@given(
    term=st.sampled_from(sorted(SYLLABLES)),
    seps=st.lists(st.text(alphabet=" -._·/~", max_size=3), min_size=2, max_size=2),
    upper=st.lists(st.booleans(), min_size=2, max_size=2),
    tones=st.lists(st.sampled_from(["", "1", "2", "3", "4"]), min_size=2, max_size=2),
    before=st.sampled_from(["", " ", "看", "来玩 ", "#"]),
    after=st.sampled_from(["", " ", "吧", "!", " now"]),
)
def test_separators_case_and_tones_between_syllables_never_lose_a_match(
    term: str, seps: list[str], upper: list[bool], tones: list[str], before: str, after: str
) -> None:
    first, second = (s.upper() if u else s for s, u in zip(SYLLABLES[term], upper, strict=True))
    written = f"{before}{first}{tones[0]}{seps[0]}{second}{tones[1]}{after}"
    assert MATCHER.matches(written).get(term) == "pinyin", written


def test_a_region_with_the_switch_rejects_du_bo_and_one_without_approves(tmp_path: Path) -> None:
    """Through the real moderation service: the same upload in two regions."""
    policies = {"us": {**TERMS, "match_pinyin": True}, "eu": TERMS}
    with with_policies(tmp_path / "d", policies) as d:
        Catalog(d).create_video(video("v", "周末一起来 du bo 吧", creator_id=None))
        moderator = Moderator(d)
        moderator.run("us")
        moderator.run("eu")
        us = cell(d.store("us")).mod.get("v")
        eu = cell(d.store("eu")).mod.get("v")
        assert us is not None and eu is not None
        assert (us.state, eu.state) == ("rejected", "approved")
        assert "'赌博' (pinyin)" in us.reason
