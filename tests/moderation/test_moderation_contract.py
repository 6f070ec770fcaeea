"""The shared contract of the two extension points: every Rule and every Classifier."""

from __future__ import annotations

import math

import pytest

from contracts.implementations import implementations
from fyp.moderation import rules as rules_module
from fyp.moderation.classifier import Classifier, LexiconClassifier
from fyp.moderation.models import Action, Match, ModerationInput
from fyp.moderation.policy import parse_policy
from fyp.moderation.rules import Rule, TermRule, default_rules

POLICY = parse_policy(
    "us",
    {
        "banned_terms": ["赌博", "casino"],
        "banned_hashtags": ["约炮"],
        "review_terms": ["整容"],
        "mature_terms": ["性感"],
        "ineligible_categories": ["营销售卖"],
        "blocked_categories": ["博彩"],
        "max_hashtags": 3,
    },
)
CORPUS = [
    ModerationInput("v1", "us"),
    ModerationInput(
        "v2", "us", caption="今天天气很好我们去公园散步", creator="user", creator_age=18
    ),
    ModerationInput(
        "v3", "us", caption="来赌博吧 casino", cover_texts={"cover_text": "性感"}, creator="user"
    ),
    ModerationInput("v4", "us", caption="#a #b #c #d 加vx：abc12345", hashtags=("约炮",)),
    ModerationInput("v5", "us", categories=("博彩", "营销售卖"), maturity="explicit"),
    ModerationInput("v6", "us", caption="整容 色情 网赌 砍人 毒品", creator="imported"),
    ModerationInput(
        "v7",
        "us",
        caption="热门" * 10,
        creator="missing",
        matches=(Match("v1", "caption", 0.8, "rejected", False),),
    ),
    ModerationInput(
        "v8",
        "us",
        creator="user",
        creator_age=15,
        matches=(Match("v2", "media", 1.0, "approved", False),),
    ),
    ModerationInput(
        "v9", "us", creator="none", matches=(Match("v2", "caption", 0.6, "approved", True),)
    ),
    ModerationInput("v10", "us", caption="改过的标题", held="rejected by a human (takedown)"),
]
RULES = default_rules(POLICY, LexiconClassifier())


def test_every_built_in_rule_is_under_contract() -> None:
    built_in = {c for c in implementations(Rule) if c.__module__ == rules_module.__name__}
    assert built_in - {TermRule} == {type(r) for r in RULES}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_contract(rule: Rule) -> None:
    assert rule.name and rule.name != Rule.name
    assert rule.version and rule.version != Rule.version and rule.rule_version
    assert rule.kind in {"content", "creator"}
    fired = 0
    for item in CORPUS:
        first = rule.evaluate(item)
        assert first == rule.evaluate(item)  # deterministic
        if first is None:
            continue
        fired += 1
        assert first.rule == rule.name and first.version == rule.rule_version
        assert isinstance(first.action, Action) and first.reason
        if rule.kind == "creator":
            assert first.action is Action.creator_hold
        else:
            assert first.action is not Action.creator_hold
    assert fired, f"the corpus never exercises {rule.name}"
    assert len({r.name for r in RULES}) == len(RULES)


def test_rules_are_independent_of_instance() -> None:
    again = default_rules(POLICY, LexiconClassifier())
    for a, b in zip(RULES, again, strict=True):
        assert [a.evaluate(i) for i in CORPUS] == [b.evaluate(i) for i in CORPUS]


CLASSIFIERS = [c() for c in implementations(Classifier)]


def test_every_classifier_is_under_contract() -> None:
    assert LexiconClassifier in {type(c) for c in CLASSIFIERS}


@pytest.mark.parametrize("classifier", CLASSIFIERS, ids=lambda c: c.id)
def test_classifier_contract(classifier: Classifier) -> None:
    assert classifier.name != Classifier.name and classifier.version != Classifier.version
    assert classifier.labels and len(set(classifier.labels)) == len(classifier.labels)
    assert classifier.id == f"{classifier.name}@{classifier.version}"
    seen_positive = False
    for item in CORPUS:
        scores = classifier.predict(item)
        assert set(scores) == set(classifier.labels)
        for value in scores.values():
            assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0
        assert scores == classifier.predict(item) == type(classifier)().predict(item)
        seen_positive |= any(v > 0 for v in scores.values())
    assert seen_positive


def test_lexicon_scores_add_up() -> None:
    clf = LexiconClassifier()
    one = clf.predict(ModerationInput("a", "us", caption="网赌"))["gambling"]
    two = clf.predict(ModerationInput("a", "us", caption="网赌 百家乐"))["gambling"]
    assert 0.8 < one < two < 1.0
    assert clf.predict(ModerationInput("a", "us", caption="可爱的猫"))["gambling"] == 0.0
