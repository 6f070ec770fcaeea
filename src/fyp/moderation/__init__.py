"""Moderation: per-region verdicts, automated checks, human review, For You eligibility.

``Moderator`` runs a region's automated checks and holds its policy engine;
``Reviews`` is the human side (claim, decide, appeal, takedown);
``ReportTriage`` (``fyp.moderation.reports``, run by ``Moderator.run``) turns users'
reports into report reviews and holds; ``ModerationEligibility`` is the check
``FeedService`` applies; ``video_changed`` is
the catalogue's hook that sends new and edited videos back to pending. See
``docs/moderation.md``.
"""

from __future__ import annotations

from fyp.moderation.classifier import Classifier, LexiconClassifier
from fyp.moderation.engine import PolicyEngine
from fyp.moderation.models import Action, Finding, ModerationInput, State, Verdict
from fyp.moderation.policy import RegionPolicy, parse_policy
from fyp.moderation.review import Reviews
from fyp.moderation.rules import Rule
from fyp.moderation.service import ModerationEligibility, Moderator, RunSummary, video_changed

__all__ = [
    "Action",
    "Classifier",
    "Finding",
    "LexiconClassifier",
    "ModerationEligibility",
    "ModerationInput",
    "Moderator",
    "PolicyEngine",
    "RegionPolicy",
    "Reviews",
    "Rule",
    "RunSummary",
    "State",
    "Verdict",
    "parse_policy",
    "video_changed",
]
