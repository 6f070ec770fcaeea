"""How a feed request picks its variant: per region, the experiment running there and one
pipeline per arm, built once when the feed service is."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from fyp.config import DeploymentConfig, RankingConfig
from fyp.experiments.assignment import pick, position
from fyp.experiments.config import CONTROL, Experiment, Shares
from fyp.feed.pipeline import FeedPipeline
from fyp.feed.scoring import Scorer


@dataclass(frozen=True, slots=True)
class Arm:
    """A user's place in their home region's experiment, and the pipeline ranking for it."""

    experiment: str
    variant: str
    pipeline: FeedPipeline
    # orders ``fyp train`` ranked ahead were ranked with control's pipeline: a variant
    # user's pages are ranked live (then from this process's own orders, ranked with theirs)
    stored_orders: bool

    def to_dict(self) -> dict[str, str]:
        return {"name": self.experiment, "variant": self.variant}


class Arms:
    """The arms of every region with an experiment."""

    def __init__(self, regions: dict[str, tuple[Experiment, Shares, dict[str, Arm]]]) -> None:
        self.regions = regions  # per region: its experiment, its shares, an arm per variant

    def of(self, user_id: str, region: str) -> Arm | None:
        """The user's arm, or None when their home region runs no experiment."""
        found = self.regions.get(region)
        if found is None:
            return None
        experiment, shares, arms = found
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
        arms = {CONTROL: Arm(experiment.name, CONTROL, control, stored_orders=True)}
        for v in experiment.variants:
            rerank = control.rerank
            if v.exploration_share is not None:
                rerank = dataclasses.replace(rerank, exploration_share=v.exploration_share)
            pipeline = control.variant(scorer_for(v.ranking(config.ranking)), rerank)
            arms[v.name] = Arm(experiment.name, v.name, pipeline, stored_orders=False)
        regions.update(dict.fromkeys(experiment.regions, (experiment, experiment.shares, arms)))
    return Arms(regions)
