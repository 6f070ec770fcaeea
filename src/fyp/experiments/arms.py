"""How a feed request picks its variant: per region, the experiment running there and one
pipeline per arm, built once when the feed service is.

``fyp train`` ranks every user's order ahead with their arm's pipeline and records the
experiment it ranked for in the manifest (``lineage.ranked_ahead_for``: name, salt and
each variant's share and overrides). A stored order is served to a user only when the
arm it was ranked with ranks the same way as the user's arm now (:func:`orders_fit`): an
artifact trained before the experiment started, or before its shares or overrides
changed, is still used for the users it fits (control users before a start), and the
others' pages are ranked live until the next training, which ``fyp train --if-changed``
runs for a changed experiment. Before its ``start`` and from its ``end`` a region's
experiment has no arms: its users are served (and ranked ahead) as control, and
``--if-changed`` retrains when it starts and when it ends (control's users keep their
orders meanwhile).

The manifest also records the settings every arm's ranking starts from
(``lineage.ranked_ahead_with``: ``[ranking]``, ``[feed.sources]``, ``[feed.rerank]``):
after a change of any of them (which a serving process applies when it restarts) no
stored order is served, to anyone, until ``fyp train --if-changed`` ranks again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fyp.config import DeploymentConfig, FeedConfig, RankingConfig
from fyp.experiments.assignment import pick, position
from fyp.experiments.config import CONTROL, Experiment, Shares
from fyp.feed.candidates import configured_sources
from fyp.feed.pipeline import FeedPipeline
from fyp.feed.scoring import Scorer


@dataclass(frozen=True, slots=True)
class Arm:
    """A user's place in their home region's experiment, and the pipeline ranking for it."""

    experiment: str
    variant: str
    pipeline: FeedPipeline
    ranks_as: str  # what its pipeline ranks with (``ranking_key``): equal, same orders

    def to_dict(self) -> dict[str, str]:
        return {"name": self.experiment, "variant": self.variant}


RANKED_FOR = "ranked_ahead_for"  # the manifest's lineage key: the experiment ranked for
RANKED_WITH = "ranked_ahead_with"  # the lineage key: the settings control ranked with


def settings_record(ranking: RankingConfig, feed: FeedConfig) -> dict[str, Any]:
    """What the deployment's pipelines rank with (control's, the non-profiled one's; a
    variant's are its overrides of these): ``[ranking]``, ``[feed.sources]``,
    ``[feed.rerank]``. The manifest keeps it as ``RANKED_WITH``; an order ranked under
    other settings is not served (:func:`settings_fit`), and ``fyp train --if-changed``
    ranks again."""
    return {
        "ranking": ranking.to_dict(),
        "sources": feed.sources.to_dict(),
        "rerank": feed.rerank.to_dict(),
    }


DEFAULT_SETTINGS = settings_record(RankingConfig(), FeedConfig())


def settings_fit(lineage: Mapping[str, Any], settings: Mapping[str, Any]) -> bool:
    """Whether a model's orders were ranked with ``settings`` (a :func:`settings_record`).
    A manifest from before they were recorded was ranked with the defaults (the only
    sources and re-ranker there were; its ``[ranking]`` is not known, so taken as the
    default too: a deployment with another one ranks again)."""
    return bool(lineage.get(RANKED_WITH, DEFAULT_SETTINGS) == settings)


def ranking_key(variant: str, overrides: Mapping[str, Any] | None) -> str:
    """What an arm ranks with: control's config, or a variant's overrides of it."""
    if variant == CONTROL or overrides is None:
        return CONTROL
    return json.dumps({k: v for k, v in overrides.items() if k != "share"}, sort_keys=True)


def experiment_record(experiment: Experiment) -> dict[str, Any]:
    """What the manifest keeps of the experiment its orders were ranked for."""
    return {
        "name": experiment.name,
        "salt": experiment.salt,
        "variants": {v.name: v.to_dict() for v in experiment.variants},
    }


def region_record(
    config: DeploymentConfig, region: str, now_ms: int | None = None
) -> dict[str, Any] | None:
    """The record of the experiment running in ``region`` at ``now_ms`` (default: now;
    None: none runs there, or it has not started or has ended: everyone is control)."""
    experiment = config.experiment_in(region)
    when = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if experiment is None or not experiment.running(when):
        return None
    return experiment_record(experiment)


def orders_fit(recorded: Mapping[str, Any] | None, user_id: str, arm: Arm | None) -> bool:
    """Whether an order ranked ahead for ``recorded`` (None: no experiment) ranks as the
    user's arm now does."""
    now = CONTROL if arm is None else arm.ranks_as
    if recorded is None:
        return now == CONTROL
    variants: Mapping[str, Mapping[str, Any]] = recorded.get("variants", {})
    shares = [(name, float(variants[name].get("share", 0))) for name in sorted(variants)]
    then = pick(position(str(recorded.get("salt", "")), user_id), shares)
    return ranking_key(then, variants.get(then)) == now


class Arms:
    """The arms of every region with an experiment."""

    def __init__(self, regions: dict[str, tuple[Experiment, Shares, dict[str, Arm]]]) -> None:
        self.regions = regions  # per region: its experiment, its shares, an arm per variant

    def of(self, user_id: str, region: str, now_ms: int | None = None) -> Arm | None:
        """The user's arm at ``now_ms`` (default: now), or None when their home region
        runs no experiment, or its experiment is not running (before ``start``, from ``end``:
        everyone is control then)."""
        found = self.regions.get(region)
        if found is None:
            return None
        experiment, shares, arms = found
        if not experiment.running(time.time_ns() // 1_000_000 if now_ms is None else now_ms):
            return None
        return arms[pick(position(experiment.salt, user_id), shares)]


def build_arms(
    config: DeploymentConfig,
    control: FeedPipeline,
    scorer_for: Callable[[RankingConfig], Scorer],
) -> Arms | None:
    """None for a deployment without experiments: its requests pay one None check."""
    if not config.experiments:
        return None
    regions: dict[str, tuple[Experiment, Shares, dict[str, Arm]]] = {}
    for experiment in config.experiments:
        arms = {CONTROL: Arm(experiment.name, CONTROL, control, CONTROL)}
        for v in experiment.variants:
            rerank = v.reranking(control.rerank)
            quotas = v.quotas(config.feed.sources)  # None: control's sources
            sources = None if quotas is None else configured_sources(quotas)
            pipeline = control.variant(scorer_for(v.ranking(config.ranking)), rerank, sources)
            arms[v.name] = Arm(experiment.name, v.name, pipeline, ranking_key(v.name, v.to_dict()))
        regions.update(dict.fromkeys(experiment.regions, (experiment, experiment.shares, arms)))
    return Arms(regions)
