"""Moderation rules: small named components, each a condition and an action, versioned.

Every rule is a :class:`Rule`: ``evaluate(video)`` returns a :class:`Finding` (the
action and why) or None. A rule reads only its :class:`ModerationInput` and its own
configuration, so its result is a function of the input, its ``version`` and the
policy; change what a rule does and you bump its version. A rule that raises is not
trusted to have passed: the engine records the error and the video fails closed.
"""

from __future__ import annotations

import functools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import ClassVar

from fyp.moderation import dedup
from fyp.moderation.classifier import Classifier
from fyp.moderation.models import Action, Finding, ModerationInput
from fyp.moderation.pinyin import PinyinTerms
from fyp.moderation.pinyin import version as pinyin_version
from fyp.moderation.policy import MATURITY_LEVELS, RegionPolicy
from fyp.moderation.text import (
    TermMatcher,
    all_hashtags,
    keys,
    normalise,
    raw_hashtags,
    segment,
    squeeze,
    strip_mentions,
)
from fyp.moderation.textfold import NORMALISATION, opencc_version

_POLICY_ACTION = {
    "approve": None,
    "age_restrict": Action.age_restrict,
    "restrict": Action.restrict,
    "review": Action.review,
    "block": Action.block,
    "reject": Action.reject,
}


class Rule(ABC):
    """One moderation rule. ``kind`` is "content" (decides the state) or "creator"
    (decides whether the creator may appear in For You)."""

    name: ClassVar[str] = "rule"
    version: ClassVar[str] = "0"
    kind: ClassVar[str] = "content"

    @abstractmethod
    def evaluate(self, video: ModerationInput) -> Finding | None:
        """The finding for this video, or None when the rule has nothing to say."""

    @property
    def rule_version(self) -> str:
        """The version recorded in verdicts (may include a component's version)."""
        return self.version

    def finding(self, action: Action, reason: str) -> Finding:
        return Finding(self.name, self.rule_version, action, reason)


def _quote(items: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in items)


class FoldingRule(Rule):
    """A rule that matches folded text (``fyp.moderation.textfold``): what the text
    folds to is part of its version, and so are OpenCC's dictionaries; with ``pinyin``
    (the region's ``match_pinyin``) also the pinyin matcher's and pypinyin's. Without
    it the version is what it was before pinyin matching existed: nothing changed."""

    pinyin: bool = False

    @property
    def rule_version(self) -> str:
        folded = f"{self.version}+fold{NORMALISATION}+opencc-{opencc_version()}"
        return f"{folded}+{pinyin_version()}" if self.pinyin else folded


class TermRule(FoldingRule):
    """Caption, cover texts or hashtags contain one of a list of terms -> an action."""

    action: ClassVar[Action] = Action.reject
    what: ClassVar[str] = "banned"

    def __init__(self, terms: Iterable[str], pinyin: bool = False) -> None:
        self.pinyin = pinyin
        self.matcher = TermMatcher(terms, pinyin)

    def evaluate(self, video: ModerationInput) -> Finding | None:
        found = self.matcher.matches(*video.texts(hashtags=False), hashtags=video.hashtags)
        if not found:
            return None
        listed = ", ".join(f"{term!r} ({how})" for term, how in found.items())
        return self.finding(self.action, f"contains {self.what} term(s) {listed}")


class BannedTerms(TermRule):
    name = "banned_terms"
    version = "2"


class ReviewTerms(TermRule):
    name = "review_terms"
    version = "2"
    action = Action.review
    what = "sensitive"


def _by_key(values: Iterable[str]) -> dict[str, str]:
    """Folded key (``text.keys``) -> the value as configured."""
    out: dict[str, str] = {}
    for value in values:
        for key in sorted(keys(value)):
            out.setdefault(key, value)
    return out


def _found(configured: dict[str, str], values: Iterable[str], leet: bool = False) -> list[str]:
    return sorted({configured[k] for v in values for k in keys(v, leet) if k in configured})


class BannedHashtags(FoldingRule):
    """A hashtag (field or inline ``#tag``) that folds to a banned one, ignoring
    spaces, punctuation and emoji inside it ("约 炮", "约炮🔥"), as written or with
    leetspeak read as letters ("#s3x"); with ``pinyin``, also a whole hashtag that is a
    banned CJK one in pinyin or homophones ("#yuepao", "#约泡")."""

    name = "banned_hashtags"
    version = "2"

    def __init__(self, hashtags: Iterable[str], pinyin: bool = False) -> None:
        self.hashtags = tuple(hashtags)
        self.pinyin = pinyin

    @functools.cached_property
    def banned(self) -> dict[str, str]:  # folded on first use: see TermMatcher
        return _by_key(self.hashtags)

    @functools.cached_property
    def _sounds(self) -> PinyinTerms:
        return PinyinTerms(self.banned, words=segment)

    def evaluate(self, video: ModerationInput) -> Finding | None:
        tags = raw_hashtags(video.caption, video.hashtags)
        found = _found(self.banned, tags, leet=True)
        listed = [repr(t) for t in found]
        if self.pinyin:
            sounds: dict[str, str] = {}
            for key in sorted({k for tag in tags for k in keys(tag)}):
                hit = self._sounds.whole(key)
                if hit is not None and hit[0] not in found:
                    sounds.setdefault(*hit)
            listed += [f"{term!r} ({how})" for term, how in sorted(sounds.items())]
        if not listed:
            return None
        return self.finding(Action.reject, f"uses banned hashtag(s) {', '.join(listed)}")


class Categories(FoldingRule):
    """Categories blocked in the region (blocked) or not For You eligible (restricted),
    compared folded and without spaces or punctuation ("博 彩" is "博彩")."""

    name = "categories"
    version = "2"

    def __init__(self, region: str, blocked: Iterable[str], ineligible: Iterable[str]) -> None:
        self.region = region
        self.lists = (tuple(blocked), tuple(ineligible))

    @functools.cached_property
    def _keys(self) -> tuple[dict[str, str], dict[str, str]]:
        return _by_key(self.lists[0]), _by_key(self.lists[1])

    def evaluate(self, video: ModerationInput) -> Finding | None:
        blocked_keys, ineligible_keys = self._keys
        blocked = _found(blocked_keys, video.categories)
        if blocked:
            return self.finding(
                Action.block, f"category {_quote(blocked)} is blocked in region {self.region}"
            )
        ineligible = _found(ineligible_keys, video.categories)
        if ineligible:
            return self.finding(
                Action.restrict,
                f"category {_quote(ineligible)} is not For You eligible in region {self.region}",
            )
        return None


class Maturity(FoldingRule):
    """Content maturity: the declared level (``attributes.maturity``), raised to
    "mature" by the region's mature terms; the policy maps the level to an action."""

    name = "maturity"
    version = "2"

    def __init__(
        self, mature_terms: Iterable[str], actions: Mapping[str, str], pinyin: bool = False
    ) -> None:
        self.pinyin = pinyin
        self.matcher = TermMatcher(mature_terms, pinyin)
        self.actions = dict(actions)

    def evaluate(self, video: ModerationInput) -> Finding | None:
        level = video.maturity or "general"
        if level not in MATURITY_LEVELS:
            raise ValueError(f"unknown maturity level {level!r}; expected {MATURITY_LEVELS}")
        why = f"declared {level}" if video.maturity else "general"
        found = self.matcher.find(*video.texts(hashtags=False), hashtags=video.hashtags)
        if found and MATURITY_LEVELS.index(level) < MATURITY_LEVELS.index("mature"):
            level, why = "mature", f"mature term(s) {_quote(found)}"
        action = _POLICY_ACTION[self.actions[level]]
        if action is None:
            return None
        return self.finding(action, f"maturity {level} ({why})")


_URL = re.compile(r"https?://|www\.|\b[a-z0-9-]{2,}\.(?:com|cn|net|org|top|xyz|cc|io|me)\b")
_CONTACT = re.compile(
    r"(?<![a-z0-9])(?:微信|薇信|威信|徽信|加v|加微|vx|wx|v信|qq|扣扣|企鹅|tg|telegram|whatsapp)"
    r"[\s:：号]*[a-z0-9_\-]{5,}"
)
_PHONE = re.compile(r"(?<!\d)(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d){8}(?!\d)")
_REPEAT = re.compile(r"(.)\1{14,}")  # 15 in a row: 哈哈哈… of ordinary laughter stays below
_REPEAT_SEQ = re.compile(r"(.{2,4}?)\1{7,}")  # a short phrase 8 times: 热门热门热门…


class Spam(Rule):
    """Hashtag stuffing, long runs of one character or phrase, links and contact
    details (messaging ids, phone numbers) -> restricted."""

    name = "spam"
    version = "2"

    def __init__(self, max_hashtags: int) -> None:
        self.max_hashtags = max_hashtags

    def evaluate(self, video: ModerationInput) -> Finding | None:
        signals: list[str] = []
        tags = all_hashtags(video.caption, video.hashtags)
        if len(tags) > self.max_hashtags:
            signals.append(
                f"hashtag stuffing ({len(tags)} hashtags, more than {self.max_hashtags})"
            )
        text = normalise(
            strip_mentions("\n".join(video.texts(hashtags=False)))
        )  # @name(O123) ids are not phone numbers
        if _REPEAT.search(squeeze(text)) or _REPEAT_SEQ.search(squeeze(text)):
            signals.append("a character or phrase repeated many times")
        if _URL.search(text):
            signals.append("a link")
        if _CONTACT.search(text) or _PHONE.search(text):
            signals.append("contact details")
        if not signals:
            return None
        return self.finding(Action.restrict, "; ".join(signals))


class Reupload(Rule):
    """Re-uploads: a near-duplicate caption or the same media as a removed video is
    rejected; the same media as another creator's live video goes to a human; a
    near-duplicate of live content is only noted."""

    name = "reupload"
    version = f"1+{dedup.VERSION}"

    def evaluate(self, video: ModerationInput) -> Finding | None:
        for m in video.matches:  # removed matches sort first
            if m.state in dedup.REMOVED:
                how = "same media" if m.kind == "media" else f"caption {m.similarity:.2f} similar"
                return self.finding(
                    Action.reject, f"re-upload of {m.state} video {m.video_id!r} ({how})"
                )
        for m in video.matches:
            if m.kind == "media" and not m.same_creator:
                return self.finding(
                    Action.review, f"same media as video {m.video_id!r} of another creator"
                )
        if video.matches:
            m = video.matches[0]
            return self.finding(
                Action.note, f"near-duplicate of {m.video_id!r} ({m.kind} {m.similarity:.2f})"
            )
        return None


class ClassifierRule(FoldingRule):
    """Any classifier score at or above the region's threshold -> a human decides.

    Its version carries the folding's too: a classifier built on the text matcher
    changes with it even when its own id does not."""

    name = "classifier"
    version = "1"

    def __init__(self, classifier: Classifier, threshold: float) -> None:
        self.classifier = classifier
        self.threshold = threshold

    @property
    def rule_version(self) -> str:
        return f"{super().rule_version}+{self.classifier.id}"

    def evaluate(self, video: ModerationInput) -> Finding | None:
        scores = self.classifier.predict(video)
        if set(scores) != set(self.classifier.labels):
            raise ValueError(f"{self.classifier.id} returned labels {sorted(scores)}")
        bad = [k for k, v in scores.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
        if bad:
            raise ValueError(f"{self.classifier.id} returned scores outside [0, 1] for {bad}")
        high = sorted((k, v) for k, v in scores.items() if v >= self.threshold)
        if not high:
            return None
        listed = ", ".join(f"{k} {v:.2f}" for k, v in high)
        return self.finding(Action.review, f"{self.classifier.id} scores {listed}")


class CreatorAge(Rule):
    """For You shows a creator only if they are certainly ``min_age`` or older; an
    unknown age or an unknown creator follows the region's policy."""

    name = "creator_age"
    version = "1"
    kind = "creator"

    def __init__(self, min_age: int, age_unknown: str, unknown_creator: str) -> None:
        self.min_age = min_age
        self.age_unknown = age_unknown
        self.unknown_creator = unknown_creator

    def evaluate(self, video: ModerationInput) -> Finding | None:
        hold = Action.creator_hold
        if video.creator == "user":
            if video.creator_age is None:
                if self.age_unknown == "allow":
                    return None
                return self.finding(hold, "the creator's age is unknown (creator_age_unknown)")
            if video.creator_age < self.min_age:
                return self.finding(hold, f"the creator is not certainly {self.min_age} or older")
            return None
        if video.creator == "missing":
            if self.age_unknown == "allow":
                return None
            return self.finding(hold, "the creator is not a known user")
        allowed = self.unknown_creator == "allow" or (
            self.unknown_creator == "imported" and video.creator == "imported"
        )
        if allowed:
            return None
        return self.finding(hold, f"no creator ({video.creator}; unknown_creator policy)")


class HumanHold(Rule):
    """A video a human rejected, blocked or restricted here that changed since (or came
    back to the region) goes to a human again: an edit of one character must not let
    automation undo a takedown."""

    name = "human_hold"
    version = "1"

    def evaluate(self, video: ModerationInput) -> Finding | None:
        if video.held is None:
            return None
        return self.finding(Action.review, f"{video.held}; a human decides again")


def default_rules(policy: RegionPolicy, classifier: Classifier) -> list[Rule]:
    """The region's rules, in evaluation order (the order does not change a verdict)."""
    by_sound = set(policy.match_pinyin)
    return [
        BannedTerms(policy.banned_terms, "banned_terms" in by_sound),
        BannedHashtags(policy.banned_hashtags, "banned_hashtags" in by_sound),
        ReviewTerms(policy.review_terms, "review_terms" in by_sound),
        Categories(policy.region, policy.blocked_categories, policy.ineligible_categories),
        Maturity(policy.mature_terms, policy.maturity, "mature_terms" in by_sound),
        Spam(policy.max_hashtags),
        Reupload(),
        ClassifierRule(classifier, policy.classifier_threshold),
        CreatorAge(policy.min_creator_age, policy.creator_age_unknown, policy.unknown_creator),
        HumanHold(),
    ]
