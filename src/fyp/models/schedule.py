"""Keep each region's models current without an operator: retrain what changed.

A model is a snapshot of its region. A video uploaded (or re-tagged) after it was
trained reaches no feed, and trending, co-engagement and the embeddings learn nothing
from new events, until the next training run. Users' own events count at once (the
feed's user state), but the catalogue and the aggregates wait for a retrain.

``fyp train --if-changed`` trains only the regions whose store moved since the live
model: its events (count and newest seq, against the manifest's snapshot) or its
catalogue (the head of the catalogue change feed, recorded in the manifest's lineage
as ``catalog_seq``); and any region whose live model cannot be used as it is: no
model, a manifest that does not read, or arrays that are not the bytes the manifest's
sha256 names (or, for a manifest older than that hash, that do not load); and any
region whose experiment, or whose ``[ranking]``, ``[feed.sources]`` or
``[feed.rerank]``, is not the one its live model ranked orders ahead for
(``fyp.experiments.arms``); and any region where a user's consent to model training,
or the region's consent policy, changed since its live model read them
(``fyp.sovereignty.consent_log``: a withdrawal must leave the live model within
``[erasure] retrain_within_hours``). ``fyp serve``
runs that every ``[training] every_minutes`` in a child process
(:class:`TrainingScheduler`), and at once when it starts with a region whose live
orders were ranked under another ``fyp.toml`` (:func:`config_reason`: its pages would
all run the pipeline until then), one region at a time at a lower CPU priority, and switches
to what it publishes as it does to any new version. The run holds the deployment's
``.schedule-training.lock``: of several hosts, one trains at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fyp.config import DeploymentConfig
from fyp.errors import ModelError
from fyp.experiments.arms import RANKED_FOR, region_record, settings_fit, settings_record
from fyp.models.ahead import RANKED_PERSONALISED
from fyp.models.artifacts import artifact_problem, current_version, read_manifest
from fyp.models.training import catalogue_mark
from fyp.regions.background import ChildScheduler, schedule_lock
from fyp.regions.consent import PERSONALISED_FEED, ConsentPolicy, consent_policy
from fyp.storage import Store

log = logging.getLogger("fyp.background")


def retrain_reason(
    store: Store,
    region_dir: Path,
    experiment: Mapping[str, Any] | None = None,
    consent: ConsentPolicy | None = None,
    settings: Mapping[str, Any] | None = None,
) -> str | None:
    """Why the region's live model is behind its store, or None if it is not.
    ``experiment``: the record of the experiment running in the region now
    (``fyp.experiments.arms.region_record``): orders ranked for another one are served
    only to the users they still fit, so a changed experiment is a reason too.
    ``consent``: the region's consent policy now; with it, a change of a user's consent
    to model training since the live model's read (a withdrawal must leave the models
    before its deadline), or of the policy, is a reason too, and so is a change of the
    ``personalised_feed`` default (the orders ranked ahead for users who recorded
    nothing would be of the wrong kind: each of their pages would run the pipeline).
    ``settings``: what the region's pipelines rank with now
    (``fyp.experiments.arms.settings_record``): orders ranked under other settings are
    served to nobody, so a change is a reason too."""
    version = current_version(region_dir)
    if version is None:
        return "no model yet"
    try:
        manifest = read_manifest(region_dir, version)
    except ModelError as exc:
        return f"the live model's manifest is unreadable ({exc})"
    problem = artifact_problem(region_dir, version, manifest)
    if problem is not None:
        return f"the live model {version} is damaged ({problem})"
    learned = manifest.snapshot
    count, newest = store.count_events(), store.max_event_seq()
    if (count, newest) != (learned.event_count, learned.max_seq):
        return (
            f"events changed since version {version} "
            f"({learned.event_count:,} learned, {count:,} now)"
        )
    mark = catalogue_mark(store)
    if mark is not None and manifest.lineage.get("catalog_seq") != mark:
        return f"the catalogue changed since version {version}"
    ranked = _ranked_otherwise(manifest.lineage, version, experiment, settings, consent)
    if ranked is not None or consent is None:
        return ranked
    return _consent_reason(store, manifest.lineage, version, consent)


def _ranked_otherwise(
    lineage: Mapping[str, Any],
    version: str,
    experiment: Mapping[str, Any] | None,
    settings: Mapping[str, Any] | None,
    consent: ConsentPolicy | None,
) -> str | None:
    """Why the model's orders were ranked under another config than the one given
    (its experiment, its feed's settings, its ``personalised_feed`` default), or None."""
    if lineage.get(RANKED_FOR) != experiment:
        return f"the experiment running in the region changed since version {version}"
    if settings is not None and not settings_fit(lineage, settings):
        return (
            f"the feed's settings ([ranking], [feed.sources], [feed.rerank]) changed since "
            f"version {version} ranked its orders"
        )
    if consent is not None:
        ranked = lineage.get(RANKED_PERSONALISED)  # absent: ranked before consents
        if ranked is not None and ranked != consent.default(PERSONALISED_FEED):
            return (
                f"the region's personalised_feed default changed since version {version} "
                "(its orders ranked ahead are of the other kind)"
            )
    return None


def config_reason(config: DeploymentConfig, region: str) -> str | None:
    """Why the region's live model ranked its orders under another ``fyp.toml`` than
    ``config``, read from its manifest alone (no store): a server restarted with other
    settings serves none of those orders, so every page runs the pipeline until the
    region is trained again. None when they fit, or there is no readable model (the
    scheduled round says why)."""
    region_dir = config.region_dir(region)
    version = current_version(region_dir)
    if version is None:
        return None
    try:
        lineage = read_manifest(region_dir, version).lineage
    except ModelError:
        return None
    settings = settings_record(config.ranking, config.feed)
    experiment = region_record(config, region)
    return _ranked_otherwise(lineage, version, experiment, settings, consent_policy(config, region))


def _consent_reason(
    store: Store, lineage: Mapping[str, Any], version: str, policy: ConsentPolicy
) -> str | None:
    from fyp.sovereignty.consent_log import training_consent_changes

    recorded = lineage.get("consent")
    if recorded is None:
        return f"version {version} was trained before training honoured consent"
    if recorded.get("policy") != policy.training_record():
        return f"the region's consent policy changed since version {version}"
    changes = training_consent_changes(store, int(recorded.get("audit_seq", 0)))
    if changes:
        return f"{changes} consent change(s) to model training since version {version}"
    return None


class TrainingScheduler(ChildScheduler):
    """Every ``[training] every_minutes``, ``fyp train --if-changed`` in a child process
    (one region at a time: the other CPUs keep serving)."""

    name = "fyp-training"
    config: DeploymentConfig

    def __init__(self, config: DeploymentConfig) -> None:
        super().__init__(config.training.every_minutes * 60.0)
        self.config = config

    def config_changed(self, old: DeploymentConfig, new: DeploymentConfig) -> None:
        """A changed experiment or consent default makes the live models' orders (and,
        for ``model_training``, what they may have learned from) out of date: train
        what changed now rather than at the end of the interval."""
        super().config_changed(old, new)
        consents = any(consent_policy(old, r) != consent_policy(new, r) for r in new.region_names)
        if consents or old.experiments != new.experiments:
            self.wake()

    def due_now(self) -> bool:
        """A region whose live orders were ranked under another ``fyp.toml`` (the server
        restarted with other settings, experiment or consent default) trains at once,
        not at the end of the first interval: meanwhile every page of it runs the
        pipeline."""
        for region in self.config.region_names:
            why = config_reason(self.config, region)
            if why is not None:
                log.info("%s: region %s: %s: training now", self.name, region, why)
                return True
        return False

    def tick(self) -> bool:
        root = self.config.root
        lock = schedule_lock(root, "training")  # one run trains every region
        return self.run_child("train", str(root), "--if-changed", "--jobs", "1", lock=lock)
