"""Why a video is on a feed: a stable code with parameters, rendered in the viewer's
language only when the response is built.

Candidate sources explain with a :class:`Reason` (``liked_similar`` with the liked
video's id, ``category_interest`` with the category's name, ...); reasons travel
through the pipeline and the orders stored ahead (``fyp.models.ahead``) as codes, so
one artifact serves every language. A client may localise from ``code`` and
``params`` itself, or ask for ``reason`` in its language (``?lang=`` or
``Accept-Language``). ``en`` renders exactly the texts fyp served before reasons had
codes, so existing clients see no change.

Rendering is a dict lookup on the hot path: a reason caches its text per language,
and the reasons a source can repeat (fixed phrases, a category, a liked video) are
interned, so a Traditional Chinese text is converted by OpenCC once per reason, not
per request.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fyp.errors import ValidationFailed

log = logging.getLogger("fyp.feed")

EN, ZH_HANS, ZH_HANT = "en", "zh-Hans", "zh-Hant"
LANGS = (EN, ZH_HANS, ZH_HANT)
DEFAULT_LANG = EN
OTHER = "other"


@dataclass(frozen=True)
class Code:
    """One kind of reason: its parameters, its texts, and which parameters are words
    from the data (a category's name), converted to Traditional with the template."""

    name: str
    params: tuple[str, ...]
    en: str
    zh_hans: str
    about: str  # for the API docs
    words: tuple[str, ...] = ()
    # the reviewed Traditional wording (Taiwan's and Hong Kong's: 讚 for a like, 影片,
    # 追蹤 a creator, 個人化); None: OpenCC's character conversion of ``zh_hans``
    zh_hant: str | None = None


CODES: dict[str, Code] = {
    c.name: c
    for c in (
        Code(
            "liked_similar",
            ("video_id",),
            "because you liked video {video_id}",
            "因为你赞过视频 {video_id}",
            "engaged with by the people who engaged with `video_id`, a video the user liked "
            "(co-engagement)",
            zh_hant="因為你讚過影片 {video_id}",
        ),
        Code(
            "similar_to_watched",
            (),
            "similar to what you watch",
            "与你看过的内容相似",
            "near the user's taste vector (embedding retrieval)",
            zh_hant="與你看過的內容相似",
        ),
        Code(
            "trending_region",
            (),
            "popular in your region",
            "你所在地区的热门",
            "among the most engaged-with videos of the user's home region",
            zh_hant="你所在地區的熱門",
        ),
        Code(
            "followed_creator",
            (),
            "new from a creator you follow",
            "你关注的创作者发布了新作品",
            "a recent video of a creator the user follows (the creator is not named)",
            zh_hant="你追蹤的創作者發布了新作品",
        ),
        Code(
            "new_on_fyp",
            (),
            "new on fyp",
            "新发布",
            "a recent video with few impressions yet (exploration)",
            zh_hant="新發布",
        ),
        Code(
            "category_interest",
            ("category",),
            "because you watch {category}",
            "因为你常看{category}",
            "popular in `category`, a category the user engages with (its name as the "
            "catalogue has it, e.g. `美食`)",
            words=("category",),
            zh_hant="因為你常看{category}",
        ),
        Code(
            "not_personalised",
            (),
            "popular in your region (personalisation is off)",
            "你所在地区的热门（个性化推荐已关闭）",
            "among the most engaged-with videos of the user's home region, on the feed that "
            "is not based on profiling (the user's `personalised_feed` consent is off)",
            zh_hant="你所在地區的熱門（個人化推薦已關閉）",
        ),
        Code(
            "new_not_personalised",
            (),
            "new on fyp (personalisation is off)",
            "新发布（个性化推荐已关闭）",
            "a recent video with few impressions yet (exploration), on the feed that is not "
            "based on profiling",
            zh_hant="新發布（個人化推薦已關閉）",
        ),
        Code(
            "evaluated_set",
            (),
            "in the evaluated set",
            "属于评测集",
            "an evaluation ranked a fixed set of videos",
            zh_hant="屬於評測集",
        ),
        # Untranslated, and it cannot be: an ``other`` is never one of this version's
        # reasons (each of those, and every text fyp served before codes, maps back to
        # its code: ``from_text``), but an English text it knows nothing of, as stored in
        # an artifact: a fork's wording, or the reason of a code a newer fyp added (an
        # artifact trained by it, served after a rollback). No template says what it
        # means in Chinese, so it is served as written, and ``code`` tells the client so.
        Code(
            OTHER,
            ("text",),
            "{text}",
            "{text}",
            "a reason this version has no code for (an artifact's English text it does not "
            "know: a newer fyp's or a fork's): `text` as it was stored, the same in every "
            "language, since there is no template to translate it with",
            zh_hant="{text}",
        ),
    )
}


class Reason:
    """A code and its parameters (strings). Immutable; caches its text per language."""

    __slots__ = ("_texts", "code", "params")

    def __init__(self, code: str, params: Mapping[str, str] | None = None) -> None:
        spec = CODES.get(code)
        given = dict(params or {})
        if spec is None or set(given) != set(spec.params):
            raise ValueError(f"reason {code!r} does not take parameters {sorted(given)}")
        self.code = code
        self.params = given
        self._texts: dict[str, str] = {}

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.code, tuple(sorted(self.params.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reason) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Reason({self.code!r}, {self.params!r})"

    def text(self, lang: str = EN) -> str:
        """The reason for people, in ``lang`` (one of ``LANGS``)."""
        found = self._texts.get(lang)
        if found is None:
            found = self._texts[lang] = _render(self, lang)
        return found

    def to_dict(self) -> dict[str, Any]:
        """``{"code", "params"}`` for an answer (``params`` is shared: do not change it)."""
        return {"code": self.code, "params": self.params}


def _render(reason: Reason, lang: str) -> str:
    spec = CODES[reason.code]
    if lang == EN:
        return spec.en.format_map(reason.params)
    if lang == ZH_HANS:
        return spec.zh_hans.format_map(reason.params)
    if lang == ZH_HANT:
        params = dict(reason.params)
        for name in spec.words:  # words from the data: converted character by character
            params[name] = traditional(params[name])
        template = spec.zh_hant if spec.zh_hant is not None else traditional(spec.zh_hans)
        return template.format_map(params)
    raise ValueError(f"unsupported language {lang!r}")


def fixed(code: str) -> Reason:
    """The one reason of a code without parameters."""
    return _FIXED[code]


_FIXED = {name: Reason(name) for name, spec in CODES.items() if not spec.params}


@functools.lru_cache(maxsize=1 << 16)
def liked_similar(video_id: str) -> Reason:
    """Interned: a user's co-engagement page names a few liked videos over and over."""
    return Reason("liked_similar", {"video_id": video_id})


@functools.lru_cache(maxsize=1 << 12)
def category_interest(category: str) -> Reason:
    return Reason("category_interest", {"category": category})


def other(text: str) -> Reason:
    """A text no code stands for, served as it is in every language (see ``CODES``)."""
    return Reason(OTHER, {"text": text})


_LEGACY = [
    (re.compile(r"because you liked video (.+)", re.S), liked_similar),
    (re.compile(r"because you watch (.+)", re.S), category_interest),
]


def from_text(text: str) -> Reason:
    """The reason an English text of fyp before codes stands for (orders stored in an
    artifact trained then); a text it does not know is served as it is, as ``other``.
    Run once per distinct text of an artifact when it loads, never per request."""
    for name, reason in _FIXED.items():
        if CODES[name].en == text:
            return reason
    for pattern, make in _LEGACY:
        match = pattern.fullmatch(text)
        if match is not None:
            return make(match.group(1))
    return other(text)


# -- Traditional Chinese: OpenCC (the ``moderation`` extra), converted once per text


_s2t_lock = threading.Lock()
_s2t: Any = None
_s2t_missing = False
_converted: dict[str, str] = {}


def traditional(text: str) -> str:
    """Simplified Chinese to Traditional (OpenCC ``s2tw``: the character forms Taiwan
    and Hong Kong write, 為 not 爲; for the data's words, the templates have their own
    wording), cached. Without OpenCC the text stays Simplified,
    and the operator is told once in the log."""
    found = _converted.get(text)
    if found is not None:
        return found
    converter = _converter()
    out: str = text if converter is None else converter.convert(text)
    if len(_converted) < 1 << 16:  # templates and category names: a bounded set
        _converted[text] = out
    return out


def _converter() -> Any:
    global _s2t, _s2t_missing
    if _s2t is None and not _s2t_missing:
        with _s2t_lock:
            if _s2t is None and not _s2t_missing:
                try:
                    import opencc
                except ImportError:
                    _s2t_missing = True
                    log.warning(
                        "opencc is not installed (pip install 'fyp[moderation]'): "
                        "category names in zh-Hant feed reasons stay in Simplified Chinese"
                    )
                    return None
                _s2t = opencc.OpenCC("s2tw.json")
    return _s2t


# -- which language a request asks for


_TRADITIONAL_REGIONS = frozenset({"tw", "hk", "mo"})


@functools.lru_cache(maxsize=1024)
def match_lang(tag: str) -> str | None:
    """The supported language a BCP 47 tag falls back to (``en-GB`` -> ``en``,
    ``zh-CN`` -> ``zh-Hans``, ``zh-TW`` -> ``zh-Hant``; case-insensitive), or None."""
    parts = tag.strip().lower().replace("_", "-").split("-")
    if parts[0] == "en":
        return EN
    if parts[0] != "zh":
        return None
    rest = parts[1:]
    if "hant" in rest:
        return ZH_HANT
    if "hans" in rest:
        return ZH_HANS
    return ZH_HANT if _TRADITIONAL_REGIONS.intersection(rest) else ZH_HANS


@functools.lru_cache(maxsize=1024)
def accepted_lang(header: str) -> str:
    """The language an ``Accept-Language`` header prefers most among those supported
    (q-values; ties in the header's order); ``en`` when none is, or the header is
    malformed: a header is not the client's error."""
    ranked: list[tuple[float, int, str]] = []
    for at, entry in enumerate(header.split(",")):
        tag, _, rest = entry.partition(";")
        q = 1.0
        for param in rest.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if not 0.0 <= q <= 1.0:  # NaN included
            q = 0.0
        tag = tag.strip()
        if tag and q > 0:
            ranked.append((-q, at, tag))
    for _, _, tag in sorted(ranked):
        found = DEFAULT_LANG if tag == "*" else match_lang(tag)
        if found is not None:
            return found
    return DEFAULT_LANG


def request_lang(lang: str | None, accept: str | None, field: str = "query.lang") -> str:
    """``lang`` if given (422 naming ``field`` and the supported languages when none
    matches), else what ``accept`` prefers, else ``en``."""
    return asked_lang(lang, accept, field) or DEFAULT_LANG


def asked_lang(lang: str | None, accept: str | None, field: str = "query.lang") -> str | None:
    """As ``request_lang``, but None when the request says nothing (neither ``lang`` nor
    a non-blank ``accept``): the feed then answers in the user's profile language
    (``FeedPage.language``)."""
    if lang is not None:
        found = match_lang(lang)
        if found is None:
            problem = f"unsupported language {lang[:50]!r}; supported: {', '.join(LANGS)}"
            raise ValidationFailed(
                f"invalid request: {field}: {problem}",
                problems=[{"field": field, "problem": problem}],
                supported=list(LANGS),
            )
        return found
    return None if accept is None or not accept.strip() else accepted_lang(accept)
