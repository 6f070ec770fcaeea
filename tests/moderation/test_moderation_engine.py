"""The policy engine: severity, failing closed, versions, and deterministic replay."""

from __future__ import annotations

from typing import ClassVar

import pytest

from fyp.moderation import PolicyEngine, parse_policy
from fyp.moderation.classifier import LexiconClassifier
from fyp.moderation.models import Action, Finding, Match, ModerationInput, State
from fyp.moderation.rules import Rule

POLICY = {
    "banned_terms": ["赌博"],
    "review_terms": ["整容"],
    "ineligible_categories": ["营销售卖"],
    "blocked_categories": ["博彩"],
}
ADULT = {"creator": "user", "creator_age": 18}


def engine(**extra: object) -> PolicyEngine:
    return PolicyEngine(parse_policy("us", {**POLICY, **extra}))


def judge(caption: str = "", e: PolicyEngine | None = None, **kw: object) -> State:
    item = ModerationInput("v", "us", caption=caption, **{**ADULT, **kw})  # type: ignore[arg-type]
    return (e or engine()).evaluate(item).state


def test_states_follow_the_most_severe_finding() -> None:
    assert judge("今天天气很好") is State.approved
    assert judge("来赌博") is State.rejected
    assert judge(categories=("博彩",)) is State.blocked
    assert judge("整容") is State.pending  # a human decides
    assert judge(categories=("营销售卖",)) is State.restricted
    assert judge(maturity="mature") is State.age_restricted
    assert judge(maturity="explicit") is State.rejected
    assert judge("整容 赌博", categories=("营销售卖",)) is State.rejected
    assert judge("整容", categories=("营销售卖",)) is State.pending


def test_region_policy_maps_maturity_and_auto_approve() -> None:
    assert judge(maturity="mature", e=engine(maturity={"mature": "restrict"})) is State.restricted
    manual = engine(auto_approve=False)
    verdict = manual.evaluate(ModerationInput("v", "us", caption="好", **ADULT))  # type: ignore[arg-type]
    assert verdict.state is State.pending and "auto_approve is off" in verdict.reason


def test_creator_rules_decide_creator_ok_only() -> None:
    e = engine()
    for kw, ok in [
        ({"creator": "user", "creator_age": 18}, True),
        ({"creator": "user", "creator_age": 16}, True),
        ({"creator": "user", "creator_age": 15}, False),
        ({"creator": "user", "creator_age": None}, False),
        ({"creator": "missing"}, False),
        ({"creator": "imported"}, True),
        ({"creator": "none"}, False),
    ]:
        verdict = e.evaluate(ModerationInput("v", "us", caption="好", **kw))  # type: ignore[arg-type]
        assert verdict.state is State.approved and verdict.creator_ok is ok, kw
    allow = engine(unknown_creator="allow", creator_age_unknown="allow", min_creator_age=18)
    assert allow.evaluate(ModerationInput("v", "us", creator="none")).creator_ok
    assert allow.evaluate(ModerationInput("v", "us", creator="user")).creator_ok
    assert not allow.evaluate(ModerationInput("v", "us", creator="user", creator_age=17)).creator_ok
    deny = engine(unknown_creator="deny")
    assert not deny.evaluate(ModerationInput("v", "us", creator="imported")).creator_ok


class Broken(Rule):
    name = "broken"
    version = "7"

    def evaluate(self, video: ModerationInput) -> Finding | None:
        raise RuntimeError("model file missing")


class BrokenCreator(Broken):
    name = "broken_creator"
    kind: ClassVar[str] = "creator"


class RejectAll(Rule):
    name = "reject_all"
    version = "1"

    def evaluate(self, video: ModerationInput) -> Finding | None:
        return self.finding(Action.reject, "everything goes")


def test_a_failing_rule_fails_closed_and_is_recorded() -> None:
    policy = parse_policy("us", {})
    verdict = PolicyEngine(policy, rules=[Broken()]).evaluate(ModerationInput("v", "us"))
    assert verdict.state is State.pending and verdict.creator_ok
    assert verdict.failures[0].rule == "broken"
    assert "RuntimeError: model file missing" in verdict.reason
    assert verdict.versions["rule:broken"] == "7"
    # a rejection is still a rejection; a failing creator rule keeps the creator out
    both = PolicyEngine(policy, rules=[Broken(), RejectAll(), BrokenCreator()])
    verdict = both.evaluate(ModerationInput("v", "us"))
    assert verdict.state is State.rejected and not verdict.creator_ok
    assert [f.rule for f in verdict.failures] == ["broken", "broken_creator"]


def test_a_misbehaving_classifier_fails_closed() -> None:
    class Wild(LexiconClassifier):
        version = "wild"

        def predict(self, video: ModerationInput) -> dict[str, float]:
            return dict.fromkeys(self.labels, 1.5)

    e = PolicyEngine(parse_policy("us", {}), classifier=Wild())
    verdict = e.evaluate(ModerationInput("v", "us", **ADULT))  # type: ignore[arg-type]
    assert verdict.state is State.pending and verdict.failures[0].rule == "classifier"
    version = e.versions["rule:classifier"]
    assert version.startswith("1+fold") and version.endswith("+lexicon@wild")


def test_the_classifier_rules_version_moves_with_the_text_folding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A classifier built on the term matcher changes when folding does, whatever its id:
    the verdicts it gave are then re-judged, not kept under a version that lies."""
    import fyp.moderation.rules as rules

    before = PolicyEngine(parse_policy("us", {})).versions["rule:classifier"]
    monkeypatch.setattr(rules, "NORMALISATION", "999")
    after = PolicyEngine(parse_policy("us", {})).versions["rule:classifier"]
    assert before != after and "fold999" in after


def test_verdicts_record_versions_and_the_input_hash() -> None:
    e = engine()
    item = ModerationInput("v", "us", caption="来赌博", **ADULT)  # type: ignore[arg-type]
    verdict = e.evaluate(item)
    assert verdict.versions["engine"] and verdict.versions["policy"] == e.policy.digest()
    assert {k for k in verdict.versions if k.startswith("rule:")} == {
        f"rule:{r.name}" for r in e.rules
    }
    assert verdict.input_hash == item.digest()
    assert verdict.findings[0].version == e.versions["rule:banned_terms"]
    assert "'赌博' (word)" in verdict.reason


def test_replaying_the_same_input_with_the_same_versions_gives_the_same_verdict() -> None:
    items = [
        ModerationInput(
            "v",
            "us",
            caption="来赌博 #整容 ＃热门",
            cover_texts={"manual_cover_text": "封面"},
            hashtags=("a", "b"),
            categories=("营销售卖",),
            maturity="mature",
            media_sha256="ab" * 32,
            matches=(Match("w", "caption", 0.71, "rejected", False),),
            **ADULT,  # type: ignore[arg-type]
        ),
        ModerationInput("w", "us", caption="今天天气很好", creator="imported"),
    ]
    for item in items:
        stored = engine().evaluate(item).to_dict()
        again = engine()  # a fresh engine: nothing carried over in memory
        result = again.replay(item.to_dict(), stored)
        assert result.same_versions and result.same_verdict
        assert ModerationInput.from_dict(item.to_dict()) == item
    # another policy is another version: the replay says so instead of pretending
    other = engine(banned_terms=["别的"]).replay(
        items[0].to_dict(), engine().evaluate(items[0]).to_dict()
    )
    assert not other.same_versions and not other.same_verdict


@pytest.mark.parametrize(
    ("caption", "hashtags", "signal"),
    [
        ("#a #b #c #d #e #f #g #h #i #j #k 好看", (), "hashtag stuffing (11 hashtags"),
        ("好看", tuple("abcdefghijk"), "hashtag stuffing"),
        ("热门热门热门热门热门热门热门热门", (), "repeated"),
        ("！！！！！！！！！！！！！！！！", (), None),  # punctuation only: nothing to repeat
        ("看看 www.example.com 就知道", (), "a link"),
        ("详情 https://t.cn/abc", (), "a link"),
        ("加我 vx：dfxy333", (), "contact details"),
        ("ＱＱ 517477363 聊天", (), "contact details"),
        ("电话 138-1234-5678", (), "contact details"),
        ("哈哈哈哈哈哈哈哈哈哈哈", (), None),  # laughter is not spam
        ("@覃小煌(O94177764) 23 @小覃(O183853762) 24", (), None),  # ids are not phones
        ("今天天气很好我们去公园散步", (), None),
    ],
)
def test_spam_heuristics(caption: str, hashtags: tuple[str, ...], signal: str | None) -> None:
    from fyp.moderation.rules import Spam

    found = Spam(10).evaluate(ModerationInput("v", "us", caption=caption, hashtags=hashtags))
    if signal is None:
        assert found is None
    else:
        assert found is not None and found.action is Action.restrict and signal in found.reason
