"""Check what each model artifact learned from: ``fyp lineage verify DIR``.

A manifest *says* which region an artifact belongs to and whom it learned from; this
module checks it against the artifact's own arrays and the region's store, so a wrong
or forged manifest is caught, not trusted:

- the manifest's region is the region whose directory holds the artifact;
- the hash of the users it learned from, recomputed from the ids the artifact holds
  (``lineage_user_ids``), equals the manifest's ``users_sha256``; every user with a
  vector is among them;
- every one of those users is homed in the region (present in its store). A user homed
  in another region, or in none, is foreign data. An erased user must not be named at
  all: an erasure rewrites every artifact at once, so an erased id here means the
  erasure was not applied (``fyp erasure process`` applies it). Their share of the
  aggregates may remain until the retrain deadline (``lineage.pending_retrain``);
  after it, that is a problem too, for every version, served or not;
- where it was trained (``lineage.trained_on``): an artifact trained on Ray must have
  been trained on a node labelled for its region, with the label assigned to its task
  (``fyp.models.placement``); local training is the deployment's own host;
- every user it learned from consented to model training when it read the store, and
  a user who withdrew since is out of the live version before the deadline
  (``fyp.sovereignty.consent_log.check_consent``);
- the event snapshot (count, seq range, content hash, users) is recomputed from the
  region's events up to the snapshot's last seq; the users read but not learned from
  must be those the manifest says it left out for lack of consent. If events were deleted since — an
  erasure after the training read, or an artifact rewritten by one — the snapshot can
  no longer be recomputed; the report says so instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fyp.audit.log import AuditLog
from fyp.errors import ModelError
from fyp.models.artifacts import (
    EventHasher,
    Manifest,
    artifact_problem,
    current_version,
    hash_ids,
    list_versions,
    read_arrays,
    read_manifest,
)
from fyp.models.placement import placement_problem
from fyp.regions.deployment import Deployment
from fyp.sovereignty.consent_log import check_consent
from fyp.sovereignty.ledger import ErasureLedger

EXAMPLES = 5


@dataclass
class VersionReport:
    region: str
    version: str
    current: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    users: int = 0
    snapshot: str = "unchecked"  # verified | not_recomputable | mismatch | unchecked
    trained_on: dict[str, Any] | None = None  # the manifest's record, as it says it
    consent: str = "unchecked"  # verified | pending | violation | unchecked
    consent_pending: list[dict[str, Any]] = field(default_factory=list)  # {"users", "due_ms"}

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "version": self.version,
            "current": self.current,
            "ok": self.ok,
            "users": self.users,
            "snapshot": self.snapshot,
            "trained_on": self.trained_on,
            "consent": self.consent,
            "consent_pending": self.consent_pending,
            "problems": self.problems,
            "notes": self.notes,
        }


@dataclass
class _Snap:
    count: int
    min_seq: int
    max_seq: int
    events_sha256: str
    users: frozenset[str]  # everyone whose events were read: the learned and the excluded


def snapshots_at(deployment: Deployment, region: str, max_seqs: set[int]) -> dict[int, _Snap]:
    """The event snapshot a training run reading up to each seq would have recorded,
    in one pass over the region's events."""
    out: dict[int, _Snap] = {}
    wanted = sorted(s for s in max_seqs if s > 0)
    if not wanted:
        return out
    hasher = EventHasher()

    def take(seq: int) -> None:
        out[seq] = _Snap(
            hasher.count,
            hasher.min_seq,
            hasher.max_seq,
            hasher.hexdigest(),  # hashlib digests do not end the hash
            frozenset(hasher.users),
        )

    k = 0
    for e in deployment.store(region).iter_events():
        while k < len(wanted) and e.seq > wanted[k]:
            take(wanted[k])
            k += 1
        if k == len(wanted):
            break
        hasher.add(e.seq, e.event_id, e.user_id, e.video_id, e.type, e.ts_ms)
    while k < len(wanted):
        take(wanted[k])
        k += 1
    return out


def _examples(ids: list[str]) -> str:
    shown = ", ".join(sorted(ids)[:EXAMPLES])
    return shown + (f" and {len(ids) - EXAMPLES} more" if len(ids) > EXAMPLES else "")


class LineageVerifier:
    """Checks every artifact version of the deployment's regions."""

    def __init__(self, deployment: Deployment, now_ms: int | None = None) -> None:
        self.deployment = deployment
        self.now_ms = now_ms

    def verify(self, regions: list[str] | None = None) -> list[VersionReport]:
        reports: list[VersionReport] = []
        for region in regions or self.deployment.regions:
            reports += self.verify_region(region)
        return reports

    def verify_region(self, region: str) -> list[VersionReport]:
        from fyp.sovereignty.erasure import now_ms

        d = self.deployment
        region_dir = d.config.region_dir(region)
        current = current_version(region_dir)
        versions = list_versions(region_dir)
        manifests: dict[str, Manifest] = {}
        unreadable: dict[str, str] = {}  # a damaged artifact is a finding, not a crash
        for v in versions:
            try:
                manifests[v] = read_manifest(region_dir, v)
            except ModelError as exc:
                unreadable[v] = exc.message
        snaps = snapshots_at(d, region, {m.snapshot.max_seq for m in manifests.values()})
        ledger = ErasureLedger(d.config, region)
        erasures = ledger.entries()
        expiries = [  # deletions by the region's retention limit: events gone since a read
            e.ts_ms for e in AuditLog(d.store(region)).entries(action="retention.expire")
        ]
        now = self.now_ms if self.now_ms is not None else now_ms()
        reports = []
        for version in versions:
            rep = VersionReport(region, version, version == current)
            reports.append(rep)
            if version in unreadable:
                rep.problems.append(unreadable[version])
                continue
            manifest = manifests[version]
            try:
                arrays = read_arrays(region_dir, version)
            except ModelError as exc:
                rep.problems.append(exc.message)
                continue
            damaged = artifact_problem(region_dir, version, manifest)
            if damaged is not None:  # what it holds is not what its manifest vouches for
                rep.problems.append(damaged)
            learned = self._check_users(rep, manifest.snapshot.users_sha256, arrays, region, ledger)
            if manifest.region != region:
                rep.problems.append(
                    f"manifest names region {manifest.region!r} but the artifact is served "
                    f"from {region!r}"
                )
            for receipt, deadline in manifest.lineage.get("pending_retrain", {}).items():
                if int(deadline) < now:
                    rep.problems.append(
                        f"still holds the share of erasure {receipt} in its aggregates, past "
                        "its retrain deadline (run `fyp erasure process`)"
                    )
                else:
                    rep.notes.append(f"erasure {receipt} awaits a retrain (deadline {deadline})")
            self._check_placement(rep, manifest)
            self._check_snapshot(rep, manifest, snaps, erasures, expiries, learned)
            found = check_consent(d, region, manifest.lineage, learned, rep.current, now)
            rep.consent, rep.consent_pending = found.status, found.pending
            rep.problems += found.problems
            rep.notes += found.notes
        if current is not None and current not in versions:
            rep = VersionReport(region, current, True)
            rep.problems.append("models/current names a version that does not exist")
            reports.append(rep)
        return reports

    def _check_users(
        self,
        rep: VersionReport,
        users_sha256: str,
        arrays: dict[str, np.ndarray],
        region: str,
        ledger: ErasureLedger,
    ) -> set[str]:
        """The users the artifact says it learned from, each checked to be the region's."""
        if "lineage_user_ids" not in arrays:
            rep.problems.append(
                "artifact does not list the users it learned from (trained before lineage "
                "lists): retrain it"
            )
            learned = {str(u) for u in arrays["user_ids"]}
        else:
            learned = {str(u) for u in arrays["lineage_user_ids"]}
            if hash_ids(learned) != users_sha256:
                rep.problems.append(
                    "users hash in the manifest does not match the users the artifact holds"
                )
        rep.users = len(learned)
        vectors = {str(u) for u in arrays["user_ids"]}
        outside = sorted(vectors - learned)
        if outside:
            rep.problems.append(
                f"{len(outside)} user vector(s) of users not in the learned-from list: "
                f"{_examples(outside)}"
            )
        everyone = learned | vectors
        d = self.deployment
        homed = d.store(region).existing_users(everyone)
        rest = everyone - homed
        if not rest:
            return learned
        erased = ledger.matching(rest)
        if erased:
            rep.problems.append(
                f"{len(erased)} erased user(s) still named (erasure not applied; run "
                f"`fyp erasure process`): {_examples(sorted(erased))}"
            )
        rest -= erased
        for other in d.regions:
            if other == region or not rest:
                continue
            foreign = d.store(other).existing_users(rest)
            if foreign:
                rep.problems.append(
                    f"learned from {len(foreign)} user(s) homed in {other!r}: "
                    f"{_examples(sorted(foreign))}"
                )
                rest -= foreign
        if rest:
            rep.problems.append(
                f"learned from {len(rest)} user(s) homed in no region and never erased "
                f"here: {_examples(sorted(rest))}"
            )
        return learned

    @staticmethod
    def _check_placement(rep: VersionReport, manifest: Manifest) -> None:
        trained_on = manifest.lineage.get("trained_on")
        if trained_on is None:
            rep.notes.append("manifest does not say where it was trained (trained before it did)")
            return
        rep.trained_on = trained_on if isinstance(trained_on, dict) else None
        problem = placement_problem(rep.region, trained_on)
        if problem is not None:
            rep.problems.append(problem)

    def _check_snapshot(
        self,
        rep: VersionReport,
        manifest: Any,
        snaps: dict[int, _Snap],
        erasures: list[Any],
        expiries: list[int],
        learned: set[str],
    ) -> None:
        """Recompute what the training read; the users it read but did not learn from
        must be exactly those the manifest says it left out for lack of consent."""
        s = manifest.snapshot
        if s.event_count == 0:
            rep.snapshot = "verified" if s.max_seq == 0 else "mismatch"
            return
        got = snaps.get(s.max_seq)
        consent = manifest.lineage.get("consent")
        if got is not None and (
            got.count == s.event_count
            and got.min_seq == s.min_seq
            and got.events_sha256 == s.events_sha256
            and (
                hash_ids(got.users) == s.users_sha256  # trained before consent was honoured
                if consent is None
                else learned <= got.users
                and hash_ids(got.users - learned) == consent.get("excluded_sha256")
            )
        ):
            rep.snapshot = "verified"
            return
        read_at = int(manifest.lineage.get("read_started_ms", 0))
        later = [e for e in erasures if e.erased_at_ms >= read_at]  # all, when unknown
        expired = [t for t in expiries if t >= read_at]
        if later or expired:
            why = [f"{len(later)} erasure(s)"] if later else []
            why += [f"{len(expired)} deletion(s) by the retention limit"] if expired else []
            rep.snapshot = "not_recomputable"
            rep.notes.append(
                f"snapshot not recomputable: events may have been deleted since it was taken "
                f"({' and '.join(why)} in this region after the training read)"
            )
            return
        rep.snapshot = "mismatch"
        rep.problems.append(
            "event snapshot (count, seq range, content hash, users) does not match the "
            f"region's events up to seq {s.max_seq}"
        )
