"""Chinese terms written in pinyin or with homophones (a region opts in: ``match_pinyin``).

Chinese-speaking uploaders who want a banned term through write how it *sounds*:

- **pinyin** in Latin letters, the syllables joined or apart, in any case, with tone
  marks or tone digits: ``dubo``, ``du bo``, ``Du-Bo``, ``#dubo``, ``dǔbó``,
  ``du3bo2`` for 赌博 (``pinyin``). Only as whole words: the first syllable may not
  follow a Latin letter or digit and the last may not be followed by one, so
  ``dubois`` is not ``dubo``. Between syllables up to three characters that are not
  letters or digits (the spelled-out rule's separators); a character of the term may
  stand for its syllable (``赌bo``, ``du博``), but at least one syllable is Latin (the
  Chinese spelling is the CJK substring match). Text is folded first
  (:func:`fyp.moderation.textfold.fold`), which drops tone marks and case;
- **homophones** in Chinese: a run of Han characters that reads like the term, tones
  included, e.g. 堵博 or 赌搏 for 赌博 (``homophone``). Tones count here (not in Latin
  text, where they are rarely written): on the KuaiRec captions every toneless match was
  an ordinary word, 大码 (dà mǎ, plus size) read as 大麻 (dà má). Only when at least one
  character is the term's own (:data:`ANCHORED`): on the 10,728 real KuaiRec captions, homophones
  with none of the term's characters were almost all ordinary words (docs/moderation.md,
  "Measurements"). The run is read in the same letters-only text as the CJK substring
  match, so punctuation between the characters does not hide it.

Readings come from pypinyin's dictionary (the ``moderation`` extra, loaded on first use,
about 0.4 s, no network). A character with several readings (多音字) gives each: a term
position accepts every reading pypinyin lists for its character, the reading in the
term's context first, but a term accepts at most :data:`MAX_READINGS` combinations, so a
long term of many heteronyms cannot turn into thousands of variants (past the bound the
later readings of the later characters are left out). A character of the text reads
every way pypinyin knows. ``ü`` is written ``v`` by pinyin keyboards and folds to ``u``:
both spellings match.

pypinyin's dictionary decides what matches, so its version is part of the version of
every rule that matches pinyin (:func:`version`), as OpenCC's is for folding. Without
pypinyin such a rule raises and the video stays pending (fails closed).
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fyp.moderation.textfold import CJK_RANGES

PINYIN_VERSION = "1"  # bump when what this module matches changes
MAX_READINGS = 16  # combinations of readings a term accepts (see the module docstring)
ANCHORED = True  # a homophone run must keep at least one of the term's own characters

HAN = "\u3400-\u4dbf\u4e00-\u9fff"  # ideographs pypinyin reads (fold makes compat ones these)
_HAN_CHAR = re.compile(f"[{HAN}]")
_HAN_TERM = re.compile(f"[{HAN}]{{2,}}")
_LATIN = rf"[^\W_{CJK_RANGES}]"  # a letter or digit of a Latin-like word
_SEP = r"(?:[^\w\n]|_){0,3}"  # between syllables: the spelled-out rule's separators
_SYLLABLE = re.compile("[a-z]+")
_TONED = re.compile("[a-z]+[1-5]")
_ASCII_LETTER = re.compile("[a-z]")

_lock = threading.Lock()
_module: Any = None


def _pypinyin() -> Any:
    """pypinyin, imported once; raises if it is missing (the rules fail closed)."""
    global _module
    if _module is None:
        with _lock:
            if _module is None:
                try:
                    import pypinyin
                except ImportError as exc:
                    raise RuntimeError(
                        "pypinyin is not installed (pip install 'fyp[moderation]'): "
                        "pinyin and homophones cannot be matched"
                    ) from exc
                _module = pypinyin
    return _module


@functools.cache
def version() -> str:
    """What a rule matching pinyin adds to its version: this module's and pypinyin's."""
    from importlib import metadata

    try:
        installed = metadata.version("pypinyin")
    except metadata.PackageNotFoundError:
        installed = "missing"
    return f"pinyin{PINYIN_VERSION}-pypinyin-{installed}"


@functools.lru_cache(maxsize=65536)
def readings(char: str, tones: bool = False) -> tuple[str, ...]:
    """A Han character's readings (``ü`` as ``v``), pypinyin's order, without tones or,
    with ``tones``, ending in the tone's digit (5: neutral); empty for anything else."""
    if not _HAN_CHAR.fullmatch(char):
        return ()
    py = _pypinyin()
    if tones:
        style = {"style": py.Style.TONE3, "neutral_tone_with_five": True}
    else:
        style = {"style": py.Style.NORMAL}
    found = py.pinyin(char, heteronym=True, errors="ignore", **style)
    spelled = _TONED if tones else _SYLLABLE
    out = [r for r in (found[0] if found else []) if spelled.fullmatch(r)]
    return tuple(dict.fromkeys(out))


def term_readings(term: str) -> tuple[tuple[str, ...], ...] | None:
    """Each position's accepted readings, or None unless the term is two Han characters
    or more. The reading in context (pypinyin's phrase dictionary) comes first; the others
    are added a round at a time over the positions while the combinations stay within
    :data:`MAX_READINGS`."""
    if not _HAN_TERM.fullmatch(term):
        return None
    py = _pypinyin()
    context = py.lazy_pinyin(term, style=py.Style.NORMAL, errors="ignore")
    each = [readings(c) for c in term]
    if any(not r for r in each):
        return None
    chosen: list[list[str]] = [
        [context[i] if len(context) == len(term) and context[i] in r else r[0]]
        for i, r in enumerate(each)
    ]
    for round_ in range(max(len(r) for r in each)):
        for i, options in enumerate(each):
            if round_ >= len(options) or options[round_] in chosen[i]:
                continue
            combinations = math.prod(len(c) for c in chosen)
            if combinations // len(chosen[i]) * (len(chosen[i]) + 1) <= MAX_READINGS:
                chosen[i].append(options[round_])
    return tuple(tuple(c) for c in chosen)


def _spellings(reading: str) -> tuple[str, ...]:
    """How a reading is typed: ``ü`` as ``v`` (keyboards) or ``u`` (tone marks folded)."""
    return (reading, reading.replace("v", "u")) if "v" in reading else (reading,)


def _pattern(term: str, positions: tuple[tuple[str, ...], ...]) -> re.Pattern[str]:
    """Each position: the term's own character, or one of its syllables (with an optional
    tone digit); a syllable at either end may not touch another Latin letter or digit."""
    parts: list[str] = []
    last = len(term) - 1
    for i, (char, options) in enumerate(zip(term, positions, strict=True)):
        typed = sorted({s for r in options for s in _spellings(r)}, key=lambda s: (-len(s), s))
        syllable = "(?:" + "|".join(typed) + ")[0-5]?"
        if i == 0:
            syllable = f"(?<!{_LATIN}){syllable}"
        if i == last:
            syllable = f"{syllable}(?!{_LATIN})"
        parts.append(f"(?:{re.escape(char)}|{syllable})")
    return re.compile(_SEP.join(parts))


@functools.lru_cache(maxsize=65536)
def _sounds(char: str) -> frozenset[str]:
    """Every reading of a character, tones included: what a homophone must share."""
    return frozenset(readings(char, tones=True))


@dataclass(frozen=True)
class _Term:
    key: str  # folded, letters and digits only
    configured: str
    positions: tuple[tuple[str, ...], ...]
    pattern: re.Pattern[str]

    @functools.cached_property
    def sounds(self) -> tuple[frozenset[str], ...]:
        """Each position's readings with tones (every reading of its character)."""
        return tuple(_sounds(c) for c in self.key)


class PinyinTerms:
    """The pinyin and homophone matcher of a list of CJK terms.

    ``terms`` maps each term's folded key (letters and digits only, as
    :class:`fyp.moderation.text.TermMatcher` keeps it) to the term as configured; keys
    that are not two Han characters or more are left out. ``anchored``: a homophone run
    must keep one of the term's characters (:data:`ANCHORED`). ``words``: a Chinese
    word segmenter (jieba's); a homophone run counts only where each of its characters
    is a word of its own, not part of an ordinary word (大码 in 大码女装, 病毒, 六点).
    Built on first use, so a missing pypinyin fails the rule evaluating a video (fails
    closed), not the start."""

    def __init__(
        self,
        terms: Mapping[str, str],
        anchored: bool = ANCHORED,
        words: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.terms = dict(terms)
        self.anchored = anchored
        self.words = words

    @functools.cached_property
    def _terms(self) -> tuple[_Term, ...]:
        out: list[_Term] = []
        for key, configured in self.terms.items():
            positions = term_readings(key)
            if positions is not None:
                out.append(_Term(key, configured, positions, _pattern(key, positions)))
        return tuple(out)

    @functools.cached_property
    def _holding(self) -> dict[str, tuple[tuple[_Term, int], ...]]:
        """A character -> the terms holding it, and where."""
        index: dict[str, list[tuple[_Term, int]]] = {}
        for term in self._terms:
            for j, char in enumerate(term.key):
                index.setdefault(char, []).append((term, j))
        return {char: tuple(v) for char, v in index.items()}

    def in_latin(self, lines: Iterable[str]) -> list[str]:
        """Terms written in pinyin (at least one syllable in Latin letters) in any of the
        folded lines."""
        lines = [line for line in lines if _ASCII_LETTER.search(line)]
        if not lines:
            return []
        return [
            t.configured
            for t in self._terms
            if any(_latin_match(t.pattern, line) for line in lines)
        ]

    def in_chinese(self, flat: str) -> list[str]:
        """Terms written with homophones in a letters-only folded text, a line at a time
        (see the module docstring)."""
        found: dict[str, None] = {}
        if self.anchored and self._holding.keys().isdisjoint(flat):
            return []  # none of the terms' characters: the usual case, found in one pass
        for line in flat.split("\n"):
            for _, term in self._windows(line):
                found.setdefault(term.configured, None)
        return list(found)

    def _windows(self, line: str) -> list[tuple[int, _Term]]:
        """Where a term is written with homophones in ``line``: its reading matches, then
        every character of it must be a word of its own (``words``)."""
        if self.anchored:  # only the runs around one of the term's own characters
            starts = {
                (at - j, term)
                for at, char in enumerate(line)
                for term, j in self._holding.get(char, ())
                if at >= j
            }
        else:
            starts = {(at, term) for at in range(len(line)) for term in self._terms}
        hits = sorted(
            ((at, term) for at, term in starts if _homophone(term, line, at, self.anchored)),
            key=lambda hit: (hit[0], hit[1].key),
        )
        if not hits or self.words is None:
            return hits
        alone: set[int] = set()
        at = 0
        for word in self.words(line):
            if len(word) == 1:
                alone.add(at)
            at += len(word)
        return [(s, t) for s, t in hits if alone.issuperset(range(s, s + len(t.key)))]

    def whole(self, key: str) -> tuple[str, str] | None:
        """The term a whole key (a hashtag's letters) spells in pinyin or homophones,
        and how: ``(term, "pinyin" | "homophone")``."""
        if _ASCII_LETTER.search(key):
            for term in self._terms:
                if term.pattern.fullmatch(key):
                    return term.configured, "pinyin"
        for start, term in self._windows(key):
            if start == 0 and len(key) == len(term.key):
                return term.configured, "homophone"
        return None


def _latin_match(pattern: re.Pattern[str], line: str) -> bool:
    return any(_ASCII_LETTER.search(m.group()) for m in pattern.finditer(line))


def _homophone(term: _Term, text: str, start: int, anchored: bool) -> bool:
    """Whether ``text[start:]`` begins with the term written with homophones: every
    character reads as the term's at its position, not all are the term's own (that is
    the substring match) and, when ``anchored``, at least one is."""
    window = text[start : start + len(term.key)]
    if len(window) != len(term.key):
        return False
    own = 0
    for a, b, sounds in zip(window, term.key, term.sounds, strict=True):
        if a == b:
            own += 1
        elif sounds.isdisjoint(_sounds(a)):
            return False
    return own < len(window) and (own > 0 or not anchored)
