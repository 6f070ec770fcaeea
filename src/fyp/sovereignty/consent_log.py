"""Consent changes on record, and what a model may have learned from.

**The record.** Every change of a user's recorded consent to a key of
``fyp.regions.consent`` (``PATCH /v1/users/{id}``, or a new user created with a value)
appends ``consent.change`` to the home region's audit log, in the transaction that
changes the profile: the subject is the user's pseudonym (as for erasures), the details
the key, the effective value before and after (``old``: null for a new user) and the
values the user recorded before and after (null: none, the region's default applies).
Nothing else about the user.

**The check** (:func:`check_consent`, part of ``fyp lineage verify``). A training run
records in its manifest the audit log's head when it read the consents
(``lineage.consent.audit_seq``) and the policy in force. Each learned user's recorded
value at that instant is their value now, rolled back through their ``consent.change``
entries after it; their effective value then is that, or the recorded policy's
default. A learned user whose effective value then was false is a violation. A user who
withdrew after it (true then, false now) must be out of the *live* model before
``[erasure] retrain_within_hours`` after the withdrawal: until then "pending retrain,
due by ...", after it a problem. ``fyp train --if-changed`` (``fyp serve``'s training
schedule) retrains a region whose consents changed since its live model
(:func:`training_consent_changes`), or whose consent policy did.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fyp.audit.log import AuditEntry, AuditLog, Record
from fyp.config import CONFIG_FILE
from fyp.regions.consent import (
    KEYS,
    MODEL_TRAINING,
    TABLE,
    ConsentPolicy,
    consent_policy,
    effective,
    recorded_values,
)
from fyp.regions.deployment import Deployment
from fyp.sovereignty.ledger import user_pseudonym
from fyp.storage import Store

ACTION = "consent.change"
EXAMPLES = 5


def consent_records(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    policy: ConsentPolicy,
    created: bool = False,
) -> list[dict[str, Any]]:
    """The details of one entry per consent key whose recorded value changed (for a new
    user, per key given)."""
    out = []
    for key in KEYS:
        old = (before or {}).get(key)
        new = (after or {}).get(key)
        if old == new:
            continue
        out.append(
            {
                "key": key,
                "old": None if created else effective(before, policy, key),
                "new": effective(after, policy, key),
                "old_recorded": old,
                "new_recorded": new,
            }
        )
    return out


def record_consent_changes(
    deployment: Deployment,
    region: str,
    user_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    actor: str,
    created: bool = False,
) -> list[AuditEntry]:
    """Append the user's consent changes to ``region``'s audit log (joining the caller's
    transaction, so the profile and its record change together)."""
    policy = consent_policy(deployment.config, region)
    records = consent_records(before, after, policy, created)
    if not records:
        return []
    subject = user_pseudonym(deployment.config, region, user_id)
    log = AuditLog(deployment.store(region))
    return log.append_many([(actor, ACTION, subject, r, None) for r in records])


def training_consent_changes(store: Store, audit_seq: int) -> int:
    """How many changes of consent to model training the store's audit log holds after
    ``audit_seq`` (a training run's read)."""
    entries = AuditLog(store).entries(action=ACTION, after_seq=audit_seq)
    return sum(1 for e in entries if e.details.get("key") == MODEL_TRAINING)


def reapply_consents(deployment: Deployment, region: str, since: Sequence[Record]) -> int:
    """After a restore: the consents users recorded after the backup (``since``: the
    carried audit entries, in order) stand again on the restored profiles, so a restore
    never brings back a consent that was withdrawn. Returns the profiles changed; running
    it again changes nothing."""
    from fyp.catalog.models import now_ms

    last: dict[str, dict[str, Any]] = {}  # pseudonym -> key -> value recorded last
    for _, action, subject, details, _ in since:
        if action == ACTION and details is not None and details.get("key") in KEYS:
            last.setdefault(subject, {})[str(details["key"])] = details.get("new_recorded")
    if not last:
        return 0
    store = deployment.store(region)
    changed = 0
    with store.transaction():
        for user in store.iter_users():
            wanted = last.get(user_pseudonym(deployment.config, region, user.user_id))
            if wanted is None:
                continue
            consents = {**(user.consents or {}), **wanted}
            consents = {k: v for k, v in consents.items() if v is not None}
            if consents != (user.consents or {}):
                store.update_user(
                    user.model_copy(update={"consents": consents, "updated_at_ms": now_ms()})
                )
                changed += 1
    return changed


def withdrawal_deadline(deployment: Deployment, region: str) -> int | None:
    """When the region's live model must be retrained by for the withdrawals of consent
    to model training since it read the store (the earliest withdrawal, or a policy
    turned opt-in since, plus ``[erasure] retrain_within_hours``); None if none is due.
    Cheap (no pseudonyms): it counts withdrawals of users it may not have learned from."""
    from fyp.models.artifacts import current_version, read_manifest

    region_dir = deployment.config.region_dir(region)
    version = current_version(region_dir)
    if version is None:
        return None
    recorded = read_manifest(region_dir, version).lineage.get("consent")
    if recorded is None:  # trained before consent was honoured: `--if-changed` retrains it
        return None
    window = int(deployment.config.erasure.retrain_within_hours * 3_600_000)
    starts: list[int] = []
    if recorded.get("policy") != consent_policy(deployment.config, region).training_record():
        starts.append(policy_since(deployment, region))
    entries = AuditLog(deployment.store(region)).entries(
        action=ACTION, after_seq=int(recorded.get("audit_seq", 0))
    )
    starts += [
        e.ts_ms
        for e in entries
        if e.details.get("key") == MODEL_TRAINING and e.details.get("new") is False
    ]
    return min(starts) + window if starts else None


def policy_since(deployment: Deployment, region: str) -> int:
    """Since when the region's consent policy has been the one in force: from its audit
    log's ``policy.change`` entries (a host starting its schedules, or ``fyp train``,
    records one found edited), else, with no entry naming it, ``fyp.toml``'s modification
    time, which a touch of the file moves (an audit review postponed a deadline so)."""
    from fyp.regions.live_config import policy_in_force_since

    since = policy_in_force_since(deployment, region, TABLE)
    if since is not None:
        return since
    return int((deployment.config.root / CONFIG_FILE).stat().st_mtime * 1000)


@dataclass
class ConsentFindings:
    """What the consent check found for one artifact version."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)  # {"users", "due_ms"}
    status: str = "verified"  # verified | pending | violation | unchecked


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _examples(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    shown = ", ".join(ids[:EXAMPLES])
    return shown + (f" and {len(ids) - EXAMPLES} more" if len(ids) > EXAMPLES else "")


def check_consent(
    deployment: Deployment,
    region: str,
    lineage: Mapping[str, Any],
    learned: set[str],
    live: bool,
    now_ms: int,
) -> ConsentFindings:
    """Whether the artifact learned only from users whose effective consent to model
    training was true at its snapshot, and whether withdrawals since are retrained in
    time (a problem only for the live version: older ones are not served)."""
    out = ConsentFindings()
    recorded_now = recorded_values(deployment.store(region), MODEL_TRAINING)
    policy_now = consent_policy(deployment.config, region)
    consent = lineage.get("consent")
    if consent is None:  # trained before consent was honoured: it learned from everyone read
        policy_then = ConsentPolicy()
        out.notes.append("trained before training honoured consent: checked against the log")
    else:
        policy_then = ConsentPolicy(dict(consent.get("policy", {})))
    audit_seq = int(consent.get("audit_seq", 0)) if consent else None
    read_ms = int(lineage.get("read_started_ms", 0))

    def after(e: AuditEntry) -> bool:
        return e.seq > audit_seq if audit_seq is not None else e.ts_ms >= read_ms

    names = {user_pseudonym(deployment.config, region, u): u for u in learned}
    log = AuditLog(deployment.store(region))
    since: dict[str, list[AuditEntry]] = {}
    for e in log.entries_of(list(names), action=ACTION):
        if e.details.get("key") == MODEL_TRAINING and after(e):
            since.setdefault(names[e.subject], []).append(e)
    # since when the region's consent policy is what it is now
    config_ms = policy_since(deployment, region)
    without: list[str] = []
    withdrawn: dict[str, int] = {}  # user: when their withdrawal took effect
    for user in learned:
        changes = since.get(user, [])
        then = {MODEL_TRAINING: changes[0].details.get("old_recorded") if changes else None}
        if not changes:
            then[MODEL_TRAINING] = recorded_now.get(user)
        if not effective(then, policy_then, MODEL_TRAINING):
            without.append(user)
            continue
        if not effective(then, policy_now, MODEL_TRAINING) and config_ms <= read_ms:
            without.append(user)  # trained under another policy than the one in force then
            continue
        if effective({MODEL_TRAINING: recorded_now.get(user)}, policy_now, MODEL_TRAINING):
            continue
        at = config_ms  # without a withdrawal on record: the region's default turned false
        for e in changes:  # the withdrawal that stands: the last change to false
            if e.details.get("new") is False and at == config_ms:
                at = e.ts_ms
            elif e.details.get("new") is True:
                at = config_ms
        withdrawn[user] = at
    if without:
        out.status = "violation"
        out.problems.append(
            f"learned from {len(without)} user(s) whose consent to model training was "
            f"false at its snapshot (under the policy in force): {_examples(without)}"
        )
    if not withdrawn:
        return out
    window = int(deployment.config.erasure.retrain_within_hours * 3_600_000)
    by_due: dict[int, list[str]] = {}
    for user, at in withdrawn.items():
        by_due.setdefault(at + window, []).append(user)
    for due, users in sorted(by_due.items()):
        out.pending.append({"users": len(users), "due_ms": due})
        what = (
            f"{len(users)} user(s) learned from withdrew consent to model training since, "
            "or lack it under the region's consent policy now"
        )
        if not live:
            out.notes.append(f"{what} (not served; a retrain due by {_iso(due)} replaces it)")
        elif due < now_ms:
            out.problems.append(
                f"{what}, and its retrain was due by {_iso(due)}: still served past the "
                f"deadline ({_examples(users)}; run `fyp train DIR --region {region}`)"
            )
            out.status = "violation"
        else:
            out.notes.append(f"{what}: pending retrain, due by {_iso(due)}")
    if out.status == "verified":
        out.status = "pending"
    return out
