"""Text for moderation: normalisation, Chinese tokens (jieba) and banned-term matching.

Why terms are matched twice:

- **Tokens** (jieba for Chinese, words elsewhere) give whole-word matches: a Latin
  term must not fire inside a longer word ("ass" in "class", the Scunthorpe problem).
- **NFKC-normalised substrings** for CJK terms: Chinese is written without spaces,
  and jieba's segmentation depends on context and its dictionary. A banned term that
  is not a dictionary word is split into pieces ("网赌" may come out as 网 / 赌), or
  swallowed by a longer word ("赌博网站"), and evasions insert punctuation, spaces or
  emoji between characters ("赌.博", "赌 🎲 博"). So CJK terms are also looked up in
  the text after NFKC (full-width and compatibility forms fold: "ＶＸ" -> "vx"),
  case folding and removal of everything that is not a letter or digit.

Substrings can over-match across a word boundary in Chinese too (a term "中共"
inside "集中共享"), so every match records how it was found — ``word`` (a jieba token
or a whole Latin word), ``phrase`` (a multi-word Latin term) or ``substring`` (only in
the squeezed CJK text) — and the finding's reason shows it to reviewers and appeals.

jieba loads its dictionary (about a second) on first use, without network access, and
its log output is silenced; the tokenizer is a private instance so a term list never
changes anyone else's segmentation.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_NOT_WORD = re.compile(r"[\W_]+")
_HASHTAG = re.compile(r"[#＃]([^\s#＃@]+)")
_MENTION = re.compile(r"[@＠][^\s@＠#＃(（]+(?:[(（][^)）\s]*[)）])?")
_TOKEN_OK = re.compile(r"\w", re.UNICODE)

_lock = threading.Lock()
_tokenizer: Any = None


def normalise(text: str) -> str:
    """NFKC, case-folded, zero-width characters removed: one spelling per visible text."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold()


def squeeze(text: str) -> str:
    """Normalised text with only letters and digits left (no spaces, punctuation, emoji)."""
    return _NOT_WORD.sub("", normalise(text))


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def inline_hashtags(caption: str) -> list[str]:
    """``#tag`` words in a caption (KuaiRec also writes ``#tag#``), normalised."""
    out: dict[str, None] = {}
    for raw in _HASHTAG.findall(caption):
        tag = normalise(raw).strip("#＃")
        if tag:
            out.setdefault(tag, None)
    return list(out)


def strip_mentions(text: str) -> str:
    return _MENTION.sub(" ", text)


def strip_tags(caption: str) -> str:
    """The caption without ``#hashtags`` and ``@mentions`` (``@name(O123)`` in KuaiRec)."""
    return _HASHTAG.sub(" ", _MENTION.sub(" ", caption))


def all_hashtags(caption: str, hashtags: Iterable[str]) -> list[str]:
    """The video's hashtag field and the caption's inline hashtags, normalised, unique."""
    tags = dict.fromkeys(normalise(t).strip().lstrip("#＃") for t in hashtags)
    tags.update(dict.fromkeys(inline_hashtags(caption)))
    return [t for t in tags if t]


def tokenizer() -> Any:
    """The shared private jieba tokenizer, initialised once, quietly, offline."""
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                import jieba

                logging.getLogger("jieba").setLevel(logging.ERROR)
                tok = jieba.Tokenizer()
                tok.initialize()
                _tokenizer = tok
    return _tokenizer


@functools.lru_cache(maxsize=4096)
def tokens(text: str) -> tuple[str, ...]:
    """Normalised words: jieba segments CJK runs, other scripts split on non-letters.

    jieba runs without its HMM new-word guessing: it is the slow half of jieba, and
    words outside the dictionary are what the CJK substring match is for. Cached:
    every rule of a verdict asks for the tokens of the same caption."""
    norm = normalise(text)
    if not norm.strip():
        return ()
    words: Sequence[str] = tokenizer().lcut(norm, HMM=False) if has_cjk(norm) else norm.split()
    out: list[str] = []
    for word in words:
        for part in _NOT_WORD.split(word) if not has_cjk(word) else [word.strip()]:
            if part and _TOKEN_OK.search(part):
                out.append(part)
    return tuple(out)


class TermMatcher:
    """Finds which of a list of terms a text contains (see the module docstring)."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms: dict[str, str] = {}  # normalised -> as configured
        for term in terms:
            norm = normalise(term).strip()
            if norm:
                self.terms.setdefault(norm, term)
        self.cjk = {squeeze(t): t for t in self.terms if has_cjk(t)}
        self.cjk.pop("", None)
        # multi-word Latin terms ("free money") are matched as whole-word phrases
        self._phrases = [
            (re.compile(r"(?<!\w)" + r"\W+".join(map(re.escape, t.split())) + r"(?!\w)"), t)
            for t in self.terms
            if not has_cjk(t) and len(t.split()) > 1
        ]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, text: str, text_tokens: Sequence[str] | None = None) -> dict[str, str]:
        """Configured term -> how it matched (``word``, ``phrase`` or ``substring``)."""
        if not self.terms or not text:
            return {}
        toks = tokens(text) if text_tokens is None else text_tokens
        found = {self.terms[t]: "word" for t in toks if t in self.terms}
        if self._phrases:
            norm = normalise(text)
            for rx, term in self._phrases:
                if rx.search(norm):
                    found.setdefault(self.terms[term], "phrase")
        if self.cjk:
            flat = squeeze(text)
            # every term on its own: overlapping terms ("网赌", "赌博" in "网赌博") all count
            for flat_term, norm in self.cjk.items():
                if flat_term in flat:
                    found.setdefault(self.terms[norm], "substring")
        return dict(sorted(found.items()))

    def find(self, text: str, text_tokens: Sequence[str] | None = None) -> list[str]:
        """Configured spellings of the terms found, sorted (deterministic)."""
        return list(self.matches(text, text_tokens))
