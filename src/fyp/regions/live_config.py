"""Which edits of ``fyp.toml`` a serving process applies while it serves, and which wait
for a restart.

Applied live (:data:`LIVE_KEYS`): each region's ``[regions.R.policy]`` with all its
sub-tables (the moderation rules, ``consent`` defaults, ``moves``, ``retention``), and
``[experiments]``. Everything else is read once, when the process starts, into objects
built from it (the stores and served logs of the declared regions, in their order; the
feed's caches, scorer, candidate sources (``[feed.sources]``), re-ranker
(``[feed.rerank]``) and seen window; the input limits; the schedules' intervals; this
watch's own interval): an edit that changes any of it is refused whole
(:func:`restart_keys` names what), and the process keeps serving what it had.

A region's policy in force is on record in its audit log: each change a serving
process applies appends one ``policy.change`` entry (subject ``policy:<region>``)
whose ``sha256`` is the policy table's digest, written only if the region's latest
such entry names another digest (:func:`record_policy_changes`, in one store
transaction, whose writer lock makes several hosts applying one edit write it once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

from fyp.audit.log import AuditLog, canonical_json, now_ms, sql_store
from fyp.config import DeploymentConfig

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

LIVE_KEYS = ("regions.NAME.policy", "experiments")
"""What a serving process applies without a restart (docs/architecture.md, "Editing
fyp.toml while serving" lists the same: tests/regions/test_live_config.py checks)."""
POLICY_CHANGED = "policy.change"
ACTOR = "fyp-config-reload"
_SECTIONS = ("limits", "ranking", "erasure", "training", "moderation", "feed", "serving")


def plain(policy: dict[str, Any]) -> dict[str, Any]:
    """A policy table as JSON holds it (a TOML date in another capability's sub-table
    becomes its ISO text)."""
    loaded: dict[str, Any] = json.loads(json.dumps(policy, default=str))
    return loaded


def policy_digest(policy: dict[str, Any]) -> str:
    """The digest of a region's whole policy table (every sub-table included)."""
    return hashlib.sha256(canonical_json(plain(policy)).encode("utf-8")).hexdigest()[:16]


def restart_keys(old: DeploymentConfig, new: DeploymentConfig) -> list[str]:
    """The settings ``new`` changes that a serving process cannot apply live, as
    ``[table] key`` (empty: everything it changes applies live)."""
    out: list[str] = []
    if old.name != new.name:
        out.append("[deployment] name")
    if list(old.regions) != list(new.regions):
        added = [r for r in new.regions if r not in old.regions]
        gone = [r for r in old.regions if r not in new.regions]
        what = [f"added {', '.join(added)}"] if added else []
        what += [f"removed {', '.join(gone)}"] if gone else []
        out.append(f"[regions] ({'; '.join(what) or 'reordered'})")
    for name, cell in old.regions.items():
        other = new.regions.get(name)
        if other is None:
            continue
        for key in ("store", "backup_targets", "served_log"):
            if getattr(cell, key) != getattr(other, key):
                out.append(f"[regions.{name}] {key}")
    for section in _SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(before):
            was, now = getattr(before, f.name), getattr(after, f.name)
            if was == now:
                continue
            if dataclasses.is_dataclass(was):  # a sub-table: [feed.sources], [feed.rerank]
                out += [
                    f"[{section}.{f.name}] {g.name}"
                    for g in dataclasses.fields(was)
                    if getattr(was, g.name) != getattr(now, g.name)
                ]
            else:
                out.append(f"[{section}] {f.name}")
    return out


def live_changes(old: DeploymentConfig, new: DeploymentConfig) -> list[str]:
    """The live tables ``new`` changes: ``regions.R.policy`` (with the sub-keys that
    changed) and ``experiments``; for the log line of a reload."""
    out: list[str] = []
    for name, cell in new.regions.items():
        before = old.regions[name].policy if name in old.regions else {}
        if before != cell.policy:
            keys = sorted(k for k in {*before, *cell.policy} if before.get(k) != cell.policy.get(k))
            out.append(f"regions.{name}.policy ({', '.join(keys)})")
    if old.experiments != new.experiments:
        out.append("experiments")
    return out


def changed_policies(old: DeploymentConfig, new: DeploymentConfig) -> list[str]:
    """The regions whose policy table ``new`` changes."""
    return [
        name
        for name, cell in new.regions.items()
        if name in old.regions and old.regions[name].policy != cell.policy
    ]


def record_policy_changes(
    deployment: Deployment, old: DeploymentConfig, new: DeploymentConfig, config_sha256: str
) -> list[str]:
    """Append a ``policy.change`` entry to the audit log of each region whose policy
    ``new`` changes, unless its latest one already names the new digest (another host
    applied the same edit first). Returns the regions it wrote an entry for. Raises if
    a store cannot be written: the caller then applies nothing."""
    wrote: list[str] = []
    for region in changed_policies(old, new):
        policy, before = new.regions[region].policy, old.regions[region].policy
        details = {
            "previous": policy_digest(before),
            "changed": sorted(k for k in {*before, *policy} if before.get(k) != policy.get(k)),
            "config_sha256": config_sha256,
        }
        if _record_policy(deployment, region, policy, ACTOR, details):
            wrote.append(region)
    return wrote


FIRST_SEEN = "fyp-policy-found-in-force"
"""The actor of a ``policy.change`` entry written for a policy edited while no server ran."""


def _latest_policy_entry(log: AuditLog, region: str) -> dict[str, Any] | None:
    latest = None
    for entry in log.entries(subject=f"policy:{region}", action=POLICY_CHANGED):
        latest = {"sha256": entry.details.get("sha256"), "ts_ms": entry.ts_ms}
    return latest


def _record_policy(
    deployment: Deployment,
    region: str,
    policy: dict[str, Any],
    actor: str,
    details: dict[str, Any] | None,
) -> bool:
    """Append a ``policy.change`` entry for ``policy`` unless the region's latest one
    names its digest; ``details`` None: its ``previous`` is that latest one's digest.
    In one store transaction, whose writer lock makes several hosts write it once."""
    digest = policy_digest(policy)
    store = sql_store(deployment.store(region))
    log = AuditLog(store)
    with store.transaction():
        latest = _latest_policy_entry(log, region)
        if latest is not None and latest["sha256"] == digest:
            return False
        if details is None:
            details = {"previous": None if latest is None else latest["sha256"]}
            details["found_in_force"] = True
        details = {"sha256": digest, **details, "policy": plain(policy)}
        log.append(actor, POLICY_CHANGED, f"policy:{region}", details, now_ms())
    return True


def record_policy_in_force(deployment: Deployment) -> list[str]:
    """A ``policy.change`` entry, dated now, for each region whose policy in force is not
    the one its latest entry names (edited while no server ran, or never recorded): the
    time fyp first found it, which a deadline counted from a policy change can then be
    counted from (``fyp.toml``'s modification time, used before, moves with any touch).
    Called when a host starts its schedules and by ``fyp train``. Returns the regions."""
    return [
        region
        for region in deployment.regions
        if _record_policy(
            deployment, region, deployment.config.regions[region].policy, FIRST_SEEN, None
        )
    ]


def policy_in_force_since(deployment: Deployment, region: str, table: str) -> int | None:
    """Since when the region's ``[regions.R.policy.<table>]`` has been what it is now, by
    its ``policy.change`` entries (the first of the run that left it so; an edit of
    another table since does not move it); None when the latest entry does not name the
    policy in force (edited while no host with schedules ran)."""
    log = AuditLog(sql_store(deployment.store(region)))
    policy = deployment.config.regions[region].policy
    since: int | None = None
    current: object = None
    latest = None
    for entry in log.entries(subject=f"policy:{region}", action=POLICY_CHANGED):
        recorded = (entry.details.get("policy") or {}).get(table)
        if since is None or recorded != current:
            since, current = entry.ts_ms, recorded
        latest = entry.details.get("sha256")
    if latest != policy_digest(policy) or current != plain(policy).get(table):
        return None
    return since
