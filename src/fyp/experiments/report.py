"""An experiment's report: per region and arm, per-user engagement since its start, and
each variant against control (Welch's t on the per-user values).

Each region's events are read in that region's store and only aggregates leave it: no
user id is in the report. A user counts in their arm when they have at least one event
since the start. Per user, over the distinct videos they have an event for since then
("videos"), a rate is the share of those videos with the outcome: long play, like,
share, follow and skip as the learned heads' labels define them
(:func:`fyp.models.training.event_objective`: a skip is a skip event or a short play),
not interested by its event. ``plays`` counts play events; ``watch_ratio`` is the mean
over the user's plays with a watch time (users without one are left out of it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fyp.errors import InvalidRequest, NotFound
from fyp.events.schema import EventType, StoredEvent
from fyp.experiments.assignment import variant_of
from fyp.experiments.config import CONTROL, Experiment
from fyp.models.ranker import OBJECTIVES
from fyp.models.training import event_objective
from fyp.regions.deployment import Deployment

OUTCOMES = (*OBJECTIVES, "not_interested")  # long_play, like, share, follow, skip, ...
METRICS = ("plays", *(f"{o}_rate" for o in OUTCOMES), "watch_ratio")


@dataclass
class _User:
    plays: int = 0
    videos: set[str] = field(default_factory=set)
    outcomes: dict[str, set[str]] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=list)

    def add(self, e: StoredEvent) -> None:
        self.videos.add(e.video_id)
        if e.type == EventType.play:
            self.plays += 1
            if e.watch_ratio is not None:
                self.ratios.append(e.watch_ratio)
        objective = event_objective(e)
        outcome = OBJECTIVES[objective] if objective is not None else None
        if e.type == EventType.not_interested:
            outcome = "not_interested"
        if outcome is not None:
            self.outcomes.setdefault(outcome, set()).add(e.video_id)

    def values(self) -> dict[str, float]:
        out = {"plays": float(self.plays)}
        for o in OUTCOMES:
            out[f"{o}_rate"] = len(self.outcomes.get(o, ())) / len(self.videos)
        if self.ratios:
            out["watch_ratio"] = sum(self.ratios) / len(self.ratios)
        return out


def per_user(events: Iterable[StoredEvent], since_ms: int) -> dict[str, dict[str, float]]:
    """Each user's metric values over their events from ``since_ms`` on."""
    users: dict[str, _User] = {}
    for e in events:
        if e.ts_ms >= since_ms:
            users.setdefault(e.user_id, _User()).add(e)
    return {user_id: u.values() for user_id, u in users.items()}


def welch(variant: list[float], control: list[float]) -> dict[str, Any]:
    """Variant minus control: the difference of means, its 95% confidence interval and
    the two-sided p-value of Welch's t-test (None where fewer than two users, or no
    variance, leave them undefined)."""
    from scipy import stats

    out: dict[str, Any] = {"difference": None, "ci95": None, "p_value": None}
    if variant and control:
        out["difference"] = _mean(variant) - _mean(control)
    if len(variant) < 2 or len(control) < 2:
        return out
    with warnings.catch_warnings():  # an arm whose users all have one value: handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(variant, control, equal_var=False)
    p = float(result.pvalue)
    if math.isfinite(p):
        low, high = result.confidence_interval(0.95)
        out |= {"ci95": [float(low), float(high)], "p_value": p}
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def experiment_named(deployment: Deployment, name: str) -> Experiment:
    for experiment in deployment.config.experiments:
        if experiment.name == name:
            return experiment
    declared = ", ".join(e.name for e in deployment.config.experiments) or "none"
    raise NotFound(
        f"no experiment named {name!r} in fyp.toml (declared: {declared})", experiment=name
    )


def region_report(deployment: Deployment, experiment: Experiment, region: str) -> dict[str, Any]:
    """One region's arms, read from its own store."""
    values = per_user(deployment.store(region).iter_events(), experiment.start_ms)
    arms: dict[str, list[dict[str, float]]] = {arm: [] for arm in experiment.arms}
    for user_id, user in values.items():
        arms[variant_of(experiment, user_id)].append(user)
    control = arms[CONTROL]
    out = []
    for arm, users in arms.items():
        metrics: dict[str, Any] = {}
        for metric in METRICS:
            mine = [u[metric] for u in users if metric in u]
            entry: dict[str, Any] = {"users": len(mine), "mean": _mean(mine) if mine else None}
            if arm != CONTROL:
                entry |= welch(mine, [u[metric] for u in control if metric in u])
            metrics[metric] = entry
        out.append({"variant": arm, "users": len(users), "metrics": metrics})
    return {"region": region, "arms": out}


def report(deployment: Deployment, name: str, region: str | None = None) -> dict[str, Any]:
    """The report of experiment ``name`` (``region``: only that one of its regions)."""
    experiment = experiment_named(deployment, name)
    regions = list(experiment.regions)
    if region is not None:
        deployment.config.region(region)  # UnknownRegion for a region not declared
        if region not in regions:
            raise InvalidRequest(
                f"experiment {name!r} does not run in region {region!r} "
                f"(it runs in: {', '.join(regions)})",
                region=region,
            )
        regions = [region]
    return {
        "experiment": name,
        "start": experiment.start.isoformat(),
        "variants": {v.name: v.share for v in experiment.variants},
        "regions": [region_report(deployment, experiment, r) for r in regions],
    }
