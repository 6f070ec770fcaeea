"""Text as moderation matches it: one spelling for every way of writing what is seen.

An uploader who wants a banned term through writes it so that it *looks* the same to a
viewer but is different to a computer. :func:`fold` undoes each of those tricks before
terms are looked up, in this order (only for matching: stored and displayed text is
never changed):

1. **NFKC**: full-width, circled and mathematical letters and other compatibility
   forms fold to their plain letters (``ＣＡＳＩＮＯ``, ``𝐜𝐚𝐬𝐢𝐧𝐨`` -> ``casino``).
2. **Invisible characters removed**: every Unicode *default-ignorable* code point
   (zero-width characters, soft hyphen, BOM, variation selectors, the Hangul fillers
   U+115F, U+1160, U+3164, U+FFA0, tag characters, ...) and every format (``Cf``)
   character, bidi controls included.
3. **Combining marks dropped**: NFD, nonspacing and enclosing marks removed, NFC again
   (``c\u0301asino`` -> ``casino``; Hangul syllables recompose).
4. **Confusables to Latin**: letters of other scripts that look Latin take the Latin
   letters of their Unicode TR39 skeleton (Cyrillic ``саsino``, Greek ``cΑsino`` ->
   ``casino``; :mod:`fyp.moderation.confusables`).
5. **Case folding**.
6. **Traditional to simplified Chinese** with OpenCC's ``t2s`` conversion
   (``網上賭博`` -> ``网上赌博``). OpenCC is part of the ``moderation`` extra; without
   it folding raises, so every rule that matches text fails and content stays
   ineligible (fails closed) instead of letting traditional spellings through.

Bidi controls are removed in step 2, but they also change what is *displayed*: text
inside RLO…PDF (or an RLE embedding, or an RLI…PDI isolate) is shown right to left, so
``\u202eonisac\u202c`` reads "casino". :func:`visual` gives that display order; the
matcher looks at both orders.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from typing import Any

from fyp.moderation.confusables import LATIN_SKELETON

NORMALISATION = "3"  # bump when fold() or visual() change what they return

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt). Python's unicodedata
# has no such property; the format (Cf) characters are added from its categories.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# every Cf, Mn and Me character is in planes 0, 1 and 14; scanning them takes ~15 ms
_SCANNED = (range(0x0000, 0x20000), range(0xE0000, 0xE1000))

_RTL_OPEN = frozenset("\u202b\u202e\u2067")  # RLE, RLO, RLI
_LTR_OPEN = frozenset("\u202a\u202d\u2066\u2068")  # LRE, LRO, LRI, FSI
_ISOLATES = frozenset("\u2066\u2067\u2068")
_PDF, _PDI = "\u202c", "\u2069"
_PARAGRAPH = frozenset("\n\r\u2029")
# kana, CJK ideographs (and compatibility ideographs), Hangul syllables
CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK = re.compile(f"[{CJK_RANGES}]")


def _char_class(codes: list[int]) -> str:
    """A regex character class for a sorted list of code points, as ranges."""
    parts: list[str] = []
    start = prev = codes[0]
    for code in [*codes[1:], -1]:
        if code == prev + 1:
            prev = code
            continue
        parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
        start = prev = code
    return "[" + "".join(parts) + "]"


def _classes() -> tuple[re.Pattern[str], re.Pattern[str]]:
    ignorable = {c for low, high in _DEFAULT_IGNORABLE for c in range(low, high + 1)}
    marks: set[int] = set()
    for block in _SCANNED:
        for code in block:
            category = unicodedata.category(chr(code))
            if category == "Cf":
                ignorable.add(code)
            elif category in ("Mn", "Me"):
                marks.add(code)
    return re.compile(_char_class(sorted(ignorable)) + "+"), re.compile(
        _char_class(sorted(marks)) + "+"
    )


_IGNORABLE, _MARKS = _classes()
_SKELETON = str.maketrans(LATIN_SKELETON)


def is_ignorable(char: str) -> bool:
    """Whether fold() removes this character (default-ignorable or format)."""
    return _IGNORABLE.fullmatch(char) is not None


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def fold(text: str) -> str:
    """The text in the one spelling terms are matched in (see the module docstring)."""
    if text.isascii():
        return text.lower()
    text = _IGNORABLE.sub("", unicodedata.normalize("NFKC", text))
    decomposed = unicodedata.normalize("NFD", text)
    if _MARKS.search(decomposed):
        text = unicodedata.normalize("NFC", _MARKS.sub("", decomposed))
    text = text.translate(_SKELETON).casefold()
    return to_simplified(text) if has_cjk(text) else text


def visual(text: str) -> str:
    """The text in display order where bidi controls force right to left: every RLE or
    RLO … PDF and RLI … PDI run (an unclosed one: to the end of its line) reversed,
    nested runs included. Text without right-to-left controls comes back unchanged."""
    if not any(c in _RTL_OPEN for c in text):
        return text
    stack: list[tuple[str, list[str]]] = [("", [])]

    def close() -> None:
        kind, chars = stack.pop()
        body = "".join(chars)
        stack[-1][1].append(body[::-1] if kind in _RTL_OPEN else body)

    for char in text:
        if char in _RTL_OPEN or char in _LTR_OPEN:
            stack.append((char, []))
        elif char == _PDF:
            if len(stack) > 1 and stack[-1][0] not in _ISOLATES:
                close()  # a PDF closes an embedding or override, never an isolate
        elif char == _PDI:
            if any(kind in _ISOLATES for kind, _ in stack[1:]):
                while stack[-1][0] not in _ISOLATES:
                    close()
                close()
        elif char in _PARAGRAPH:
            while len(stack) > 1:
                close()
            stack[-1][1].append(char)
        else:
            stack[-1][1].append(char)
    while len(stack) > 1:
        close()
    return "".join(stack[0][1])


_lock = threading.Lock()
_converter: Any = None


def to_simplified(text: str) -> str:
    """Traditional Chinese to simplified (OpenCC ``t2s``); raises if OpenCC is missing."""
    global _converter
    if _converter is None:
        with _lock:
            if _converter is None:
                try:
                    import opencc
                except ImportError as exc:
                    raise RuntimeError(
                        "opencc is not installed (pip install 'fyp[moderation]'): "
                        "traditional Chinese cannot be matched"
                    ) from exc
                _converter = opencc.OpenCC("t2s.json")
    out: str = _converter.convert(text)
    return out


@functools.cache
def opencc_version() -> str:
    """The installed OpenCC's version ("missing" without it): its dictionaries decide
    what traditional text folds to, so it is part of the rules' versions."""
    from importlib import metadata

    try:
        return metadata.version("opencc")
    except metadata.PackageNotFoundError:
        return "missing"
