"""An experiment's report: per region and arm, per-user engagement from each user's first
exposure, each variant against control (Welch's t on the per-user values), and a
sample-ratio check of the arms' sizes.

Each region's exposures and events are read in that region's store and only aggregates
leave it: no user id is in the report. A user counts in the arm of their first exposure
(:mod:`fyp.experiments.exposures`: intent-to-treat, whatever the config assigns now), with
their events from that exposure (and not before ``start``) until ``end``; users never
exposed are not counted. Per user, over the distinct videos they have an event for in
that window ("videos"), a rate is the share of those videos with the outcome: long play,
like, share, follow and skip as the learned heads' labels define them
(:func:`fyp.models.training.event_objective`: a skip is a skip event or a short play;
a like taken back by an ``unlike`` in the window done later by the client's time, as
everywhere, is no like), not interested by its
event. ``plays`` counts play events (0 for an exposed user with no event); a user
without videos is left out of the rates, and ``watch_ratio`` is the mean over the
user's plays with a watch time (users without one are left out of it).

The sample-ratio check (SRM) tests the exposed users per arm against the shares the
config gives now with a chi-square goodness-of-fit test: a p-value under
:data:`SRM_ALPHA` says the split is not what the shares promise (a broken assignment,
arms that lose users differently, or shares changed mid-test), and the arms' comparison
is not to be trusted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fyp.errors import InvalidRequest, NotFound
from fyp.events.schema import EventType, StoredEvent
from fyp.experiments.config import CONTROL, Experiment
from fyp.experiments.exposures import Exposure, exposures
from fyp.models.ranker import OBJECTIVES
from fyp.models.training import event_objective
from fyp.regions.deployment import Deployment

OUTCOMES = (*OBJECTIVES, "not_interested")  # long_play, like, share, follow, skip, ...
METRICS = ("plays", *(f"{o}_rate" for o in OUTCOMES), "watch_ratio")
SRM_ALPHA = 0.001  # the usual threshold of a sample-ratio mismatch


_NEVER = (-(2**63), 0)


@dataclass
class _User:
    plays: int = 0
    videos: set[str] = field(default_factory=set)
    outcomes: dict[str, set[str]] = field(default_factory=dict)
    ratios: list[float] = field(default_factory=list)
    # each video's latest like and unlike, by (ts_ms, seq): liked if the like is later
    likes: dict[str, tuple[int, int]] = field(default_factory=dict)
    unlikes: dict[str, tuple[int, int]] = field(default_factory=dict)

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
        if e.type in (EventType.like, EventType.unlike):  # decided once all are read
            latest = self.likes if e.type == EventType.like else self.unlikes
            latest[e.video_id] = max(latest.get(e.video_id, _NEVER), (e.ts_ms, e.seq))
        elif outcome is not None:
            self.outcomes.setdefault(outcome, set()).add(e.video_id)

    def values(self) -> dict[str, float]:
        liked = {v for v, at in self.likes.items() if at > self.unlikes.get(v, _NEVER)}
        if liked:
            self.outcomes["like"] = liked
        out = {"plays": float(self.plays)}
        if self.videos:
            for o in OUTCOMES:
                out[f"{o}_rate"] = len(self.outcomes.get(o, ())) / len(self.videos)
        if self.ratios:
            out["watch_ratio"] = sum(self.ratios) / len(self.ratios)
        return out


def per_user(
    events: Iterable[StoredEvent],
    exposed: Mapping[str, Exposure],
    start_ms: int,
    end_ms: int | None,
) -> dict[str, dict[str, float]]:
    """Each exposed user's metric values over their events from their exposure (not
    before ``start_ms``) until ``end_ms``; every exposed user has values."""
    users = {user_id: _User() for user_id in exposed}
    since = {user_id: max(start_ms, x.exposed_at_ms) for user_id, x in exposed.items()}
    until = math.inf if end_ms is None else end_ms
    for e in events:
        user = users.get(e.user_id)
        if user is not None and since[e.user_id] <= e.ts_ms < until:
            user.add(e)
    return {user_id: u.values() for user_id, u in users.items()}


def srm(observed: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, Any]:
    """The sample-ratio check: exposed users per arm (``observed``) against each arm's
    share (``shares``, summing to 1), by a chi-square goodness-of-fit test with one
    degree of freedom fewer than the arms. An arm with users but no share (a variant
    since removed) is a mismatch outright; no users, or one arm with a share, test
    nothing (``p_value`` None)."""
    from scipy import stats

    total = sum(observed.values())
    arms = sorted({*observed, *shares}, key=lambda a: (a != CONTROL, a))
    expected = {arm: total * shares.get(arm, 0.0) for arm in arms}
    out: dict[str, Any] = {
        "observed": {arm: observed.get(arm, 0) for arm in arms},
        "expected": expected,
        "chi2": None,
        "p_value": None,
        "mismatch": False,
        "warning": None,
    }
    tested = [arm for arm in arms if expected[arm] > 0]
    if any(observed.get(arm, 0) for arm in arms if expected[arm] <= 0):
        out["p_value"] = 0.0  # no finite statistic: chi2 stays None (JSON has no inf)
    elif total and len(tested) > 1:
        result = stats.chisquare(
            [observed.get(arm, 0) for arm in tested], [expected[arm] for arm in tested]
        )
        out |= {"chi2": float(result.statistic), "p_value": float(result.pvalue)}
    if out["p_value"] is not None and out["p_value"] < SRM_ALPHA:
        out["mismatch"] = True
        out["warning"] = (
            f"sample-ratio mismatch (p = {out['p_value']:.2g} < {SRM_ALPHA:g}): the arms' "
            "exposed users do not split as the shares say; do not trust the comparison "
            "before finding why (assignment, arms losing users differently, shares "
            "changed mid-test)"
        )
    return out


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
    store = deployment.store(region)
    end = experiment.end_ms
    exposed = {
        user_id: x
        for user_id, x in exposures(store, experiment.name).items()
        if end is None or x.exposed_at_ms < end
    }
    values = per_user(store.iter_events(), exposed, experiment.start_ms, end)
    arms: dict[str, list[dict[str, float]]] = {arm: [] for arm in experiment.arms}
    for user_id, user in values.items():  # a variant removed since is reported too
        arms.setdefault(exposed[user_id].variant, []).append(user)
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
    shares = {CONTROL: max(0.0, round(1 - sum(s for _, s in experiment.shares), 12))}
    shares |= dict(experiment.shares)
    sizes = {arm: len(users) for arm, users in arms.items()}
    return {"region": region, "arms": out, "srm": srm(sizes, shares)}


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
        "end": None if experiment.end is None else experiment.end.isoformat(),
        "variants": {v.name: v.share for v in experiment.variants},
        "regions": [region_report(deployment, experiment, r) for r in regions],
    }
