"""Text for moderation: Chinese tokens (jieba), hashtags and term matching.

Text is first folded into one spelling (:mod:`fyp.moderation.textfold`: enclosed and
compatibility forms, invisible characters, combining marks, look-alike letters, case,
traditional Chinese), in its logical order and, when bidi controls reverse part of it,
in display order too; when it holds regional-indicator symbols, also with them read as
letters. Terms are then matched several ways:

- **Tokens** (jieba for Chinese, words elsewhere) give whole-word matches: a Latin
  term must not fire inside a longer word ("ass" in "class", the Scunthorpe problem).
- **Phrases**: a multi-word Latin term ("free money") as whole words with anything
  that is not a letter or digit between them.
- **Spelled out**: a run of single letters or digits, each separated from the next by
  one to three characters that are neither ("c.a.s.i.n.o", "c a s i n o"), is one more
  word, the letters joined. Only single letters join, so "music a sinologist" is never
  "casino".
- **Hashtags** (the hashtag field and inline ``#tags``): a hashtag body is also cut into
  words at CamelCase humps and between letters and digits ("#CasinoNight" holds the
  word "casino": ``camelcase``), and a Latin term of at least :data:`GLUED_MIN` letters
  is also found anywhere inside a body written in one piece ("#casinonight":
  ``glued``). Running text never gets either: "class" does not contain "ass" there, and
  "McDonald" is one word.
- **Leetspeak**: digits and ``@$!`` inside a Latin word read as letters ("c4sino",
  "ca$ino", "k1ll"; :func:`fyp.moderation.textfold.deleet`), and the words, phrases,
  spelled-out runs and hashtags are matched again in that reading (``leet``). Both
  readings count, so a term with digits ("3p") still matches as written.
- **Substrings** for CJK terms: Chinese is written without spaces, and jieba's
  segmentation depends on context and its dictionary. A banned term that is not a
  dictionary word is split into pieces ("网赌" may come out as 网 / 赌), or swallowed by
  a longer word ("赌博网站"), and evasions insert punctuation, spaces or emoji between
  characters ("赌.博", "赌 🎲 博"). So CJK terms are also looked up in the folded text
  with everything that is not a letter or digit removed.
- **Pinyin and homophones**, only for a matcher made with ``pinyin=True`` (a region's
  ``match_pinyin``): a CJK term written in pinyin ("du bo", "dubo", "#DuBo") or with
  characters that sound the same ("堵博"; :mod:`fyp.moderation.pinyin`).

Substrings can over-match across a word boundary in Chinese too (a term "中共"
inside "集中共享"), so every match records how it was found — ``word``, ``phrase``,
``spelled``, ``camelcase``, ``glued``, ``leet``, ``substring``, ``pinyin`` or
``homophone`` — and the finding's reason shows it to reviewers and appeals.

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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from fyp.moderation.pinyin import PinyinTerms
from fyp.moderation.textfold import (
    CJK_RANGES,
    deleet,
    fold,
    fold_keep_case,
    has_cjk,
    has_regional,
    may_hold_enclosed,
    regional_letters,
    visual,
    without_enclosed,
)

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_NOT_WORD = re.compile(r"[\W_]+")
_HASHTAG = re.compile(r"[#＃]([^\s#＃@]+)")
_MENTION = re.compile(r"[@＠][^\s@＠#＃(（]+(?:[(（][^)）\s]*[)）])?")
_TOKEN_OK = re.compile(r"\w", re.UNICODE)
# one letter or digit (not CJK) with no letter or digit beside it, 1-3 separators, ...
_SINGLE = rf"(?<![^\W_])[^\W_{CJK_RANGES}](?![^\W_])"
_SPELLED = re.compile(rf"{_SINGLE}(?:(?:[^\w\n]|_){{1,3}}{_SINGLE})+")
_LATIN_WORD = re.compile(rf"[^\W_{CJK_RANGES}]+")  # a word of any script but CJK
# a Latin term is found inside a glued hashtag body ("#casinonight") from this many letters:
# among the 30,000 most frequent English words, 3-letter terms are inside 58 others each
# ("ass": class, pass, ...), 4-letter ones inside 6 ("kill": skill; "meth": method), 5 and
# more inside 2, mostly their own inflections ("casinos", "murdered")
GLUED_MIN = 5

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


def segment(text: str) -> list[str]:
    """jieba's words of a text, every character kept (no HMM: see :func:`tokens`)."""
    words: list[str] = tokenizer().lcut(text, HMM=False)
    return words


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


def camel_words(text: str) -> list[str]:
    """A hashtag body cut into words: at non-letters, CamelCase humps ("CasinoNight",
    "HTMLParser") and between letters and digits ("Casino2024"), case-folded."""
    words: list[str] = []
    for run in _LATIN_WORD.findall(text):
        start = 0
        for i in range(1, len(run)):
            before, char, after = run[i - 1], run[i], run[i + 1 : i + 2]
            if (
                before.isdigit() != char.isdigit()
                or (before.islower() and char.isupper())
                or (before.isupper() and char.isupper() and after.islower())
            ):
                words.append(run[start:i])
                start = i
        words.append(run[start:])
    return [w.casefold() for w in words]


@dataclass(frozen=True)
class Spelling:
    """The Latin words of a text in one reading: as folded, or with leetspeak undone."""

    forms: tuple[str, ...]  # the text, folded (and in its other orders and readings)
    words: frozenset[str]  # runs of letters and digits other than CJK, in every form
    spelled: frozenset[str]  # single letters spelled out with separators, joined
    tag_words: frozenset[str]  # hashtag bodies cut at CamelCase humps and digits
    tag_lines: tuple[str, ...]  # those words of each body, with spaces (for phrases)
    tag_glued: tuple[str, ...]  # each hashtag body with only letters and digits left


@functools.lru_cache(maxsize=8192)
def _bodies(raw: str) -> tuple[str, ...]:
    """A hashtag body folded but for case (and again with regional indicators as letters)."""
    kept = fold_keep_case(raw)
    return (kept, regional_letters(kept)) if has_regional(kept) else (kept,)


@functools.lru_cache(maxsize=8192)
def _tag_parts(body: str) -> tuple[tuple[str, ...], str]:
    """A folded hashtag body's CamelCase words, and the body glued (letters and digits)."""
    return tuple(camel_words(body)), _NOT_WORD.sub("", body.casefold())


def _spelling(forms: Iterable[str], bodies: Iterable[str], spelled: Iterable[str] = ()) -> Spelling:
    forms = tuple(dict.fromkeys(forms))
    parts = [_tag_parts(b) for b in dict.fromkeys(bodies)]
    return Spelling(
        forms,
        frozenset(w for form in forms for w in _LATIN_WORD.findall(form)),
        frozenset(
            _NOT_WORD.sub("", m.group()) for form in forms for m in _SPELLED.finditer(form)
        ).union(spelled),
        frozenset(w for words, _ in parts for w in words),
        tuple(" ".join(words) for words, _ in parts if len(words) > 1),
        tuple(glued for _, glued in parts if glued),
    )


@dataclass(frozen=True)
class Prepared:
    """One text in every form the matcher reads, computed once per text."""

    forms: tuple[str, ...]  # folded; then the display order, regional indicators as letters
    flat: str  # each form with only letters and digits left, a line each (and see prepare)
    exact: Spelling  # the forms' Latin words
    leet: Spelling | None  # the same with leetspeak read as letters, when that changes any

    @functools.cached_property
    def cjk_words(self) -> frozenset[str]:
        """jieba's words of every form: only asked for when a CJK term was found."""
        return frozenset(w for form in self.forms for w in _jieba_words(form))


@functools.lru_cache(maxsize=8192)
def prepare(text: str, tag: bool = False) -> Prepared:
    """Cached: every rule of a verdict reads the same caption, and tags repeat. ``tag``:
    the whole text is a hashtag body (the hashtag field); otherwise its inline ``#tags``
    are."""
    shown = visual(text)
    views = (text,) if shown == text else (text, shown)
    forms = [fold(v) for v in views]
    unenclosed: list[str] = []
    if may_hold_enclosed(text):
        if has_regional(text):
            forms += [regional_letters(f) for f in forms]
        # CJK terms are also looked for with enclosed letters and digits left out, as
        # emoji: 赌🅰博 and 赌①博 are 赌博 (fold reads them as letters: 赌a博, 赌1博)
        unenclosed = [fold(without_enclosed(v)) for v in views]
    if tag:
        raw: Iterable[str] = (text.strip().lstrip("#＃"),)
    elif "#" in text or "＃" in text:
        raw = dict.fromkeys(b for v in views for b in _HASHTAG.findall(v))
    else:
        raw = ()
    bodies = [b for r in raw for b in _bodies(r)]
    exact = _spelling(forms, bodies)
    leet_forms = [s for form in exact.forms for s in deleet(form)]
    # a body is part of a form: no leetspeak in the forms, none in the bodies
    leet_bodies = [s for body in bodies for s in deleet(body)] if leet_forms else []
    leet_spelled = [s for word in exact.spelled for s in deleet(word)]
    leet = (
        _spelling(leet_forms, leet_bodies, leet_spelled)
        if leet_forms or leet_bodies or leet_spelled
        else None
    )
    flat = "\n".join(dict.fromkeys(_NOT_WORD.sub("", f) for f in [*exact.forms, *unenclosed]))
    return Prepared(exact.forms, flat, exact, leet)


@functools.lru_cache(maxsize=8192)
def keys(text: str, leet: bool = False) -> frozenset[str]:
    """A hashtag's or a category's folded spellings without separators or emoji
    ("约 炮🔥" is "约炮"); empty when nothing but them. ``leet``: also with leetspeak
    read as letters ("#s3x" is "sex"), for the hashtags of a video, not configured ones."""
    p = prepare(text, tag=True)  # the cache entry the term rules made for this hashtag
    flat = p.flat.split("\n")
    if leet and p.leet is not None:
        flat += [_NOT_WORD.sub("", f) for f in p.leet.forms]
    return frozenset(f for f in flat if f)


def _phrase(term: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + r"\W+".join(map(re.escape, term.split())) + r"(?!\w)")


@dataclass(frozen=True)
class _Index:
    words: dict[str, str]  # folded Latin term -> as configured
    phrases: list[tuple[re.Pattern[str], str]]  # multi-word Latin terms ("free money")
    spelled: dict[str, str]  # Latin term without separators -> as configured
    glued: dict[str, str]  # the same, GLUED_MIN letters or more: found inside hashtags
    cjk: dict[str, tuple[str, str]]  # without separators -> (folded, as configured)


class TermMatcher:
    """Finds which of a list of terms a text contains (see the module docstring).

    Terms are folded on first use, not at construction: a rule whose folding cannot
    run (OpenCC or pypinyin missing) fails when it evaluates a video, which fails
    closed, instead of stopping the server from starting. ``pinyin``: CJK terms also
    match in pinyin and with homophones."""

    def __init__(self, terms: Iterable[str], pinyin: bool = False) -> None:
        self.terms = tuple(dict.fromkeys(t for t in terms if t.strip()))
        self.pinyin = pinyin

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
            glued={k: c for t, c in latin.items() if len(k := _NOT_WORD.sub("", t)) >= GLUED_MIN},
            cjk={
                k: (t, c) for t, c in folded.items() if has_cjk(t) and (k := _NOT_WORD.sub("", t))
            },
        )

    @functools.cached_property
    def _sounds(self) -> PinyinTerms:
        return PinyinTerms({key: term for key, (_, term) in self._index.cjk.items()}, words=segment)

    def matches(self, *texts: str, hashtags: Iterable[str] = ()) -> dict[str, str]:
        """Configured term -> how it matched (``word``, ``phrase``, ``spelled``,
        ``camelcase``, ``glued``, ``leet``, ``substring``, ``pinyin`` or ``homophone``),
        over all the texts and the hashtag field's hashtags (each matched on its own)."""
        found: dict[str, str] = {}
        if not self.terms:
            return found
        index = self._index
        prepared = [prepare(t) for t in texts if t]
        prepared += [prepare(t, tag=True) for t in hashtags if t]
        for p in prepared:
            if index.words:
                self._latin(p.exact, found, leet=False)
            # every term on its own: overlapping terms ("网赌", "赌博" in "网赌博") all count
            for key, (norm, term) in index.cjk.items():
                if key in p.flat:
                    found.setdefault(term, "word" if norm in p.cjk_words else "substring")
        if index.words:
            for p in prepared:  # leetspeak only for what did not match as written
                if p.leet is not None:
                    self._latin(p.leet, found, leet=True)
        if self.pinyin and index.cjk:  # the loosest ways last: the others say more
            for p in prepared:
                s = p.exact
                for term in self._sounds.in_latin((*s.forms, *s.tag_lines, *s.spelled)):
                    found.setdefault(term, "pinyin")
                for term in self._sounds.in_chinese(p.flat):
                    found.setdefault(term, "homophone")
        return dict(sorted(found.items()))

    def _latin(self, s: Spelling, found: dict[str, str], leet: bool) -> None:
        """Latin terms in one reading of a text; the first way found wins (setdefault)."""
        index = self._index
        if s.words:
            how = "leet" if leet else "word"
            self._words(s.words, s.forms, found, how, "leet" if leet else "phrase")
        if s.spelled:
            how = "leet" if leet else "spelled"
            for key in s.spelled & index.spelled.keys():
                found.setdefault(index.spelled[key], how)
        if s.tag_glued:
            how = "leet" if leet else "camelcase"
            self._words(s.tag_words, s.tag_lines, found, how, how)
            how = "leet" if leet else "glued"
            for key, term in index.glued.items():
                if any(key in body for body in s.tag_glued):
                    found.setdefault(term, how)

    def _words(
        self,
        words: AbstractSet[str],
        lines: Iterable[str],
        found: dict[str, str],
        how_word: str,
        how_phrase: str,
    ) -> None:
        """Terms among ``words``, and phrases in any of ``lines``: the same matching for a
        text's own words and for the words a glued hashtag splits into."""
        index = self._index
        for word in words & index.words.keys():
            found.setdefault(index.words[word], how_word)
        for rx, term in index.phrases:
            if any(rx.search(line) for line in lines):
                found.setdefault(term, how_phrase)

    def find(self, *texts: str, hashtags: Iterable[str] = ()) -> list[str]:
        """Configured spellings of the terms found, sorted (deterministic)."""
        return list(self.matches(*texts, hashtags=hashtags))
