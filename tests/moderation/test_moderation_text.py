"""Normalisation, jieba tokens, term matching and caption fingerprints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fyp.moderation import dedup
from fyp.moderation.text import (
    TermMatcher,
    all_hashtags,
    inline_hashtags,
    keys,
    normalise,
    prepare,
    squeeze,
    strip_tags,
    tokens,
)
from fyp.moderation.textfold import fold, is_ignorable, visual


def test_normalise_folds_width_case_and_invisible_characters() -> None:
    assert normalise("ＶＸ：ＡＢＣ\u200b１２３") == "vx:abc123"
    assert squeeze("赌 . 博🎲!") == "赌博"


def test_jieba_initialises_quietly_without_network(tmp_path: Path) -> None:
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from fyp.moderation.text import tokens\n"
        "print('|'.join(tokens('我要去网上赌博')))\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # no jieba cache yet: a cold start
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stderr == ""
    assert {"网上", "赌博"} <= set(done.stdout.strip().split("|"))


def test_tokens() -> None:
    assert "赌博" in tokens("我要去网上赌博")
    assert tokens("Free MONEY, now!") == ("free", "money", "now")
    assert tokens("加我vx123")[-1] == "vx123"
    assert tokens("  ") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我要赌博", {"赌博": "word"}),
        ("赌.博 赌🎲博", {"赌博": "substring"}),  # evasion: punctuation and emoji inside
        ("网赌博", {"网赌": "substring", "赌博": "word"}),  # overlapping terms both count
        ("Casino night", {"casino": "word"}),
        ("ｃａｓｉｎｏ", {"casino": "word"}),  # full-width folds under NFKC
        ("classic casinos", {}),  # no Latin match inside longer words
        ("a class act", {}),
        ("FREE  money!", {"free money": "phrase"}),
        ("无关的内容", {}),
        ("c.a.s.i.n.o", {"casino": "spelled"}),
        ("play c a s i n o now", {"casino": "spelled"}),
        ("c - a - s - i - n - o", {"casino": "spelled"}),
        ("f r e e m o n e y", {"free money": "spelled"}),
        ("music a sinologist", {}),  # only single letters join: no word is split or merged
        ("ca s i n o", {}),
        ("c a s i n o s", {}),  # a spelled-out run is one word: "casinos" is not "casino"
    ],
)
def test_terms_match_on_tokens_and_cjk_substrings(text: str, expected: dict[str, str]) -> None:
    matcher = TermMatcher(["赌博", "网赌", "casino", "ass", "free money"])
    assert matcher.matches(text) == expected


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("ＣＡＳＩＮＯ", "casino"),  # NFKC: full-width
        ("𝐜𝐚𝐬𝐢𝐧𝐨 ⓒⓐⓢⓘⓝⓞ", "casino casino"),  # mathematical and circled letters
        ("ca\u00adsi\u200bn\ufeffo\u2060", "casino"),  # soft hyphen, zero width, BOM
        ("赌\u3164博 约\u115f炮 网\u1160赌 赌\uffa0博", "赌博 约炮 网赌 赌博"),  # Hangul fillers
        ("cas\U000e0041ino\ufe0f\u034f\u180e\u0600", "casino"),  # tag, VS16, CGJ, Cf
        ("c\u0301asi\u0308no\u20dd", "casino"),  # combining and enclosing marks
        ("play саsino", "play casino"),  # Cyrillic а
        ("cΑsino ΗΟΤΕΙ", "casino hotei"),  # Greek capitals (capital iota reads as I)
        ("網上賭博贏大錢 約炮", "网上赌博赢大钱 约炮"),  # traditional -> simplified
        ("한국어 カジノ", "한국어 カシノ"),  # Hangul recomposes; kana lose their voicing marks
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\u202eonisac\u202c", "casino"),  # RLO ... PDF
        ("play \u202eonisac\u202c now", "play casino now"),
        ("\u2067onisac\u2069!", "casino!"),  # RLI ... PDI
        ("\u202eonisac", "casino"),  # unclosed: to the end of the line
        ("\u202eon\u202easi\u202cc\u202c", "casino"),  # nested: the inner run turns twice
        ("\u202eab\ncd", "ba\ncd"),  # a new line ends every run
        ("\u202dcasino\u202c", "\u202dcasino\u202c"),  # left-to-right only: unchanged
    ],
)
def test_visual_order_of_right_to_left_runs(text: str, shown: str) -> None:
    assert fold(visual(text)) == fold(shown)


def test_a_reversed_term_matches_in_either_order() -> None:
    matcher = TermMatcher(["casino", "赌博"])
    assert matcher.find("\u202eonisac\u202c") == ["casino"]
    assert matcher.find("\u202e博赌\u202c") == ["赌博"]
    assert matcher.find("cas\u202eino") == ["casino"]  # the logical order still counts
    assert prepare("plain").forms == ("plain",)


def test_ignorable_characters() -> None:
    for char in "\u00ad\u034f\u115f\u1160\u200b\u200d\u202e\u2066\u3164\ufe0f\uffa0\U000e0041":
        assert is_ignorable(char), hex(ord(char))
    for char in "a 赌\u0301":
        assert not is_ignorable(char)


def test_hashtag_and_category_keys_ignore_separators_and_emoji() -> None:
    assert keys("#约 炮🔥") == keys("約炮") == keys("约\u3164炮") == {"约炮"}
    assert keys("博 彩") == {"博彩"}
    assert keys("🔥 #") == frozenset()


def test_hashtags_inline_and_field() -> None:
    caption = "好看 #搞笑 #美食# ＃旅行 @快手小助手(O40300112)"
    assert inline_hashtags(caption) == ["搞笑", "美食", "旅行"]
    assert all_hashtags(caption, ["#搞笑", "Pets"]) == ["搞笑", "pets", "美食", "旅行"]
    assert "快手小助手" not in strip_tags(caption) and "搞笑" not in strip_tags(caption)


ORIGINAL = "孩子，这只是游戏而已，不至于生气吧 #王者荣耀 #手游 #感谢快手我要上热门"


@pytest.mark.parametrize(
    "edited",
    [
        "这只是游戏而已，不至于生气吧 #王者荣耀 #手游 #感谢快手我要上热门",  # cut
        "完整版来了 孩子，这只是游戏而已，不至于生气吧 #王者荣耀 #手游",  # padded, tag dropped
        "孩子🔥这只是游戏而已!!不至于……生气吧😂 #王者荣耀 #手游 #感谢快手我要上热门",
        "#感谢快手我要上热门 #手游 #王者荣耀 孩子，这只是游戏而已，不至于生气吧",  # reordered
    ],
)
def test_edited_reuploads_stay_close(edited: str) -> None:
    a = dedup.signature(ORIGINAL)
    b = dedup.signature(edited)
    assert a is not None and b is not None
    assert a.jaccard(b) >= 0.5


def test_signatures_are_deterministic_and_short_captions_have_none() -> None:
    a = dedup.signature(ORIGINAL)
    assert a is not None
    assert dedup.Signature.from_bytes(a.to_bytes()).jaccard(a) == 1.0
    assert a.to_bytes() == dedup.signature(ORIGINAL).to_bytes()  # type: ignore[union-attr]
    assert dedup.signature("好看吗 #搞笑 #美食 #旅行") is None  # too little text
    unrelated = dedup.signature("今天天气很好，我们一起去公园散步吧")
    assert unrelated is not None and a.jaccard(unrelated) < 0.2


def test_index_ranks_removed_and_media_matches_first() -> None:
    index = dedup.DuplicateIndex(0.5)
    sig = dedup.signature(ORIGINAL)
    index.add("live", sig, None, "approved", "c1")
    index.add("gone", sig, None, "rejected", "c2")
    index.add("copy", None, "abc", "approved", "c3")
    found = index.matches("new", sig, "abc", "c1")
    assert [(m.video_id, m.kind, m.state) for m in found] == [
        ("gone", "caption", "rejected"),
        ("copy", "media", "approved"),
        ("live", "caption", "approved"),
    ]
    assert found[2].same_creator and not found[0].same_creator
    assert index.matches("live", sig, None, "c1")[0].video_id == "gone"  # never itself
    index.remove("gone")
    assert [m.video_id for m in index.matches("new", sig, None, None)] == ["live"]
    assert len(index) == 1
