"""An experiment set on an open deployment (as a serving process reads it from fyp.toml),
and what tests of its feeds ask: each user's arm, and whose pages were ranked live."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from fyp.experiments.assignment import variant_of
from fyp.experiments.config import parse_experiments
from fyp.feed.service import FeedService
from fyp.regions.deployment import Deployment

US_USERS = [f"u{k}" for k in range(0, 60, 2)]  # the trained fixture's (tests/feed/conftest.py)


def with_experiment(
    d: Deployment,
    variant: dict[str, Any],
    regions: list[str],
    start: str = "2025-01-01",
    end: str | None = None,
) -> None:
    """Experiment ``exp`` in ``regions`` with one variant, ``heads`` (``variant``: its
    share and overrides); a feed service built afterwards serves it."""
    raw: dict[str, Any] = {"start": start, "regions": regions, "variants": {"heads": variant}}
    if end is not None:
        raw["end"] = end
    experiments = parse_experiments({"exp": raw}, d.config.regions, d.config.ranking)
    d.config = replace(d.config, experiments=experiments)


def arms_of(d: Deployment, users: list[str] = US_USERS) -> dict[str, list[str]]:
    """The users of each arm of the deployment's experiment, as its config assigns them."""
    experiment = d.config.experiments[0]
    out: dict[str, list[str]] = {}
    for user in users:
        out.setdefault(variant_of(experiment, user), []).append(user)
    return out


def ranked_live(
    service: FeedService, users: list[str], monkeypatch: pytest.MonkeyPatch
) -> set[str]:
    """Which of ``users``' first pages ran the pipeline (the rest came from their stored
    order ranked ahead)."""
    ran: list[str] = []
    real = FeedService._rank

    def spy(self: FeedService, pipeline: Any, model: Any, state: Any, *rest: Any) -> Any:
        ran.append(state.user_id)
        return real(self, pipeline, model, state, *rest)

    monkeypatch.setattr(FeedService, "_rank", spy)
    for user in users:
        service.feed(user, n=5, record=False)
    monkeypatch.setattr(FeedService, "_rank", real)
    return set(ran)
