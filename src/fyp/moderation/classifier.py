"""The classifier extension point, and the deterministic lexicon classifier fyp ships.

A classifier scores a video's text per label in [0, 1]. It is *fit-free* at serving
time: ``predict`` reads nothing but its input and the classifier's own (versioned)
parameters, so the same input and version always give the same scores, which is what
makes a verdict replayable. A learned model plugs in by subclassing
:class:`Classifier` with its weights pinned to its ``version``; nothing is downloaded.

:class:`LexiconClassifier` is a weighted keyword model: each label has a small lexicon
of Chinese and English terms with weights; a label's score is ``1 - exp(-sum of the
weights of the distinct terms found)``, so one strong term scores about 0.8 and weak
terms add up. Terms are matched like banned terms (:mod:`fyp.moderation.text`), in the
same texts: caption, cover texts and hashtags.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from fyp.moderation.models import ModerationInput
from fyp.moderation.text import TermMatcher


class Classifier(ABC):
    """Scores a video per label. Subclasses set ``name``, ``version`` and ``labels``."""

    name: ClassVar[str] = "classifier"
    version: ClassVar[str] = "0"
    labels: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def predict(self, video: ModerationInput) -> dict[str, float]:
        """A score in [0, 1] for every label in ``labels``; deterministic."""

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


# label -> term -> weight; changing any of it means bumping LexiconClassifier.version
LEXICON: Mapping[str, Mapping[str, float]] = {
    "adult": {
        "色情": 1.6,
        "裸体": 1.4,
        "裸聊": 1.8,
        "约炮": 1.8,
        "成人视频": 1.6,
        "黄片": 1.8,
        "露点": 1.2,
        "porn": 1.8,
        "nsfw": 1.4,
        "nude": 1.2,
        "性感": 0.4,
        "诱惑": 0.4,
    },
    "violence": {
        "砍人": 1.6,
        "杀人": 1.4,
        "血腥": 1.2,
        "暴力": 0.8,
        "打架": 0.6,
        "斗殴": 0.9,
        "自残": 1.8,
        "自杀": 1.6,
        "gore": 1.6,
        "beheading": 1.8,
    },
    "gambling": {
        "赌博": 1.6,
        "网赌": 1.8,
        "博彩": 1.6,
        "赌场": 1.2,
        "百家乐": 1.4,
        "下注": 0.6,
        "casino": 1.2,
        "betting": 1.0,
    },
    "drugs": {
        "毒品": 1.6,
        "冰毒": 1.8,
        "大麻": 1.0,
        "吸毒": 1.6,
        "海洛因": 1.8,
        "cocaine": 1.6,
        "heroin": 1.6,
    },
}


class LexiconClassifier(Classifier):
    """Weighted keywords per label over caption, cover texts and hashtags (see the
    module doc)."""

    name = "lexicon"
    version = "3"  # 3: terms matched as text.TermMatcher does since fold 3 (hashtags, leet)
    labels = tuple(sorted(LEXICON))

    def __init__(self) -> None:
        self._lexicon = {label: dict(terms) for label, terms in LEXICON.items()}
        self._matchers = {label: TermMatcher(terms) for label, terms in self._lexicon.items()}

    def predict(self, video: ModerationInput) -> dict[str, float]:
        texts = video.texts(hashtags=False)
        scores: dict[str, float] = {}
        for label in self.labels:
            weights = self._lexicon[label]
            found = self._matchers[label].find(*texts, hashtags=video.hashtags)
            total = sum(weights[t] for t in found)
            scores[label] = round(1.0 - math.exp(-total), 6)
        return scores
