"""Text for moderation: Chinese tokens (jieba), hashtags and term matching.

Text is first folded into one spelling (:mod:`fyp.moderation.textfold`: compatibility
forms, invisible characters, combining marks, look-alike letters, case, traditional
Chinese), in its logical order and, when bidi controls reverse part of it, in display
order too. Terms are then matched several ways:

- **Tokens** (jieba for Chinese, words elsewhere) give whole-word matches: a Latin
  term must not fire inside a longer word ("ass" in "class", the Scunthorpe problem).
- **Phrases**: a multi-word Latin term ("free money") as whole words with anything
  that is not a letter or digit between them.
- **Spelled out**: a run of single letters or digits, each separated from the next by
  one to three characters that are neither ("c.a.s.i.n.o", "c a s i n o"), is one more
  word, the letters joined. Only single letters join, so "music a sinologist" is never
  "casino".
- **Substrings** for CJK terms: Chinese is written without spaces, and jieba's
  segmentation depends on context and its dictionary. A banned term that is not a
  dictionary word is split into pieces ("网赌" may come out as 网 / 赌), or swallowed by
  a longer word ("赌博网站"), and evasions insert punctuation, spaces or emoji between
  characters ("赌.博", "赌 🎲 博"). So CJK terms are also looked up in the folded text
  with everything that is not a letter or digit removed.

Substrings can over-match across a word boundary in Chinese too (a term "中共"
inside "集中共享"), so every match records how it was found — ``word``, ``phrase``,
``spelled`` or ``substring`` — and the finding's reason shows it to reviewers and
appeals.

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
from dataclasses import dataclass
from typing import Any

from fyp.moderation.textfold import CJK_RANGES, fold, has_cjk, visual

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_NOT_WORD = re.compile(r"[\W_]+")
_HASHTAG = re.compile(r"[#＃]([^\s#＃@]+)")
_MENTION = re.compile(r"[@＠][^\s@＠#＃(（]+(?:[(（][^)）\s]*[)）])?")
_TOKEN_OK = re.compile(r"\w", re.UNICODE)
# one letter or digit (not CJK) with no letter or digit beside it, 1-3 separators, ...
_SINGLE = rf"(?<![^\W_])[^\W_{CJK_RANGES}](?![^\W_])"
_SPELLED = re.compile(rf"{_SINGLE}(?:(?:[^\w\n]|_){{1,3}}{_SINGLE})+")
_LATIN_WORD = re.compile(rf"[^\W_{CJK_RANGES}]+")  # a word of any script but CJK

_lock = threading.Lock()
_tokenizer: Any = None


def normalise(text: str) -> str:
    """NFKC, case-folded, zero-width characters removed: the spelling re-upload
    fingerprints use (terms are matched on :func:`fyp.moderation.textfold.fold`)."""
    return unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold()


def squeeze(text: str) -> str:
    """Normalised text with only letters and digits left (no spaces, punctuation, emoji)."""
    return _NOT_WORD.sub("", normalise(text))


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


def raw_hashtags(caption: str, hashtags: Iterable[str]) -> list[str]:
    """The hashtag field and the caption's inline hashtags as written (for matching)."""
    return [*hashtags, *_HASHTAG.findall(caption)]


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


def _jieba_words(folded: str) -> tuple[str, ...]:
    if not folded.strip():
        return ()
    words: Sequence[str] = (
        tokenizer().lcut(folded, HMM=False) if has_cjk(folded) else folded.split()
    )
    out: list[str] = []
    for word in words:
        for part in _NOT_WORD.split(word) if not has_cjk(word) else [word.strip()]:
            if part and _TOKEN_OK.search(part):
                out.append(part)
    return tuple(out)


def tokens(text: str) -> tuple[str, ...]:
    """Folded words: jieba segments CJK runs, other scripts split on non-letters.

    jieba runs without its HMM new-word guessing: it is the slow half of jieba, and
    words outside the dictionary are what the CJK substring match is for."""
    return _jieba_words(fold(text))


@dataclass(frozen=True)
class Prepared:
    """One text in every form the matcher reads, computed once per text."""

    forms: tuple[str, ...]  # folded; then the display order, when bidi controls change it
    words: frozenset[str]  # runs of letters and digits other than CJK, in every form
    flat: str  # each form with only letters and digits left, a line each
    spelled: frozenset[str]  # single letters spelled out with separators, joined

    @functools.cached_property
    def cjk_words(self) -> frozenset[str]:
        """jieba's words of every form: only asked for when a CJK term was found."""
        return frozenset(w for form in self.forms for w in _jieba_words(form))


@functools.lru_cache(maxsize=8192)
def prepare(text: str) -> Prepared:
    """Cached: every rule of a verdict reads the same caption, and tags repeat."""
    forms = tuple(dict.fromkeys(fold(v) for v in (text, visual(text))))
    spelled = frozenset(
        _NOT_WORD.sub("", m.group()) for form in forms for m in _SPELLED.finditer(form)
    )
    words = frozenset(w for form in forms for w in _LATIN_WORD.findall(form))
    return Prepared(forms, words, "\n".join(_NOT_WORD.sub("", f) for f in forms), spelled)


def keys(text: str) -> frozenset[str]:
    """A hashtag's or a category's folded spellings without separators or emoji
    ("约 炮🔥" is "约炮"); empty when nothing but them."""
    return frozenset(f for f in prepare(text.strip().lstrip("#＃")).flat.split("\n") if f)


def _phrase(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + r"\W+".join(map(re.escape, term.split())) + r"(?!\w)")


@dataclass(frozen=True)
class _Index:
    words: dict[str, str]  # folded Latin term -> as configured
    phrases: list[tuple[re.Pattern[str], str]]  # multi-word Latin terms ("free money")
    spelled: dict[str, str]  # Latin term without separators -> as configured
    cjk: dict[str, tuple[str, str]]  # without separators -> (folded, as configured)


class TermMatcher:
    """Finds which of a list of terms a text contains (see the module docstring).

    Terms are folded on first use, not at construction: a rule whose folding cannot
    run (OpenCC missing) fails when it evaluates a video, which fails closed, instead
    of stopping the server from starting."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = tuple(dict.fromkeys(t for t in terms if t.strip()))

    def __bool__(self) -> bool:
        return bool(self.terms)

    @functools.cached_property
    def _index(self) -> _Index:
        folded: dict[str, str] = {}
        for term in self.terms:
            folded.setdefault(fold(term).strip(), term)
        latin = {t: c for t, c in folded.items() if not has_cjk(t)}
        return _Index(
            words=latin,
            phrases=[(_phrase(t), c) for t, c in latin.items() if len(t.split()) > 1],
            spelled={k: c for t, c in latin.items() if len(k := _NOT_WORD.sub("", t)) > 1},
            cjk={
                k: (t, c) for t, c in folded.items() if has_cjk(t) and (k := _NOT_WORD.sub("", t))
            },
        )

    def matches(self, *texts: str) -> dict[str, str]:
        """Configured term -> how it matched (``word``, ``phrase``, ``spelled`` or
        ``substring``), over all the texts (each matched on its own)."""
        found: dict[str, str] = {}
        if not self.terms:
            return found
        index = self._index
        for text in texts:
            if not text:
                continue
            p = prepare(text)
            for word in p.words & index.words.keys():
                found.setdefault(index.words[word], "word")
            for rx, term in index.phrases:
                if any(rx.search(form) for form in p.forms):
                    found.setdefault(term, "phrase")
            for key, term in index.spelled.items():
                if key in p.spelled:
                    found.setdefault(term, "spelled")
            # every term on its own: overlapping terms ("网赌", "赌博" in "网赌博") all count
            for key, (norm, term) in index.cjk.items():
                if key in p.flat:
                    found.setdefault(term, "word" if norm in p.cjk_words else "substring")
        return dict(sorted(found.items()))

    def find(self, *texts: str) -> list[str]:
        """Configured spellings of the terms found, sorted (deterministic)."""
        return list(self.matches(*texts))
