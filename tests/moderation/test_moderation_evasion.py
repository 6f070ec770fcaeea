"""Evasions of the text checks found in acceptance review: each must be caught.

Policies as in the review: us bans 赌博, casino and 网赌, the hashtag 约炮 and the
category 博彩, sends 整容 to review and treats 性感 as mature; eu bans casino.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moderation_helpers import video

from fyp.catalog.service import Catalog
from fyp.moderation import Moderator, PolicyEngine, parse_policy, textfold
from fyp.moderation.confusables import LATIN_SKELETON
from fyp.moderation.models import ModerationInput, State, cover_texts
from fyp.moderation.text import TermMatcher, prepare
from fyp.regions.deployment import Deployment

US = PolicyEngine(
    parse_policy(
        "us",
        {
            "banned_terms": ["赌博", "casino", "网赌"],
            "banned_hashtags": ["约炮"],
            "review_terms": ["整容"],
            "mature_terms": ["性感"],
            "blocked_categories": ["博彩"],
        },
    )
)
EU = PolicyEngine(parse_policy("eu", {"banned_terms": ["casino"]}))


def judge(engine: PolicyEngine, **fields: Any) -> tuple[State, str]:
    verdict = engine.evaluate(
        ModerationInput("v", engine.policy.region, creator="imported", **fields)
    )
    return verdict.state, verdict.reason


@pytest.mark.parametrize(
    ("fields", "state", "rule"),
    [
        # 1. the hashtag field is text too
        ({"caption": "看", "hashtags": ("赌博",)}, State.rejected, "banned_terms"),
        ({"caption": "看", "hashtags": ("网上赌博",)}, State.rejected, "banned_terms"),
        ({"caption": "看", "hashtags": ("casino",)}, State.rejected, "banned_terms"),
        ({"caption": "看", "hashtags": ("整容",)}, State.pending, "review_terms"),
        ({"caption": "看", "hashtags": ("性感",)}, State.age_restricted, "maturity"),
        # 2. traditional Chinese
        ({"caption": "網上賭博贏大錢"}, State.rejected, "banned_terms"),
        ({"caption": "看", "hashtags": ("約炮",)}, State.rejected, "banned_hashtags"),
        ({"caption": "看 #約炮"}, State.rejected, "banned_hashtags"),
        # 3. invisible characters and bidi controls
        ({"caption": "网上赌\u3164博赢"}, State.rejected, "banned_terms"),
        ({"caption": "网上赌\u115f博赢"}, State.rejected, "banned_terms"),
        ({"caption": "网上赌\u1160博赢"}, State.rejected, "banned_terms"),
        ({"caption": "网上赌\uffa0博赢"}, State.rejected, "banned_terms"),
        ({"caption": "看", "hashtags": ("约\u3164炮",)}, State.rejected, "banned_hashtags"),
        ({"caption": "\u202eonisac\u202c"}, State.rejected, "banned_terms"),
        ({"caption": "play \u2067onisac\u2069 now"}, State.rejected, "banned_terms"),
        # 4. look-alike letters
        ({"caption": "play саsino now"}, State.rejected, "banned_terms"),
        ({"caption": "cΑsino"}, State.rejected, "banned_terms"),
        # 5. combining marks
        ({"caption": "c\u0301asino"}, State.rejected, "banned_terms"),
        # 7. separators and emoji inside a hashtag or a category
        ({"caption": "看", "hashtags": ("约 炮",)}, State.rejected, "banned_hashtags"),
        ({"caption": "看", "hashtags": ("约炮🔥",)}, State.rejected, "banned_hashtags"),
        ({"caption": "看", "categories": ("博 彩",)}, State.blocked, "categories"),
        # already caught before the review, and still
        ({"caption": "ＣＡＳＩＮＯ"}, State.rejected, "banned_terms"),
        ({"caption": "𝐜𝐚𝐬𝐢𝐧𝐨 ⓒⓐⓢⓘⓝⓞ"}, State.rejected, "banned_terms"),
        ({"caption": "ca\u200bsi\u00adno\ufeff"}, State.rejected, "banned_terms"),
        ({"caption": "赌 🎲 博"}, State.rejected, "banned_terms"),
        ({"caption": "网 赌"}, State.rejected, "banned_terms"),
        ({"caption": "看 ＃约炮"}, State.rejected, "banned_hashtags"),
        ({"caption": "今天天气很好我们去公园散步"}, State.approved, None),
    ],
)
def test_us_evasions_are_caught(fields: dict[str, Any], state: State, rule: str | None) -> None:
    got, reason = judge(US, **fields)
    assert got is state, reason
    if rule is not None:
        assert reason.startswith(f"{rule}:") or f"; {rule}:" in reason, reason


@pytest.mark.parametrize(
    ("caption", "state"),
    [
        ("c.a.s.i.n.o", State.rejected),  # 6. spelled out
        ("c a s i n o", State.rejected),
        ("visit c_a_s_i_n_o tonight", State.rejected),
        ("music a sinologist", State.approved),  # words are never merged
        ("a casinos list", State.approved),  # nor found inside longer words
    ],
)
def test_eu_spelled_out_terms(caption: str, state: State) -> None:
    got, reason = judge(EU, caption=caption)
    assert got is state, reason


@pytest.mark.parametrize(
    "attributes",
    [
        {"manual_cover_text": None, "cover_text": "赌博"},
        {"manual_cover_text": "", "cover_text": "赌博"},
        {"manual_cover_text": "好看", "cover_text": "赌博"},
        {"manual_cover_text": "赌博", "cover_text": "好看"},
        {"cover_text": "赌博"},
    ],
)
def test_every_cover_text_is_checked(attributes: dict[str, Any]) -> None:
    got, reason = judge(US, caption="看", cover_texts=cover_texts(attributes))
    assert got is State.rejected and "banned_terms" in reason


@pytest.mark.parametrize("value", [["赌博"], 7, {"text": "赌博"}, [], False])
def test_a_cover_text_that_is_not_text_fails_closed(value: object) -> None:
    verdict = US.evaluate(
        ModerationInput("v", "us", caption="看", cover_texts=cover_texts({"cover_text": value}))
    )
    assert verdict.state is State.pending  # a human decides; never approved
    failed = {f.rule for f in verdict.failures}
    assert {"banned_terms", "review_terms", "maturity", "spam", "classifier"} <= failed
    assert "cover text attribute 'cover_text' is" in verdict.failures[0].error
    # a rule that rejects anyway still rejects
    rejected = US.evaluate(
        ModerationInput("v", "us", hashtags=("约炮",), cover_texts={"cover_text": value})
    )
    assert rejected.state is State.rejected


def test_absent_and_placeholder_cover_texts_are_not_cover_texts() -> None:
    assert cover_texts({"manual_cover_text": None, "cover_text": "", "x": "赌博"}) == {}
    assert cover_texts({"manual_cover_text": "UNKNOWN"}) == {}  # KuaiRec's placeholder
    assert cover_texts(None) == {}


def test_inputs_recorded_with_one_cover_text_still_replay() -> None:
    legacy = ModerationInput("v", "us").to_dict()
    del legacy["cover_texts"]
    legacy["cover_text"] = "赌博"
    assert ModerationInput.from_dict(legacy).cover_texts == {"cover_text": "赌博"}
    legacy["cover_text"] = ""
    assert ModerationInput.from_dict(legacy).cover_texts == {}


def test_cover_texts_of_catalogue_videos(policed: Deployment, moderator: Moderator) -> None:
    catalog = Catalog(policed)
    catalog.create_video(
        video("both", "周末的封面", attributes={"manual_cover_text": None, "cover_text": "赌博"})
    )
    catalog.create_video(video("list", "另一个视频", attributes={"cover_text": ["赌博"]}))
    moderator.run("us")
    rows = moderator.cell("us").mod
    both, listed = rows.get("both"), rows.get("list")
    assert both is not None and both.state == "rejected"
    assert listed is not None and listed.state == "pending"
    assert "cover text attribute 'cover_text' is list" in listed.reason


def test_without_opencc_text_rules_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opencc", None)  # import opencc -> ImportError
    monkeypatch.setattr(textfold, "_converter", None)
    engine = PolicyEngine(parse_policy("us", {"banned_terms": ["赌博"]}))
    verdict = engine.evaluate(ModerationInput("v", "us", caption="一段沒有見過的繁體字幕"))
    assert verdict.state is State.pending
    assert any("opencc is not installed" in f.error for f in verdict.failures)


# -- properties ---------------------------------------------------------------------
TERMS = ["赌博", "网赌", "casino", "约炮"]
MATCHER = TermMatcher(TERMS)
IGNORABLE = [
    chr(c)
    for block in (range(0x20000), range(0xE0000, 0xE1000))
    for c in block
    if textfold.is_ignorable(chr(c))
]
MARKS = [chr(c) for c in (*range(0x0300, 0x0370), *range(0x20D0, 0x20F1), 0x3099, 0x1AB0)]
PREFIXES = ["", "看 ", "今天 ", "play ", "快来！"]
SUFFIXES = ["", " now", " 好不好", "！"]


def _insert(term: str, chars: list[str], places: list[int]) -> str:
    out = list(term)
    for char, place in zip(chars, places, strict=False):
        out.insert(place % (len(out) + 1), char)
    return "".join(out)


@settings(max_examples=300, deadline=None, database=None)
@given(
    term=st.sampled_from(TERMS),
    chars=st.lists(st.sampled_from(IGNORABLE), min_size=1, max_size=4),
    places=st.lists(st.integers(0, 20), min_size=4, max_size=4),
    prefix=st.sampled_from(PREFIXES),
    suffix=st.sampled_from(SUFFIXES),
)
def test_default_ignorable_characters_never_hide_a_term(
    term: str, chars: list[str], places: list[int], prefix: str, suffix: str
) -> None:
    assert term in MATCHER.find(prefix + _insert(term, chars, places) + suffix)


@settings(max_examples=200, deadline=None, database=None)
@given(
    term=st.sampled_from(TERMS),
    marks=st.lists(st.sampled_from(MARKS), min_size=1, max_size=4),
    places=st.lists(st.integers(1, 20), min_size=4, max_size=4),
    prefix=st.sampled_from(PREFIXES),
)
def test_combining_marks_never_hide_a_term(
    term: str, marks: list[str], places: list[int], prefix: str
) -> None:
    out = list(term)
    for mark, place in zip(marks, places, strict=False):
        out.insert(1 + place % len(out), mark)  # after a letter, as marks are written
    assert term in MATCHER.find(prefix + "".join(out))


LOOKALIKES = {
    letter: [c for c, latin in LATIN_SKELETON.items() if latin == letter] + [letter]
    for letter in "casino"
}


@settings(max_examples=200, deadline=None, database=None)
@given(st.data())
def test_look_alike_letters_never_hide_a_latin_term(data: st.DataObject) -> None:
    spelled = "".join(data.draw(st.sampled_from(LOOKALIKES[letter])) for letter in "casino")
    prefix = data.draw(st.sampled_from(PREFIXES))
    assert MATCHER.find(prefix + spelled + " tonight") == ["casino"]


@settings(max_examples=200, deadline=None, database=None)
@given(
    seps=st.lists(st.text(alphabet=" .-_*·/|,~🎲", min_size=1, max_size=3), min_size=5, max_size=5),
    prefix=st.sampled_from(["", "play ", "看 "]),
)
def test_spelled_out_letters_are_one_word(seps: list[str], prefix: str) -> None:
    text = "c" + "".join(sep + letter for sep, letter in zip(seps, "asino", strict=True))
    assert MATCHER.matches(prefix + text + " now") == {"casino": "spelled"}


@settings(max_examples=200, deadline=None, database=None)
@given(cuts=st.sets(st.integers(1, 5), max_size=5), sep=st.sampled_from([" ", ". ", " - "]))
def test_words_are_never_merged(cuts: set[int], sep: str) -> None:
    pieces = ["casino"[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 6], strict=True)]
    text = sep.join(pieces)
    found = MATCHER.find(text)
    assert found == (["casino"] if len(pieces) in (1, 6) else []), text


@settings(max_examples=100, deadline=None, database=None)
@given(
    term=st.sampled_from(TERMS),
    run=st.sampled_from([("\u202e", "\u202c"), ("\u2067", "\u2069"), ("\u202b", "\u202c")]),
    prefix=st.sampled_from(PREFIXES),
)
def test_a_term_shown_reversed_is_found(term: str, run: tuple[str, str], prefix: str) -> None:
    text = prefix + run[0] + term[::-1] + run[1] + " 好"
    assert term in MATCHER.find(text)
    assert len(prepare(text).forms) == 2
