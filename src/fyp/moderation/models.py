"""The values moderation passes around: states, actions, inputs and verdicts.

A verdict is a pure function of a :class:`ModerationInput` and the versions of the
rules and classifier that judged it, so every input is a frozen, JSON-round-trippable
value: the audit log keeps it, and replaying it under the same versions must give the
same verdict.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fyp.audit.log import canonical_json


class State(StrEnum):
    """A video's moderation state in one region."""

    pending = "pending"  # no verdict yet (new, edited, awaiting a human, or a rule failed)
    approved = "approved"
    rejected = "rejected"
    restricted = "restricted"  # viewable by link and followers, never in For You
    age_restricted = "age_restricted"  # For You for viewers certainly 18 or older only
    blocked = "blocked"  # not shown in this region at all


VERDICTS = (State.approved, State.rejected, State.restricted, State.age_restricted, State.blocked)
APPEALABLE = frozenset({State.rejected, State.restricted, State.age_restricted, State.blocked})
FOR_YOU_STATES = frozenset({State.approved, State.age_restricted})
HUMAN_SOURCES = ("review", "appeal", "takedown", "restore")
"""Verdict sources of a person's decision ("restore": one re-applied after a restore)."""


class Action(StrEnum):
    """What a rule asks for. Content actions combine by severity; ``creator_hold`` and
    ``note`` do not touch the state."""

    note = "note"  # recorded and counted, no effect
    age_restrict = "age_restrict"
    restrict = "restrict"
    review = "review"  # a human decides; the video stays pending
    block = "block"
    reject = "reject"
    creator_hold = "creator_hold"  # the creator may not appear in For You


SEVERITY: dict[Action, int] = {
    Action.note: 0,
    Action.age_restrict: 1,
    Action.restrict: 2,
    Action.review: 3,
    Action.block: 4,
    Action.reject: 5,
}
ACTION_STATE: dict[Action, State] = {
    Action.age_restrict: State.age_restricted,
    Action.restrict: State.restricted,
    Action.review: State.pending,
    Action.block: State.blocked,
    Action.reject: State.rejected,
}


@dataclass(frozen=True)
class Match:
    """Another video of the region this one duplicates (caption or media)."""

    video_id: str
    kind: str  # "caption" (MinHash near-duplicate) or "media" (same media_sha256)
    similarity: float
    state: str  # that video's state in this region when the match was found
    same_creator: bool


COVER_TEXT_ATTRIBUTES = ("cover_text", "manual_cover_text")
_NO_COVER = ("", "UNKNOWN")  # KuaiRec writes UNKNOWN for a video without cover text


def cover_texts(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """Every cover-text attribute that is present and not empty, as given.

    Values are kept whatever their type: a cover text that is not a string cannot be
    checked, so the text rules fail on it (closed) rather than skipping it."""
    out: dict[str, Any] = {}
    for name in COVER_TEXT_ATTRIBUTES:
        value = (attributes or {}).get(name)
        if value is None or (isinstance(value, str) and value.strip() in _NO_COVER):
            continue
        out[name] = value
    return out


@dataclass(frozen=True)
class ModerationInput:
    """Everything the rules may look at; nothing else may influence a verdict.

    ``cover_texts`` holds every cover-text attribute present (:func:`cover_texts`).
    ``creator`` is ``"user"`` (a known account), ``"missing"`` (an id that is no
    account), ``"imported"`` (no creator id; brought in by an operator import, which
    sets ``attributes.source``) or ``"none"`` (no creator id otherwise).
    ``creator_age`` is the age the creator has certainly reached, capped at 18: the
    verdict needs no more of a person's birth date than that. ``held`` describes a
    standing human verdict other than approved on this video in this region (its
    content changed since, or it was published here again): automation may not undo
    it (rule ``human_hold``)."""

    video_id: str
    region: str
    caption: str = ""
    cover_texts: dict[str, Any] = field(default_factory=dict)
    hashtags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    maturity: str | None = None
    media_sha256: str | None = None
    creator: str = "none"
    creator_age: int | None = None
    matches: tuple[Match, ...] = ()
    held: str | None = None

    def to_dict(self) -> dict[str, Any]:
        held = {} if self.held is None else {"held": self.held}  # older inputs: no key
        return {
            **held,
            "video_id": self.video_id,
            "region": self.region,
            "caption": self.caption,
            "cover_texts": dict(sorted(self.cover_texts.items())),
            "hashtags": list(self.hashtags),
            "categories": list(self.categories),
            "maturity": self.maturity,
            "media_sha256": self.media_sha256,
            "creator": self.creator,
            "creator_age": self.creator_age,
            "matches": [m.__dict__.copy() for m in self.matches],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModerationInput:
        data = dict(raw)
        legacy = data.pop("cover_text", None)  # inputs recorded with one cover text
        data.setdefault("cover_texts", {"cover_text": legacy} if legacy else {})
        data["hashtags"] = tuple(data.get("hashtags", ()))
        data["categories"] = tuple(data.get("categories", ()))
        data["matches"] = tuple(Match(**m) for m in data.get("matches", ()))
        return cls(**data)

    def texts(self, hashtags: bool = True) -> tuple[str, ...]:
        """The caption, the cover texts and (unless told not to) the hashtag field:
        every text the text rules read, each to be matched on its own. A cover text
        that is not a string raises TypeError, so the rule reading it fails closed."""
        covers: list[str] = []
        for name, value in sorted(self.cover_texts.items()):
            if not isinstance(value, str):
                raise TypeError(
                    f"cover text attribute {name!r} is {type(value).__name__}, not text: "
                    "it cannot be checked"
                )
            covers.append(value)
        return (self.caption, *covers, *(self.hashtags if hashtags else ()))

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Finding:
    rule: str
    version: str
    action: Action
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "version": self.version,
            "action": self.action.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RuleFailure:
    """A rule raised: recorded, and the video fails closed (stays pending)."""

    rule: str
    version: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "version": self.version, "error": self.error}


@dataclass(frozen=True)
class Verdict:
    state: State
    creator_ok: bool
    reason: str
    findings: tuple[Finding, ...] = ()
    failures: tuple[RuleFailure, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    input_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "creator_ok": self.creator_ok,
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
            "failures": [f.to_dict() for f in self.failures],
            "versions": dict(sorted(self.versions.items())),
            "input_hash": self.input_hash,
        }


def certain_age(birth_year: int | None, year: int) -> int | None:
    """The age someone born in ``birth_year`` has certainly reached during ``year``.

    Only the year is known: someone born in 2008 may still be 15 on 1 January 2024
    (born 31 December), so in 2024 they are certainly 15, not 16. Age gates use this,
    so they fail closed."""
    if birth_year is None:
        return None
    return max(0, year - birth_year - 1)


def certainly_at_least(age_by_year: int | None, years: int) -> bool:
    """For ``year - birth_year`` ages (what ``User.age`` and ``UserState.age`` hold)."""
    return age_by_year is not None and age_by_year - 1 >= years
