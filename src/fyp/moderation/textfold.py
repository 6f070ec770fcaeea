"""Text as moderation matches it: one spelling for every way of writing what is seen.

An uploader who wants a banned term through writes it so that it *looks* the same to a
viewer but is different to a computer. :func:`fold` undoes each of those tricks before
terms are looked up, in this order (only for matching: stored and displayed text is
never changed):

1. **Enclosed letters and digits** that NFKC leaves alone or turns into several
   characters become the plain letter or digit: negative circled and squared letters
   (``🅒🅐🅢🅘🅝🅞``, ``🅲🅰🆂🅸🅽🅾``), parenthesised ones (``⒞⒜⒮⒤⒩⒪``, which NFKC makes
   ``(c)(a)...``), double and dingbat circled digits (``❹``). The table is derived from
   the Unicode names ("NEGATIVE CIRCLED LATIN CAPITAL LETTER C") when the module loads.
2. **NFKC**: full-width, circled, mathematical, superscript and other compatibility
   forms fold to their plain letters (``ＣＡＳＩＮＯ``, ``𝐜𝐚𝐬𝐢𝐧𝐨``, ``ᶜᵃˢⁱⁿᵒ`` ->
   ``casino``).
3. **Invisible characters removed**: every Unicode *default-ignorable* code point
   (zero-width characters, soft hyphen, BOM, variation selectors, the Hangul fillers
   U+115F, U+1160, U+3164, U+FFA0, tag characters, ...) and every format (``Cf``)
   character, bidi controls included.
4. **Combining marks dropped**: NFD, nonspacing and enclosing marks removed, NFC again
   (``c\u0301asino`` -> ``casino``; Hangul syllables recompose).
5. **Look-alikes to Latin**: letters of other scripts that look Latin take the Latin
   letters of their Unicode TR39 skeleton (Cyrillic ``саsino``, Greek ``cΑsino``,
   Cherokee ``ᏟᎪᏚᏆᏁᎾ`` -> ``casino``), and Latin small capitals their letter
   (``ᴄᴀꜱɪɴᴏ``; :mod:`fyp.moderation.confusables`). NFKC does not touch either: they
   are letters in their own right, not compatibility forms.
6. **Case folding**.
7. **Traditional to simplified Chinese** with OpenCC's ``t2s`` conversion
   (``網上賭博`` -> ``网上赌博``). OpenCC is part of the ``moderation`` extra; without
   it folding raises, so every rule that matches text fails and content stays
   ineligible (fails closed) instead of letting traditional spellings through.

Bidi controls are removed in step 3, but they also change what is *displayed*: text
inside RLO…PDF (or an RLE embedding, or an RLI…PDI isolate) is shown right to left, so
``\u202eonisac\u202c`` reads "casino". :func:`visual` gives that display order; the
matcher looks at both orders.

Two more spellings are not part of :func:`fold`, because they would break what they
touch: the matcher reads them *as well as* the folded text (:mod:`fyp.moderation.text`).
:func:`regional_letters` reads regional-indicator symbols as letters (``🇨🇦🇸🇮🇳🇴``; a
flag glued to a word, ``casino🇲🇴``, must not hide the word), and :func:`deleet` reads
digits and a few symbols as letters inside Latin words (``c4sino``, ``ca$ino``; numbers
and Chinese text are left alone).
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
import unicodedata
from typing import Any

from fyp.moderation.confusables import LATIN_SKELETON

NORMALISATION = "3"  # bump when fold(), visual(), regional_letters() or deleet() change

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

# "NEGATIVE CIRCLED LATIN CAPITAL LETTER C", "PARENTHESIZED DIGIT FOUR", "DINGBAT NEGATIVE
# CIRCLED SANS-SERIF DIGIT ONE", "TORTOISE SHELL BRACKETED LATIN CAPITAL LETTER S", ...
_ENCLOSED_NAME = re.compile(
    r"(?:[A-Z-]+ )*?(?:CIRCLED|SQUARED|PARENTHESIZED|BRACKETED)(?: [A-Z-]+)*? "
    r"(?:LATIN (?:CAPITAL|SMALL) LETTER ([A-Z])|DIGIT ([A-Z]+))"
)
_DIGITS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]
# Enclosed Alphanumerics, the Dingbats' circled digits, Enclosed Alphanumeric Supplement
_ENCLOSED_BLOCKS = (range(0x2460, 0x2500), range(0x2776, 0x2794), range(0x1F100, 0x1F200))


def _enclosed() -> dict[int, str]:
    """Enclosed letters and digits (circled, squared, parenthesised, ...), by name."""
    out: dict[int, str] = {}
    for block in _ENCLOSED_BLOCKS:
        for code in block:
            found = _ENCLOSED_NAME.fullmatch(unicodedata.name(chr(code), ""))
            if found is None:
                continue
            letter, digit = found.groups()
            if letter:
                out[code] = letter.lower()
            elif digit in _DIGITS:
                out[code] = str(_DIGITS.index(digit))
            # else a number: PARENTHESIZED NUMBER TEN is several digits
    return out


_ALL_ENCLOSED = _enclosed()
# those NFKC leaves alone (negative circled) or turns into several characters ((a))
_ENCLOSED = {
    code: plain
    for code, plain in _ALL_ENCLOSED.items()
    if unicodedata.normalize("NFKC", chr(code)).casefold() != plain
}
_SHAPES = {**_ENCLOSED, **_SKELETON}
_NO_ENCLOSED = dict.fromkeys(_ALL_ENCLOSED)  # str.translate deletes them
_ENCLOSED_OR_REGIONAL = re.compile(
    "[" + "".join(f"{chr(b.start)}-{chr(b.stop - 1)}" for b in _ENCLOSED_BLOCKS) + "]"
)
# REGIONAL INDICATOR SYMBOL LETTER A..Z: flags are pairs of them
_REGIONAL = {0x1F1E6 + k: chr(ord("a") + k) for k in range(26)}
_HAS_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]")

# Leetspeak: digits and symbols written for letters inside a Latin word. 1 reads as i or l.
_LEET = str.maketrans(
    {
        "0": "o",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
        "!": "i",
    }
)
_ONES = 3  # up to this many 1s in a text, every mix of i and l is read; past it, all i or all l
_LEET_TOKEN = re.compile(r"[0-9A-Za-z@$!]+")
_MIXED = re.compile(r"[A-Za-z][0-9@$!]|[0-9@$!][A-Za-z]")  # a token with both, somewhere


def is_ignorable(char: str) -> bool:
    """Whether fold() removes this character (default-ignorable or format)."""
    return _IGNORABLE.fullmatch(char) is not None


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def fold_keep_case(text: str) -> str:
    """Steps 1 to 5 of :func:`fold` (no case folding, no t2s): hashtags are cut into
    words at their CamelCase humps. Look-alike letters come out lower-case."""
    if text.isascii():
        return text
    # the look-alike table's letters are unchanged by NFKC and have no marks, so they are
    # read in the same pass as the enclosed forms; again only if NFKC or dropping marks
    # made new ones (ᶦ is ɪ)
    text = text.translate(_SHAPES)
    normal = unicodedata.normalize("NFKC", text)
    again = normal != text
    text = _IGNORABLE.sub("", normal)
    decomposed = unicodedata.normalize("NFD", text)
    if _MARKS.search(decomposed):
        text = unicodedata.normalize("NFC", _MARKS.sub("", decomposed))
        again = True
    return text.translate(_SKELETON) if again else text


def fold(text: str) -> str:
    """The text in the one spelling terms are matched in (see the module docstring)."""
    if text.isascii():
        return text.lower()
    kept = fold_keep_case(text)
    text = kept.casefold()
    if text != kept:
        # again: a capital the table does not list can fold to a small letter it does
        # (Cyrillic Г is г, which TR39 reads as r); so fold(fold(x)) == fold(x)
        text = text.translate(_SKELETON)
    return to_simplified(text) if has_cjk(text) else text


def has_regional(text: str) -> bool:
    return _HAS_REGIONAL.search(text) is not None


def may_hold_enclosed(text: str) -> bool:
    """Whether the text may hold enclosed letters or digits or regional indicators (one
    search over their blocks): the rare texts that get the readings below."""
    return _ENCLOSED_OR_REGIONAL.search(text) is not None


def without_enclosed(text: str) -> str:
    """The text without enclosed letters and digits: read as emoji, not letters, where
    they sit between the characters of a Chinese term (赌🅰博, 赌①博)."""
    return text.translate(_NO_ENCLOSED)


def regional_letters(text: str) -> str:
    """Regional-indicator symbols as the (lower-case) letters they show: ``🇨🇦🇸🇮🇳🇴``
    is ``casino``. Not part of fold(): a flag beside a word would glue onto it."""
    return text.translate(_REGIONAL)


def _leet_token(token: str) -> str | None:
    """A token with its digits and symbols read as letters (1 left as is), or None when
    it is not a word written in leetspeak."""
    core = token.lstrip("@!").rstrip("!")  # a leading @ is a mention, ! punctuation
    letters = [c for c in core if c.isalpha()]
    digits = sum(c.isdigit() for c in core)
    if not letters or len(letters) == len(core) or (digits >= 4 and digits > 2 * len(letters)):
        return None  # a number, a word as written, or an id (O40300047)
    spelled = core.translate(_LEET)
    if all(c.isupper() for c in letters):
        spelled = spelled.upper()  # K1LL is KILL, not KiLL (one word, not two humps)
    start = token.index(core)
    return token[:start] + spelled + token[start + len(core) :]


def deleet(text: str) -> tuple[str, ...]:
    """The text with leetspeak read as letters (``c4sino``, ``ca$ino``, ``k1ll``); 1 is
    i or l, so there can be several readings; () when there is nothing to read.

    Only tokens of ASCII letters, digits and ``@$!`` that hold a letter *and* a digit or
    symbol change: ``2024``, ``$5`` and the digits beside Chinese text stay as they are,
    as do ids, with four digits or more and more than twice as many digits as letters
    (``O40300047``), a leading ``@`` (a mention) and ``!`` around a word."""
    if not _MIXED.search(text):
        return ()
    parts: list[str] = []  # text between tokens, then a token read (1 still 1), ...
    last = 0
    for match in _LEET_TOKEN.finditer(text):
        read = _leet_token(match.group())
        if read is not None:
            parts += [text[last : match.start()], read]
            last = match.end()
    if not parts:
        return ()
    parts.append(text[last:])
    ones = sum(parts[k].count("1") for k in range(1, len(parts), 2))
    mixes = (
        itertools.product("il", repeat=ones) if ones <= _ONES else (("i",) * ones, ("l",) * ones)
    )
    out: dict[str, None] = {}
    for mix in mixes:
        letters = iter(mix)
        spelled = list(parts)
        for k in range(1, len(parts), 2):
            upper = parts[k].isupper()
            spelled[k] = "".join(
                (next(letters).upper() if upper else next(letters)) if c == "1" else c
                for c in parts[k]
            )
        out.setdefault("".join(spelled), None)
    return tuple(out)


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
    for _ in range(2):  # t2s chains a few variants (薴 -> 苧 -> 苎): to the end of the chain
        if out == text:
            break
        text, out = out, _converter.convert(out)
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
