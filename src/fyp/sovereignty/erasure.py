"""Erase a user: every row, file and model row about them, and a signed receipt.

``DELETE /v1/users/{id}`` (and :func:`reapply_erasures` after a restore) run
:meth:`Eraser.erase`, which in one operation:

1. records the erasure in the home region's ledger (fsync'd; it names the user by
   pseudonym and survives restores),
2. deletes the profile, events, labels, served log and experiment exposures in the home
   store (and the served log's keys on Redis, when the region keeps it there), withdraws the
   user's uploads from every region's catalogue, and replaces the user's id wherever a
   row must stay (a review job they appealed) — with SQLite's ``secure_delete`` on and
   the WAL truncated afterwards, so deleted bytes do not linger in the files,
3. removes the user's rows from held-out data files under ``regions/<r>/``,
4. writes a new artifact version without the user's vector and id and makes it current;
   older versions that name the user are deleted (models are never edited in place),
5. appends an ``erase_user`` entry (by pseudonym) to the home region's audit log,
6. tells in-process caches (:func:`add_erase_hook`) to drop the user.

What the user contributed to aggregates (item vectors, co-engagement, popularity) is
removed by a retrain within ``[erasure] retrain_within_hours``: the rewritten artifact
lists the receipt as pending with its deadline, and ``fyp erasure process`` retrains
(:mod:`fyp.sovereignty.erasure_process`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fyp.audit.log import AuditLog, Record, canonical_json, sql_store
from fyp.catalog.models import ERASED_NAME
from fyp.errors import ConfigError, StorageError, UnknownUser
from fyp.filelock import open_locked, unlock
from fyp.models.artifacts import (
    Manifest,
    current_version,
    hash_ids,
    models_dir,
    new_version,
    read_arrays,
    read_manifest,
    remove_version,
    write_artifact,
)
from fyp.regions.deployment import Deployment
from fyp.sovereignty import served_data
from fyp.sovereignty.erasure_journal import Erasing, ErasureMark
from fyp.sovereignty.ledger import MOVE, ErasureLedger, missing_from_ledger, user_pseudonym
from fyp.sovereignty.region_keys import region_secret
from fyp.sovereignty.remnants import (
    artifacts_naming,
    delete_created_videos,
    file_user_ids,
    region_files,
    scrub_file,
    scrub_store,
    without_user,
)
from fyp.storage.served_logs import ExternalServedLog

log = logging.getLogger(__name__)
EraseHook = Callable[[str, str], None]
"""Called as ``hook(region, user_id)`` after a user is erased (drop in-process caches)."""

_HOOKS: list[EraseHook] = []
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
RECEIPT_KEY = "receipts"
AUDIT_ACTOR = "system:erasure"


def add_erase_hook(hook: EraseHook) -> Callable[[], None]:
    """Register a callback run after every erasure in this process; returns its remover."""
    _HOOKS.append(hook)
    return lambda: _HOOKS.remove(hook) if hook in _HOOKS else None


@contextmanager
def region_models_lock(region_dir: Path) -> Iterator[None]:
    """One artifact writer per region across threads and processes (server and CLI):
    two erasures rewriting the same current artifact would resurrect each other's user."""
    root = models_dir(region_dir)
    root.mkdir(parents=True, exist_ok=True)
    key = str(root)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        fd = open_locked(root / ".lock")
        try:
            yield
        finally:
            unlock(fd)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


# -- receipts --------------------------------------------------------------------
def retrain_fields(required: bool, deadline_ms: int | None) -> dict[str, Any]:
    """What a receipt (an erasure's, a move's) says of the retrain it waits for."""
    return {
        "retrain_required": required,
        "retrain_deadline_ms": deadline_ms,
        "retrain_deadline": iso(deadline_ms) if deadline_ms is not None else None,
    }


@dataclass(frozen=True)
class Receipt:
    """What was erased, signed with the region's ``receipts`` key so it can be checked
    later. It names the user by pseudonym: a stored receipt is not itself their data."""

    receipt_id: str
    pseudonym: str
    region: str
    erased_at_ms: int
    removed: dict[str, int]
    artifacts: dict[str, list[str]]
    retrain_required: bool
    retrain_deadline_ms: int | None
    reapplied: bool = False
    signature: str = ""
    served_log: str | None = None  # the backend of the served log erased beside the store

    def body(self) -> dict[str, Any]:
        """Everything the signature covers."""
        return {
            "receipt_id": self.receipt_id,
            "pseudonym": self.pseudonym,
            "region": self.region,
            "erased_at_ms": self.erased_at_ms,
            "erased_at": iso(self.erased_at_ms),
            "removed": dict(sorted(self.removed.items())),
            "artifacts": self.artifacts,
            **retrain_fields(self.retrain_required, self.retrain_deadline_ms),
            "reapplied": self.reapplied,
            # only when the served log is on a server of its own (older receipts have none)
            **({"served_log": self.served_log} if self.served_log else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        # served_log always, null when in the store (signed only when set: see body)
        return {**self.body(), "served_log": self.served_log, "signature": self.signature}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Receipt:
        return cls(
            receipt_id=str(raw["receipt_id"]),
            pseudonym=str(raw["pseudonym"]),
            region=str(raw["region"]),
            erased_at_ms=int(raw["erased_at_ms"]),
            removed={str(k): int(v) for k, v in raw["removed"].items()},
            artifacts={str(k): [str(x) for x in v] for k, v in raw["artifacts"].items()},
            retrain_required=bool(raw["retrain_required"]),
            retrain_deadline_ms=(
                None if raw["retrain_deadline_ms"] is None else int(raw["retrain_deadline_ms"])
            ),
            reapplied=bool(raw.get("reapplied", False)),
            signature=str(raw.get("signature", "")),
            served_log=None if raw.get("served_log") is None else str(raw["served_log"]),
        )


def sign_body(deployment: Deployment, region: str, body: dict[str, Any]) -> str:
    """The HMAC of a receipt's body with the region's ``receipts`` key (erasure and move
    receipts are signed alike)."""
    key = region_secret(deployment.config, region, RECEIPT_KEY)
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


def sign_receipt(deployment: Deployment, receipt: Receipt) -> Receipt:
    return replace(receipt, signature=sign_body(deployment, receipt.region, receipt.body()))


def receipt_signature_ok(deployment: Deployment, receipt: Receipt) -> bool:
    """True when the receipt was signed by this deployment's region and not altered."""
    if receipt.region not in deployment.regions:
        return False
    expected = sign_receipt(deployment, receipt).signature
    return hmac.compare_digest(expected, receipt.signature)


# -- the erasure -------------------------------------------------------------------
@dataclass
class Outcome:
    removed: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("users", "events", "labels", "served"), 0)
    )
    rewritten: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    retrain_required: bool = False

    def add(self, key: str, n: int) -> None:
        if n:
            self.removed[key] = self.removed.get(key, 0) + n


class Eraser:
    """Erases users from one opened deployment."""

    def __init__(self, deployment: Deployment, hooks: list[EraseHook] | None = None) -> None:
        self.deployment = deployment
        self.hooks = hooks or []

    @property
    def retrain_within_ms(self) -> int:
        return int(self.deployment.config.erasure.retrain_within_hours * 3_600_000)

    def erase(self, user_id: str, actor: str = AUDIT_ACTOR) -> Receipt:
        """Erase a user homed anywhere in the deployment; UnknownUser if there is none.
        ``actor`` is who asked, for the audit log (``key:<id>`` over HTTP, the command
        line's ``fyp erasure erase``)."""
        region = self.deployment.homed_region(user_id)  # moved or erased elsewhere since?
        receipt_id = "er_" + uuid.uuid4().hex
        t = now_ms()
        # marked under way, then the ledger first: a crash half-way leaves a mark the next
        # open finishes (fyp.sovereignty.erasure_journal) and a ledger entry that restores
        # and `fyp erasure process` re-apply, never a half-erased user nobody knows about
        with ErasureMark(self.deployment.config, Erasing(user_id, region, receipt_id, t)):
            ErasureLedger(self.deployment.config, region).record(user_id, receipt_id, t)
            return self._erase(user_id, region, receipt_id, t, reapplied=False, actor=actor)

    def reapply(
        self, user_id: str, region: str, receipt_id: str, erased_at_ms: int | None = None
    ) -> Receipt:
        """Erase again a user the ledger already records (after a restore or a crash).
        Given the original ``erased_at_ms``, the retrain deadline stays what the first
        erasure promised: a late restore does not stretch it."""
        t = now_ms() if erased_at_ms is None else erased_at_ms
        with ErasureMark(self.deployment.config, Erasing(user_id, region, receipt_id, t)):
            return self._erase(user_id, region, receipt_id, t, reapplied=True)

    def _erase(
        self,
        user_id: str,
        region: str,
        receipt_id: str,
        t: int,
        reapplied: bool,
        actor: str = AUDIT_ACTOR,
    ) -> Receipt:
        d = self.deployment
        out = Outcome()
        pseudonym = user_pseudonym(d.config, region, user_id)
        uploads: set[str] = set()
        for r in d.regions:  # uploads first: their rows name the user as creator
            store = d.store(r)
            sql_store(store).prepare_erasure()  # SQLite: deleted bytes are zeroed
            with store.transaction():
                uploads.update(delete_created_videos(store, user_id))
        out.add("videos", len(uploads))
        self.remove_from_store(
            user_id,
            region,
            out,
            (
                actor,
                "reapply_erasure" if reapplied else "erase_user",
                pseudonym,
                {"receipt_id": receipt_id},
                now_ms() if reapplied else t,
            ),
        )
        # after the store: a page recorded meanwhile is deleted here or by its recorder
        videos, keys, unreachable = served_data.erase_everywhere(d, user_id)
        out.add("served", videos)
        out.add("served_log_keys", keys)
        for r in d.regions:
            if r != region:
                store = d.store(r)
                with store.transaction():
                    for key, n in scrub_store(store, user_id).items():
                        out.add(key, n)
            for path in region_files(d.config.region_dir(r)):
                out.add("file_rows", scrub_file(path, user_id))
        for r in d.regions:
            self.scrub_artifacts(r, user_id, receipt_id, t, primary=r == region, out=out)
        held: StorageError | None = None
        for r in d.regions:
            try:
                sql_store(d.store(r)).purge_deleted()
            except StorageError as exc:  # a WAL kept busy: the caches still forget the user
                held = exc
        d.forget_route(user_id)
        for hook in [*_HOOKS, *self.hooks]:
            hook(region, user_id)
        if unreachable is not None:  # everything else is erased; the ledger holds the rest
            raise StorageError(
                f"user erased from every store, model and file, but not yet from a served "
                f"log: {unreachable.message}. The erasure is recorded: run `fyp erasure "
                "process` once the server answers",
                region=region,
            )
        if held is not None:
            raise StorageError(
                f"user erased from every store, model and file, but {held.message}. The "
                "erasure is recorded; `fyp erasure verify` reports the bytes until the "
                "server's checkpointer or `fyp erasure process` empties the WAL",
                region=region,
            )
        home_log = d.served_log(region)
        receipt = Receipt(
            receipt_id=receipt_id,
            pseudonym=pseudonym,
            region=region,
            erased_at_ms=t,
            removed=out.removed,
            artifacts={"rewritten": out.rewritten, "deleted": out.deleted},
            retrain_required=out.retrain_required,
            retrain_deadline_ms=t + self.retrain_within_ms if out.retrain_required else None,
            reapplied=reapplied,
            served_log=home_log.kind if isinstance(home_log, ExternalServedLog) else None,
        )
        return sign_receipt(d, receipt)

    def remove_from_store(
        self,
        user_id: str,
        region: str,
        out: Outcome,
        audit: Record,
        before: Callable[[], None] | None = None,
        replacement: str = ERASED_NAME,
        creators: bool = True,
    ) -> None:
        """In one transaction of ``region``'s store: delete the user's profile, events,
        labels, served pages, experiment exposures, follows (and the record of each
        follow or unfollow) and blocks (either way),
        replace their name where a row must stay, and append ``audit`` (actor, action,
        subject, details, time) to the region's log. Where a row must stay, the user's
        name becomes ``replacement``.
        ``before`` runs first inside the transaction (a move copies what arrived since
        its copy while the region's writers wait). ``creators=False`` (a move) keeps
        the creator columns naming the user: uploads, others' follows and blocks."""
        home = self.deployment.store(region)
        home.flush_served()  # pages still buffered are counted, then deleted with the rest
        with home.transaction():
            if before is not None:
                before()
            served, exposures, follows, actions, blocks, blocked_by, owed = sql_store(home).query(
                "SELECT (SELECT COUNT(*) FROM served WHERE user_id=?1), "
                "(SELECT COUNT(*) FROM experiment_exposures WHERE user_id=?1), "
                "(SELECT COUNT(*) FROM follows WHERE user_id=?1), "
                "(SELECT COUNT(*) FROM follow_actions WHERE user_id=?1), "
                "(SELECT COUNT(*) FROM blocks WHERE user_id=?1), "
                "(SELECT COUNT(*) FROM blocked_by WHERE user_id=?1), "
                "(SELECT COUNT(*) FROM block_mirrors_owed WHERE user_id=?1)",
                (user_id,),
            )[0]
            # exposures, follows and blocks go with the profile (cascade)
            counts = home.delete_user(user_id)
            out.add("users", counts.users)
            out.add("events", counts.events)
            out.add("labels", counts.labels)
            out.add("served", int(served))
            out.add("experiment_exposures", int(exposures))
            out.add("follows", int(follows))
            out.add("follow_actions", int(actions))
            out.add("blocks", int(blocks))
            out.add("blocked_by", int(blocked_by))
            out.add("block_mirrors_owed", int(owed))
            for key, n in scrub_store(home, user_id, {"users"}, replacement, creators).items():
                out.add(key, n)
            AuditLog(home).append(*audit)

    def scrub_artifacts(
        self,
        region: str,
        user_id: str,
        receipt_id: str,
        t: int,
        primary: bool,
        out: Outcome,
        creators: bool = True,
    ) -> None:
        region_dir = self.deployment.config.region_dir(region)
        with region_models_lock(region_dir):
            naming = artifacts_naming(region_dir, user_id, creators)
            if not naming:
                return
            current = current_version(region_dir)
            for version in sorted(naming):
                learned = {"user_ids", "lineage_user_ids"} & set(naming[version])
                if version == current:
                    new = self._rewrite(
                        region_dir, version, user_id, receipt_id, t, learned, out, creators
                    )
                    out.rewritten.append(f"{region}/{version}->{new}")
                else:
                    remove_version(region_dir, version)
                    out.deleted.append(f"{region}/{version}")
                out.retrain_required |= bool(learned) and primary

    def _rewrite(
        self,
        region_dir: Path,
        version: str,
        user_id: str,
        receipt_id: str,
        t: int,
        learned: set[str],
        out: Outcome,
        creators: bool = True,
    ) -> str:
        """A new version of the current artifact without the user, made current."""
        manifest = read_manifest(region_dir, version)
        arrays, removed = without_user(read_arrays(region_dir, version), user_id, creators)
        out.add("artifact_rows", removed)
        lineage = dict(manifest.lineage)
        lineage["rewritten_from"] = version
        lineage["erasures"] = [*lineage.get("erasures", []), receipt_id]
        if learned:  # the user's share of aggregates stays until a retrain
            pending = dict(lineage.get("pending_retrain", {}))
            pending[receipt_id] = t + self.retrain_within_ms
            lineage["pending_retrain"] = pending
        learned_from = arrays.get("lineage_user_ids", arrays["user_ids"])
        snapshot = replace(
            manifest.snapshot,
            users_sha256=hash_ids(str(u) for u in learned_from),
            user_count=len(np.unique(learned_from)),
        )
        fresh = Manifest(
            region=manifest.region,
            version=new_version(),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            snapshot=snapshot,
            params=manifest.params,
            metrics=manifest.metrics,
            format=manifest.format,
            lineage=lineage,
        )
        write_artifact(region_dir, fresh, arrays)  # then current, atomically
        remove_version(region_dir, version)
        out.deleted.append(f"{region_dir.name}/{version}")
        return fresh.version


def recreated(deployment: Deployment, user_id: str, erased_at_ms: int) -> bool:
    """True when the id belongs to a new account made after the erasure (ids may be
    reused), not to a row a restore brought back: that user must not be erased."""
    home = deployment.locate_users([user_id], fresh=True).get(user_id)  # maybe elsewhere now
    user = deployment.store(home).get_user(user_id) if home else None
    return user is not None and user.created_at_ms > erased_at_ms


def reapply_erasures(deployment: Deployment, region: str) -> list[str]:
    """Erase again every user that ``region``'s store, data files or artifacts name
    although some region's ledger records them as erased.

    Called after a restore (an older backup brings erased users back) and by
    ``fyp erasure process``; adds no ledger entry. Every ledger is asked, not only the
    region's own: a user homed elsewhere may come back in this region's data as a
    video's creator or in a person field of another user's attributes. A new account
    created under an erased id after the erasure is left alone. Returns the receipt ids
    re-applied."""
    from fyp.sovereignty.region_data import store_file
    from fyp.sovereignty.residency_readers import server_names, sqlite_names

    named: set[str] = set()
    try:  # every person field of the store, its users table among them
        for _, _, values in sqlite_names(store_file(deployment.config, region)):
            named.update(values)
    except ConfigError:  # on a database server: the same fields, read through the store
        for _, _, values in server_names(sql_store(deployment.store(region))):
            named.update(values)
    for path in region_files(deployment.config.region_dir(region)):
        named |= file_user_ids(path)
    named |= served_data.named_users(deployment, region)  # a served log on Redis
    eraser = Eraser(deployment)
    done: list[str] = []
    for home in deployment.regions:
        ledger = ErasureLedger(deployment.config, home)
        # what the hash-chained log records and the ledger lost (cut by hand) counts too
        lost = missing_from_ledger(deployment.config, deployment.store(home), home)
        if lost:
            log.warning(
                f"region {home!r}: its erasure ledger lacked {len(lost)} erasure(s) or "
                f"move(s) its audit log records (entries {', '.join(str(q) for q, _ in lost)}):"
                " written back"
            )
            ledger.write_back(e for _, e in lost)
        for user_id in sorted(ledger.matching(named)):
            entry = ledger.find(user_id)
            if entry is None:  # pragma: no cover - matching() just found it
                raise UnknownUser(f"ledger lost {user_id!r}")
            if entry.kind == MOVE:  # moved away, alive elsewhere: below, for this region
                continue
            if recreated(deployment, user_id, entry.erased_at_ms):
                continue
            deployment.forget_route(user_id)
            eraser.reapply(user_id, home, entry.receipt_id, entry.erased_at_ms)
            done.append(entry.receipt_id)
    from fyp.sovereignty.erasure_process import strip_erased  # it builds on this module
    from fyp.sovereignty.move import reapply_moves

    done += reapply_moves(deployment, region, named)  # users moved away from this region
    done += strip_erased(deployment, region)
    return list(dict.fromkeys(done))
