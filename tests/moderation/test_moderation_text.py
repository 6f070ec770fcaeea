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
    normalise,
    squeeze,
    strip_tags,
    tokens,
)


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
    ],
)
def test_terms_match_on_tokens_and_cjk_substrings(text: str, expected: dict[str, str]) -> None:
    matcher = TermMatcher(["赌博", "网赌", "casino", "ass", "free money"])
    assert matcher.matches(text) == expected


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
