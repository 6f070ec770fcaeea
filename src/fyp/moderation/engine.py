"""The policy engine: a region's rules applied to one input give one verdict.

The verdict is a pure function of the input and the versions recorded with it (the
engine's, the policy digest, each rule's and the classifier's), so replaying an input
under the same versions gives the same verdict (``replay``). Content findings combine
by severity: reject > block > review > restrict > age_restrict; nothing found means
approved (or a human review when the region turns ``auto_approve`` off). A rule that
raises fails closed: the error is recorded and the video stays pending for a human
(unless another rule already rejects or blocks it), and an erroring creator rule
keeps the creator out of For You.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fyp.moderation.classifier import Classifier, LexiconClassifier
from fyp.moderation.models import (
    ACTION_STATE,
    SEVERITY,
    Action,
    Finding,
    ModerationInput,
    RuleFailure,
    State,
    Verdict,
)
from fyp.moderation.policy import RegionPolicy
from fyp.moderation.rules import Rule, default_rules

ENGINE_VERSION = "1"


@dataclass(frozen=True)
class Replay:
    """A stored verdict evaluated again from its stored input."""

    same_versions: bool
    same_verdict: bool
    stored: dict[str, object]
    replayed: dict[str, object]


class PolicyEngine:
    """The rules of one region, built from its policy."""

    def __init__(
        self,
        policy: RegionPolicy,
        classifier: Classifier | None = None,
        rules: Sequence[Rule] | None = None,
    ) -> None:
        self.policy = policy
        self.classifier = classifier or LexiconClassifier()
        self.rules = list(rules) if rules is not None else default_rules(policy, self.classifier)
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        self.versions = {
            "engine": ENGINE_VERSION,
            "policy": policy.digest(),
            **{f"rule:{r.name}": r.rule_version for r in self.rules},
        }

    def _run(
        self, video: ModerationInput, kinds: frozenset[str]
    ) -> tuple[list[Finding], list[RuleFailure], set[str]]:
        findings: list[Finding] = []
        failures: list[RuleFailure] = []
        failed_kinds: set[str] = set()
        for rule in self.rules:
            if rule.kind not in kinds:
                continue
            try:
                finding = rule.evaluate(video)
            except Exception as exc:  # fail closed, and say why
                failures.append(RuleFailure(rule.name, rule.rule_version, _describe(exc)))
                failed_kinds.add(rule.kind)
                continue
            if finding is not None:
                findings.append(finding)
        return findings, failures, failed_kinds

    def evaluate(self, video: ModerationInput) -> Verdict:
        findings, failures, failed = self._run(video, frozenset({"content", "creator"}))
        creator_ok = "creator" not in failed and not any(
            f.action is Action.creator_hold for f in findings
        )
        content = sorted(
            (f for f in findings if f.action in SEVERITY and f.action is not Action.note),
            key=lambda f: (-SEVERITY[f.action], f.rule),
        )
        worst = content[0] if content else None
        if failures and (worst is None or SEVERITY[worst.action] <= SEVERITY[Action.review]):
            state = State.pending
            reason = "; ".join(f"rule {f.rule} failed: {f.error}" for f in failures)
        elif worst is not None:
            state = ACTION_STATE[worst.action]
            reason = "; ".join(f"{f.rule}: {f.reason}" for f in content)
        elif self.policy.auto_approve:
            state, reason = State.approved, "passed every automated check"
        else:
            state = State.pending
            reason = "passed every automated check; auto_approve is off, so a human decides"
        return Verdict(
            state=state,
            creator_ok=creator_ok,
            reason=reason,
            findings=tuple(findings),
            failures=tuple(failures),
            versions=dict(self.versions),
            input_hash=video.digest(),
        )

    def creator_ok(self, video: ModerationInput) -> tuple[bool, list[Finding]]:
        """Only the creator rules: what a human verdict keeps from automation."""
        findings, failures, _ = self._run(video, frozenset({"creator"}))
        ok = not failures and not any(f.action is Action.creator_hold for f in findings)
        return ok, findings

    def replay(self, stored_input: dict[str, object], stored: dict[str, object]) -> Replay:
        """Evaluate a stored input again and compare with the stored verdict."""
        again = self.evaluate(ModerationInput.from_dict(dict(stored_input))).to_dict()
        return Replay(
            same_versions=again["versions"] == stored.get("versions"),
            same_verdict=again == stored,
            stored=stored,
            replayed=again,
        )


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
