"""A region's moderation policy, read from ``[regions.NAME.policy]`` in ``fyp.toml``.

::

    [regions.eu.policy]
    banned_terms = ["赌博", "casino"]        # caption or cover text -> rejected
    banned_hashtags = ["约炮"]               # hashtag -> rejected
    review_terms = ["整容"]                  # -> a human decides
    mature_terms = ["性感"]                  # raises the maturity level to "mature"
    ineligible_categories = ["营销售卖"]      # -> restricted (never in For You here)
    blocked_categories = ["博彩"]            # -> blocked in this region
    min_creator_age = 16                     # For You needs a creator certainly this old
    creator_age_unknown = "deny"             # creator account without a birth year
    unknown_creator = "imported"             # no creator id: "deny", "allow", "imported"
    max_hashtags = 10                        # more is hashtag stuffing (spam)
    duplicate_threshold = 0.5                # caption MinHash Jaccard for a re-upload
    classifier_threshold = 0.8               # any classifier score >= -> human review
    auto_approve = true                      # clean videos approved without a human
    match_pinyin = false                     # true, or some of the four text lists:
                                             # CJK terms also in pinyin and homophones

    [regions.eu.policy.maturity]             # maturity level -> action
    general = "approve"
    mature = "age_restrict"
    explicit = "reject"

A misspelt key would silently disable a rule, so unknown keys are a ConfigError.

``match_pinyin`` is off by default: pinyin and homophones over-match (a pinyin syllable
pair can be a name, a homophone an ordinary word; docs/moderation.md, "Measurements"),
so a region opts in. ``true`` turns it on for every list matched in text (banned, review
and mature terms, banned hashtags); a list of those names for only some, because a
false positive costs differently per list: a review term sends the video to a person,
a banned term or hashtag rejects it with nobody looking, so an operator may want the
sound-alikes only where a human decides.
Other capabilities share the policy table: they keep their settings in a sub-table of
their own (``[regions.eu.policy.retention]``), which moderation leaves alone.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from fyp.audit.log import canonical_json
from fyp.errors import ConfigError

MATURITY_LEVELS = ("general", "mature", "explicit")
POLICY_ACTIONS = ("approve", "age_restrict", "restrict", "review", "block", "reject")
DEFAULT_MATURITY = {"general": "approve", "mature": "age_restrict", "explicit": "reject"}
FOR_YOU_MIN_CREATOR_AGE = 16
_CHOICES = {
    "creator_age_unknown": ("deny", "allow"),
    "unknown_creator": ("deny", "allow", "imported"),
}
_TERM_LISTS = (
    "banned_terms",
    "banned_hashtags",
    "review_terms",
    "mature_terms",
    "ineligible_categories",
    "blocked_categories",
)
PINYIN_LISTS = _TERM_LISTS[:4]  # the lists matched in the text an uploader writes


@dataclass(frozen=True)
class RegionPolicy:
    region: str
    banned_terms: tuple[str, ...] = ()
    banned_hashtags: tuple[str, ...] = ()
    review_terms: tuple[str, ...] = ()
    mature_terms: tuple[str, ...] = ()
    ineligible_categories: tuple[str, ...] = ()
    blocked_categories: tuple[str, ...] = ()
    min_creator_age: int = FOR_YOU_MIN_CREATOR_AGE
    creator_age_unknown: str = "deny"
    unknown_creator: str = "imported"
    max_hashtags: int = 10
    duplicate_threshold: float = 0.5
    classifier_threshold: float = 0.8
    auto_approve: bool = True
    maturity: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MATURITY))
    match_pinyin: tuple[str, ...] = ()  # the lists (of PINYIN_LISTS) matched by sound too

    def to_dict(self) -> dict[str, Any]:
        """The effective policy; ``match_pinyin`` only when on, so that the digest of a
        policy that does not use it is what it was before the key existed (no upgrade
        re-judges a catalogue for nothing)."""
        out = asdict(self)
        out.pop("region")
        if not out["match_pinyin"]:
            out.pop("match_pinyin")
        return out

    def digest(self) -> str:
        """Short hash of the effective policy: part of every verdict's versions."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()[:16]


KNOWN_KEYS = tuple(f for f in RegionPolicy.__dataclass_fields__ if f != "region")
CAPABILITY_TABLES = ("consent", "moves", "reports", "retention")
"""Sub-tables of a region's policy that other capabilities own (``fyp.regions.consent``,
``fyp.sovereignty.move_policy``, ``fyp.moderation.reports``, ``fyp.sovereignty.retention``):
any other sub-table is a misspelling (``[regions.eu.policy.retension]`` would silently
set no limit)."""


def _where(region: str, key: str | None = None) -> str:
    return f"[regions.{region}.policy]" + (f" {key}" if key else "")


def _strings(region: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f"{_where(region, key)} must be a list of non-empty strings, got {value!r}",
            region=region,
            key=key,
        )
    return tuple(dict.fromkeys(v.strip() for v in value))


def _number(region: str, key: str, value: Any, low: float, high: float, kind: type) -> Any:
    ok = type(value) is kind or (kind is float and type(value) is int)
    if not ok or not low <= value <= high:
        raise ConfigError(
            f"{_where(region, key)} must be {'an integer' if kind is int else 'a number'} "
            f"between {low} and {high}, got {value!r}",
            region=region,
            key=key,
        )
    return kind(value)


def _maturity(region: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(region, 'maturity')} must be a table", region=region)
    unknown = sorted(set(value) - set(MATURITY_LEVELS))
    if unknown:
        raise ConfigError(
            f"unknown maturity levels {unknown} in [regions.{region}.policy.maturity]; "
            f"the levels are {list(MATURITY_LEVELS)}",
            region=region,
        )
    out = dict(DEFAULT_MATURITY)
    for level, action in value.items():
        if action not in POLICY_ACTIONS:
            raise ConfigError(
                f"[regions.{region}.policy.maturity] {level} = {action!r}: "
                f"the action must be one of {list(POLICY_ACTIONS)}",
                region=region,
            )
        out[level] = action
    return out


def _pinyin_lists(region: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, bool):
        return PINYIN_LISTS if value else ()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        unknown = sorted(set(value) - set(PINYIN_LISTS))
        if not unknown:
            return tuple(k for k in PINYIN_LISTS if k in value)
    raise ConfigError(
        f"{_where(region, 'match_pinyin')} must be true, false or a list of some of "
        f"{list(PINYIN_LISTS)}, got {value!r}",
        region=region,
        key="match_pinyin",
    )


def _check_keys(region: str, raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        if key in KNOWN_KEYS or (key in CAPABILITY_TABLES and isinstance(value, dict)):
            continue  # a capability's sub-table checks its own keys
        known = KNOWN_KEYS + CAPABILITY_TABLES if isinstance(value, dict) else KNOWN_KEYS
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown moderation policy key {key!r} in {_where(region)}{hint} "
            f"Known keys: {', '.join(KNOWN_KEYS)}; sub-tables of other capabilities: "
            f"{', '.join(f'[regions.{region}.policy.{t}]' for t in CAPABILITY_TABLES)}.",
            region=region,
            key=key,
        )


def parse_policy(region: str, raw: dict[str, Any] | None) -> RegionPolicy:
    """Validate a region's policy table; any unknown or ill-typed key is a ConfigError."""
    raw = dict(raw or {})
    _check_keys(region, raw)
    values: dict[str, Any] = {}
    for key in _TERM_LISTS:
        if key in raw:
            values[key] = _strings(region, key, raw[key])
    if "min_creator_age" in raw:
        values["min_creator_age"] = _number(
            region, "min_creator_age", raw["min_creator_age"], FOR_YOU_MIN_CREATOR_AGE, 120, int
        )
    if "max_hashtags" in raw:
        values["max_hashtags"] = _number(region, "max_hashtags", raw["max_hashtags"], 1, 1000, int)
    for key in ("duplicate_threshold", "classifier_threshold"):
        if key in raw:
            values[key] = _number(region, key, raw[key], 0.05, 1.0, float)
    for key, choices in _CHOICES.items():
        if key in raw:
            if raw[key] not in choices:
                raise ConfigError(
                    f"{_where(region, key)} must be one of {list(choices)}, got {raw[key]!r}",
                    region=region,
                    key=key,
                )
            values[key] = raw[key]
    if "auto_approve" in raw:
        if not isinstance(raw["auto_approve"], bool):
            raise ConfigError(f"{_where(region, 'auto_approve')} must be true or false")
        values["auto_approve"] = raw["auto_approve"]
    if "maturity" in raw:
        values["maturity"] = _maturity(region, raw["maturity"])
    if "match_pinyin" in raw:
        values["match_pinyin"] = _pinyin_lists(region, raw["match_pinyin"])
    return RegionPolicy(region=region, **values)
