"""Meet the erasure deadline: retrain regions whose models still hold erased users' share.

An erasure removes a user's rows and vector at once, but what they contributed to
aggregates (item vectors, co-engagement neighbours, popularity, ranker heads) is only
gone after a retrain on the store without them. Each rewritten artifact lists the
receipts still waiting for that retrain, with their deadlines
(``manifest.lineage.pending_retrain``). :func:`process_region` — ``fyp erasure
process``, meant for cron — removes the plaintext staging copies that killed backups,
restores or scans left (:mod:`fyp.sovereignty.staging`) and the working directories of
killed artifact writes (``models/.<version>.tmp``, ``fyp.models.artifacts.leftovers``),
re-applies erasures the
ledger records but the store or an artifact does not reflect (a restore, a crash, a
training run that raced an erasure), finishes a WAL truncation an erasure could not
do (another connection kept the WAL busy), retrains when something is pending — an erasure's
share of aggregates, or a withdrawal of consent to model training since the live model
read the store (``fyp.sovereignty.consent_log.withdrawal_deadline``) — and then
deletes the older versions that still hold the erased users' contributions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fyp.audit.log import sql_store
from fyp.models.artifacts import (
    ARRAYS,
    list_versions,
    models_dir,
    read_manifest,
    remove_leftovers,
    remove_version,
    write_artifact,
)
from fyp.models.training import train_region
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment
from fyp.sovereignty.consent_log import withdrawal_deadline
from fyp.sovereignty.erasure import (
    Eraser,
    Outcome,
    now_ms,
    reapply_erasures,
    recreated,
    region_models_lock,
)
from fyp.sovereignty.ledger import MOVE, ErasureLedger, moved_into
from fyp.sovereignty.remnants import ARTIFACT_USER_ARRAYS
from fyp.sovereignty.staging import remove_stale


def pending_retrains(region_dir: Path) -> dict[str, int]:
    """``{receipt_id: deadline_ms}`` of erasures some artifact version still holds."""
    out: dict[str, int] = {}
    for version in list_versions(region_dir):
        for receipt, deadline in (
            read_manifest(region_dir, version).lineage.get("pending_retrain", {}).items()
        ):
            out[str(receipt)] = min(int(deadline), out.get(str(receipt), int(deadline)))
    return out


def artifact_ids(region_dir: Path, version: str, creators: bool = True) -> set[str]:
    """Every user id an artifact version names (learned from, vectors, feeds ranked
    ahead, and unless told not to, creators)."""
    names = [n for n in ARTIFACT_USER_ARRAYS if creators or n != "creator_ids"]
    with np.load(models_dir(region_dir) / version / ARRAYS, allow_pickle=False) as data:
        return {str(u) for name in names if name in data.files for u in data[name]}


def erased_in_artifacts(deployment: Deployment, region: str) -> dict[str, tuple[str, str, bool]]:
    """Users some artifact of ``region`` names although a ledger records them as erased
    (or ``region``'s own ledger as moved away): ``{user_id: (home region, receipt id,
    erased)}``; ``erased`` False: moved away, whose uploads they still made (creators
    may be homed in another region)."""
    region_dir = deployment.config.region_dir(region)
    ids: set[str] = set()
    users: set[str] = set()  # not as creators: the catalogue names creators wherever they live
    for version in list_versions(region_dir):
        ids |= artifact_ids(region_dir, version)
        users |= artifact_ids(region_dir, version, creators=False)
    ids.discard("")
    out: dict[str, tuple[str, str, bool]] = {}
    for home in deployment.regions:
        ledger = ErasureLedger(deployment.config, home)
        for user_id in ledger.matching(ids):
            entry = ledger.find(user_id)
            if entry is None:
                continue
            if entry.kind == MOVE:  # only the region they left must not hold them
                if (
                    user_id in users
                    and home == region
                    and not moved_into(deployment.config, user_id, region, entry.erased_at_ms)
                ):
                    out[user_id] = (home, entry.receipt_id, False)
            elif not recreated(deployment, user_id, entry.erased_at_ms):
                out[user_id] = (home, entry.receipt_id, True)
    return out


@dataclass
class RegionRun:
    region: str
    # staging dirs of killed runs, and killed artifact writes' (models/.<version>.tmp)
    stale_copies: list[str] = field(default_factory=list)
    reapplied: list[str] = field(default_factory=list)
    stripped: list[str] = field(default_factory=list)  # receipts removed from artifacts now
    pending_before: dict[str, int] = field(default_factory=dict)
    retrained: str | None = None
    pruned: list[str] = field(default_factory=list)
    pending_after: dict[str, int] = field(default_factory=dict)
    # the deadline of withdrawals of consent to model training the live model predates
    consent_due: int | None = None
    wal_purged: bool = False  # a WAL truncation an erasure owed (a busy WAL) is done now
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def strip_erased(deployment: Deployment, region: str) -> list[str]:
    """Rewrite or delete the artifacts of ``region`` that name ledger-erased users."""
    eraser = Eraser(deployment)
    out = Outcome()
    receipts: list[str] = []
    for user_id, (home, receipt, erased) in sorted(erased_in_artifacts(deployment, region).items()):
        eraser.scrub_artifacts(region, user_id, receipt, now_ms(), home == region, out, erased)
        receipts.append(receipt)
    return receipts


def process_region(
    deployment: Deployment,
    region: str,
    due_within_ms: int | None = None,
    force: bool = False,
) -> RegionRun:
    """Bring one region's erasures to completion; retrain when something is pending and
    (unless ``force``) the earliest deadline is within ``due_within_ms`` (None: always)."""
    started = time.perf_counter()
    run = RegionRun(region)
    region_dir = deployment.config.region_dir(region)
    run.stale_copies = [p.name for p in remove_stale(region_dir)]  # plaintext, erased users in it
    with region_models_lock(region_dir):  # no artifact writer is mid-way while it is held
        run.stale_copies += [f"models/{name}" for name in remove_leftovers(region_dir)]
    run.reapplied = reapply_erasures(deployment, region)
    run.stripped = strip_erased(deployment, region)
    run.pending_before = pending_retrains(region_dir)
    run.consent_due = withdrawal_deadline(deployment, region)
    deadlines = [*run.pending_before.values()]
    deadlines += [] if run.consent_due is None else [run.consent_due]
    due = bool(deadlines) and (due_within_ms is None or min(deadlines) - now_ms() <= due_within_ms)
    if force or due:
        # training reads the store without holding the models lock, so erasures go on;
        # one that lands meanwhile is caught by strip_erased below
        from fyp.feed.ahead import rank_region

        manifest, arrays = train_region(
            deployment.store(region),
            region_dir,
            consent=consent_policy(deployment.config, region),
        )
        arrays = {**arrays, **rank_region(deployment, region, manifest, arrays)}  # as `fyp train`
        with region_models_lock(region_dir):
            write_artifact(region_dir, manifest, arrays)
            run.retrained = manifest.version
            for version in list_versions(region_dir):
                lineage = read_manifest(region_dir, version).lineage
                if version != manifest.version and lineage.get("pending_retrain"):
                    remove_version(region_dir, version)
                    run.pruned.append(version)
        run.stripped += strip_erased(deployment, region)
    run.pending_after = pending_retrains(region_dir)
    # last, so a WAL still held (StorageError) leaves the rest of the run done
    run.wal_purged = sql_store(deployment.store(region)).purge_owed()
    if run.retrained:
        run.consent_due = withdrawal_deadline(deployment, region)
    run.seconds = round(time.perf_counter() - started, 3)
    return run


def process(
    deployment: Deployment,
    regions: list[str] | None = None,
    due_within_ms: int | None = None,
    force: bool = False,
) -> list[RegionRun]:
    return [
        process_region(deployment, r, due_within_ms, force) for r in regions or deployment.regions
    ]
