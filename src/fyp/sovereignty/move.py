"""Move a user's home region: ``fyp user move`` and ``POST /v1/users/{id}/move``.

A user who moves country moves their data with them, under the *source* region's policy
(``[regions.R.policy.moves] allow_to``, :mod:`fyp.sovereignty.move_policy`). A move is
journalled (:mod:`fyp.sovereignty.move_journal`) and runs in steps, each of which may
run again after a crash:

1. **copy** into the destination, in one transaction of its store: the profile (home
   region rewritten, served counter kept), every event (an id the destination already
   holds for another user is stored as ``<id>@moved-<hash>``, which no client id can
   be: see :func:`moved_event_id`), the held-out labels, and a ``move_user_in`` audit
   entry; then the served log's pages within the seen window, through
   ``Deployment.served_log`` (store or Redis). Nothing is removed yet: until step 2 the
   user has two homes (the router finds the source first, in config order).
2. **ledger**: the source's erasure ledger records the move (``kind: "move"``, the
   destination): from now on a restore of the source from an older backup removes the
   user again, as it erases an erased user. It is written only after the copy is
   committed, so it never names a user the destination lacks.
3. **remove** from the source with the erasure's own machinery
   (:meth:`fyp.sovereignty.erasure.Eraser.remove_from_store`): while the source's
   writers wait, whatever arrived there since the copy (a server with a stale route) is
   copied too, then the profile, events, labels and served pages go, the user's name is
   replaced wherever a row must stay, and a ``move_user_out`` entry is appended; then
   the served log's keys on Redis, the user's rows in data files (copied to the
   destination's file of the same name first), their vector and feed ranked ahead in the
   source's artifacts (their share of aggregates by a retrain before the deadline, as
   for an erasure), and SQLite's free pages.
4. the journal is removed and a receipt signed with the source's ``receipts`` key.

Uploads stay (the public catalogue names its creators wherever they live).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fyp.audit.log import AuditLog, SQLStore, sql_store
from fyp.catalog.blocks import MIRROR as BLOCKED_BY
from fyp.catalog.blocks import OWED as BLOCK_SIDES_OWED
from fyp.catalog.blocks import TABLE as BLOCKS
from fyp.catalog.follow_order import copy_actions
from fyp.catalog.follows import TABLE as FOLLOWS
from fyp.catalog.follows import creator_rows
from fyp.catalog.models import ELSEWHERE_NAME
from fyp.errors import (
    Conflict,
    FypError,
    InvalidRequest,
    MoveInProgress,
    StorageError,
    UnknownUser,
)
from fyp.events.schema import moved_event_id
from fyp.regions.deployment import Deployment
from fyp.sovereignty import served_data
from fyp.sovereignty.erasure import (
    _HOOKS,
    EraseHook,
    Eraser,
    Outcome,
    iso,
    now_ms,
    retrain_fields,
    sign_body,
)
from fyp.sovereignty.ledger import MOVE, ErasureLedger, user_pseudonym
from fyp.sovereignty.move_journal import (
    COPY,
    REMOVE,
    MoveJournal,
    MovesLock,
    pending_move_of,
    pending_moves,
    read_journal,
    remove_journal,
    write_journal,
)
from fyp.sovereignty.move_policy import check_move_allowed
from fyp.sovereignty.remnants import (
    person_names,
    region_files,
    scrub_file,
    without_names,
)
from fyp.storage import EventRow

CLI_ACTOR = "cli:fyp user move"
MAX_REASON = 500
log = logging.getLogger("fyp.sovereignty")
_EVENT_COLUMNS = (
    "event_id, user_id, video_id, type, ts_ms, watch_ms, watch_ratio, valid_play, "
    "long_play, short_play"
)


@dataclass(frozen=True)
class MoveReceipt:
    """What was moved, signed with the source region's ``receipts`` key. It names the
    user by the source's pseudonym, as an erasure receipt does."""

    move_id: str
    pseudonym: str
    source: str
    dest: str
    moved_at_ms: int
    moved: dict[str, int]  # what the destination holds of the user now, per kind
    removed: dict[str, int]  # what this run removed from the source, per kind
    artifacts: dict[str, list[str]]
    retrain_required: bool
    retrain_deadline_ms: int | None
    signature: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "move_id": self.move_id,
            "pseudonym": self.pseudonym,
            "from": self.source,
            "to": self.dest,
            "moved_at_ms": self.moved_at_ms,
            "moved_at": iso(self.moved_at_ms),
            "moved": dict(sorted(self.moved.items())),
            "removed": dict(sorted(self.removed.items())),
            "artifacts": self.artifacts,
            **retrain_fields(self.retrain_required, self.retrain_deadline_ms),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature}


@dataclass
class _Run:
    out: Outcome = field(default_factory=Outcome)


class Mover:
    """Moves users between the regions of one opened deployment."""

    def __init__(self, deployment: Deployment, hooks: list[EraseHook] | None = None) -> None:
        self.deployment = deployment
        self.hooks = hooks or []

    def move(self, user_id: str, dest: str, reason: str, actor: str = CLI_ACTOR) -> MoveReceipt:
        """Move ``user_id`` to ``dest`` (or finish their unfinished move there)."""
        d = self.deployment
        config = d.config
        why = reason.strip()
        if not why:
            raise InvalidRequest("a move needs a reason (the audit logs of both regions keep it)")
        if len(why) > MAX_REASON:
            raise InvalidRequest(f"the reason is over {MAX_REASON} characters")
        dest = config.region(dest).name  # UnknownRegion, with the declared list
        pending = pending_move_of(config, user_id)
        if pending is not None:
            if pending.dest != dest:
                raise MoveInProgress(
                    f"user {user_id!r} has an unfinished move from {pending.source!r} to "
                    f"{pending.dest!r}: finish it first ({pending.finish_command(config)})",
                    move_id=pending.move_id,
                    to=pending.dest,
                )
            return self.finish(pending)
        d.forget_route(user_id)
        source = d.home_region(user_id)  # UnknownUser
        if source == dest:
            raise Conflict(f"user {user_id!r} is already homed in {dest!r}", region=dest)
        check_move_allowed(config, source, dest)
        if d.store(dest).existing_users([user_id]):
            raise Conflict(
                f"user {user_id!r} is in the stores of both {source!r} and {dest!r} already "
                "(see `fyp residency check`): resolve that before moving them",
                user_id=user_id,
            )
        journal = MoveJournal("mv_" + uuid.uuid4().hex, user_id, source, dest, why, actor, now_ms())
        with MovesLock(config, source):
            write_journal(config, journal)
            return self._run(journal)

    def finish(self, journal: MoveJournal) -> MoveReceipt:
        """Finish a journalled move (a killed run's); every step may run again."""
        config = self.deployment.config
        with MovesLock(config, journal.source):
            path = journal.path(config)
            if not path.exists():
                raise MoveInProgress(
                    f"the move {journal.move_id} was finished by another process meanwhile",
                    move_id=journal.move_id,
                )
            return self._run(read_journal(path))

    # -- the steps ---------------------------------------------------------------------
    def _run(self, journal: MoveJournal) -> MoveReceipt:
        d = self.deployment
        user, source, dest = journal.user_id, journal.source, journal.dest
        run = _Run()
        if journal.step == COPY:
            in_source = bool(d.store(source).existing_users([user]))
            in_dest = bool(d.store(dest).existing_users([user]))
            if not in_source and not in_dest:  # erased meanwhile: nothing to move
                remove_journal(d.config, journal)
                raise UnknownUser(f"no user {user!r} to move (erased?)", user_id=user)
            if in_source:
                self._copy(journal)
            ledger = ErasureLedger(d.config, source)
            if not any(e.receipt_id == journal.move_id for e in ledger.entries()):
                ledger.record(user, journal.move_id, now_ms(), MOVE, dest)
            journal.step = REMOVE
            write_journal(d.config, journal)
        if not d.store(dest).existing_users([user]):
            if not d.store(source).existing_users([user]):  # erased meanwhile: nothing to do
                remove_journal(d.config, journal)
                raise UnknownUser(f"no user {user!r} to move (erased?)", user_id=user)
            # the copy is gone (the destination restored meanwhile?): keep the source's
            raise StorageError(
                f"the destination {dest!r} no longer holds user {user!r}: the source "
                f"{source!r} keeps them; restore the destination or move them again",
                move_id=journal.move_id,
            )
        self.remove_source(
            user,
            source,
            dest,
            journal.move_id,
            journal.started_at_ms,
            run.out,
            actor=journal.actor,
            reason=journal.reason,
        )
        remove_journal(d.config, journal)
        return self._receipt(journal, run.out)

    def _copy(self, journal: MoveJournal) -> None:
        """Step 1: the profile, events, labels and an audit entry into the destination in
        one transaction, then the served pages (the user must exist there first)."""
        d = self.deployment
        user_id, source, dest = journal.user_id, journal.source, journal.dest
        src, dst = d.store(source), d.store(dest)
        src.flush_served()
        with dst.transaction():
            if not dst.existing_users([user_id]):
                profile = src.get_user(user_id)
                if profile is None:
                    raise UnknownUser(f"no user {user_id!r} in {source!r}", user_id=user_id)
                # a new profile version, so no cache keyed on the old one is reused
                updated = max(now_ms(), profile.updated_at_ms + 1)
                dst.insert_user(
                    profile.model_copy(
                        update={
                            "home_region": dest,
                            "updated_at_ms": updated,
                            **self._outsiders_named(profile.attributes, profile.consents, dest),
                        }
                    )
                )
                marker = d.served_log(source).user_version(user_id)
                if marker:  # the served counter never goes back (see fyp.storage.served_logs)
                    sql_store(dst).execute(
                        "UPDATE users SET served_seq = ? WHERE user_id = ?", (marker[-1], user_id)
                    )
                AuditLog(dst).append(
                    journal.actor,
                    "move_user_in",
                    user_pseudonym(d.config, dest, user_id),
                    {"move_id": journal.move_id, "from": source, "reason": journal.reason},
                )
            self._copy_rows(user_id, source, dest)
        self._copy_served(user_id, source, dest)

    def _outsiders_named(
        self, attributes: dict[str, Any] | None, consents: dict[str, Any] | None, dest: str
    ) -> dict[str, Any]:
        """The profile's JSON fields with every person they name who does not live in
        ``dest`` (say the user's inviter, at home in the source) replaced by
        ``[elsewhere]``: the destination must not name other regions' users."""
        d = self.deployment
        out: dict[str, Any] = {}
        for name, value in (("attributes", attributes), ("consents", consents)):
            named = person_names(value)
            if not named:
                continue
            homed = d.store(dest).existing_users(named)
            if named - homed:
                out[name] = without_names(value, named - homed, ELSEWHERE_NAME)
        return out

    def _copy_rows(self, user_id: str, source: str, dest: str) -> int:
        """Events, labels, follows and blocks (either way) of the user in ``source`` that
        ``dest`` lacks (by id, or by the moved id when another user of ``dest`` holds it);
        returns the events added."""
        src, dst = sql_store(self.deployment.store(source)), self.deployment.store(dest)
        # blocks either way before the events: a copied follow event of a creator blocked
        # either way must add no follow there (the trigger reads both tables)
        self._copy_creator_rows(user_id, src, dst, (BLOCKS, BLOCKED_BY, BLOCK_SIDES_OWED))
        rows = [
            EventRow(*r[:7], *map(bool, r[7:10]))
            for r in src.query(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id=? ORDER BY seq", (user_id,)
            )
        ]
        if rows:
            wanted = [r.event_id for r in rows]
            held = dst.stored_events([*wanted, *(moved_event_id(e, user_id) for e in wanted)])
            fresh: list[EventRow] = []
            for row in rows:
                same = held.get(row.event_id)
                if same is not None and same.user_id == user_id:
                    continue  # copied by an earlier run
                if same is None:
                    fresh.append(row)
                elif moved_event_id(row.event_id, user_id) not in held:
                    fresh.append(row._replace(event_id=moved_event_id(row.event_id, user_id)))
            if fresh:
                dst.insert_events(fresh)
        for dataset, split, videos, stored_at_ms in src.query(
            "SELECT dataset, split, video_ids, stored_at_ms FROM labels WHERE user_id=?",
            (user_id,),
        ):  # with their time: a move does not restart the retention limit
            ids = json.loads(videos) if isinstance(videos, str) else list(videos)
            dst.insert_label_sets(str(dataset), str(split), {user_id: ids}, int(stored_at_ms))
        # follows: the copied events' triggers made those whose videos the destination
        # publishes; the rest (made through the API, or of videos it does not carry) too.
        # Each pair's latest action is the source's (an API unfollow has no event to
        # copy): a follow the copied events made that the source's record ended goes
        copy_actions(src, dst, user_id)
        self._copy_creator_rows(user_id, src, dst, (FOLLOWS,))
        return len(rows)

    @staticmethod
    def _copy_creator_rows(
        user_id: str, src: SQLStore, dst: object, tables: tuple[str, ...]
    ) -> None:
        for table in tables:
            sql_store(dst).executemany(
                f"INSERT OR IGNORE INTO {table} (user_id, creator_id, since_ms) VALUES (?, ?, ?)",
                [(user_id, f.creator_id, f.since_ms) for f in creator_rows(src, table, user_id)],
            )

    def _copy_served(self, user_id: str, source: str, dest: str) -> None:
        """Pages served in the seen window whose videos the destination's log lacks, in
        the order served and with their times (so they expire when they would have)."""
        d = self.deployment
        since = now_ms() - d.config.feed.seen_window_ms
        target = d.served_log(dest)
        seen = set(target.served_since(user_id, since))
        for page in served_data.user_pages(d, source, user_id, since):
            missing = [v for v in page.video_ids if v not in seen]
            if missing:
                target.record_served(user_id, missing, page.served_at_ms)
                seen.update(missing)
        target.flush_served()

    def remove_source(
        self,
        user_id: str,
        source: str,
        dest: str,
        move_id: str,
        t: int,
        out: Outcome,
        actor: str = CLI_ACTOR,
        reason: str = "",
        reapplied: bool = False,
    ) -> None:
        """Step 3: the user out of ``source`` as completely as an erasure, after copying
        to ``dest`` what arrived since the copy. Runs again harmlessly."""
        d = self.deployment
        eraser = Eraser(d)
        if d.store(source).existing_users([user_id]):
            sql_store(d.store(source)).prepare_erasure()  # SQLite: deleted bytes are zeroed

            def catch_up() -> None:  # the source's writers wait meanwhile
                with d.store(dest).transaction():
                    self._copy_rows(user_id, source, dest)
                self._copy_served(user_id, source, dest)

            details: dict[str, Any] = {"move_id": move_id, "to": dest}
            if reason:
                details["reason"] = reason
            eraser.remove_from_store(
                user_id,
                source,
                out,
                (
                    actor,
                    "reapply_move" if reapplied else "move_user_out",
                    user_pseudonym(d.config, source, user_id),
                    details,
                    None,
                ),
                before=catch_up,
                replacement=ELSEWHERE_NAME,  # where the source's rows name them
                creators=False,  # they still made their uploads; followers keep them
            )
        log_data = served_data.external(d).get(source)
        if log_data is not None:  # after the store, as an erasure (fyp.storage.redis_served_log)
            videos, keys = log_data.erase(user_id)
            out.add("served", videos)
            out.add("served_log_keys", keys)
        for path in region_files(d.config.region_dir(source)):
            copy_file_rows(d, path, source, dest, user_id)
            out.add("file_rows", scrub_file(path, user_id))
        eraser.scrub_artifacts(source, user_id, move_id, t, primary=True, out=out, creators=False)
        sql_store(d.store(source)).purge_deleted()
        d.forget_route(user_id)
        for hook in [*_HOOKS, *self.hooks]:
            hook(source, user_id)

    def _receipt(self, journal: MoveJournal, out: Outcome) -> MoveReceipt:
        d = self.deployment
        user, dest = journal.user_id, journal.dest
        sql = sql_store(d.store(dest))
        moved = {
            "users": 1,
            "events": int(sql.query("SELECT COUNT(*) FROM events WHERE user_id=?", (user,))[0][0]),
            "labels": sum(
                len(json.loads(v) if isinstance(v, str) else v)
                for (v,) in sql.query("SELECT video_ids FROM labels WHERE user_id=?", (user,))
            ),
            "served": len(
                d.served_log(dest).served_since(user, now_ms() - d.config.feed.seen_window_ms)
            ),
        }
        deadline = (
            journal.started_at_ms + Eraser(d).retrain_within_ms if out.retrain_required else None
        )
        receipt = MoveReceipt(
            move_id=journal.move_id,
            pseudonym=user_pseudonym(d.config, journal.source, user),
            source=journal.source,
            dest=dest,
            moved_at_ms=now_ms(),
            moved=moved,
            removed=out.removed,
            artifacts={"rewritten": out.rewritten, "deleted": out.deleted},
            retrain_required=out.retrain_required,
            retrain_deadline_ms=deadline,
        )
        signature = sign_body(d, journal.source, receipt.body())
        return MoveReceipt(**{**receipt.__dict__, "signature": signature})


def receipt_signature_ok(deployment: Deployment, raw: dict[str, Any]) -> bool:
    """True when a move receipt (as :meth:`MoveReceipt.to_dict` wrote it) was signed by
    its source region here and not altered."""
    import hmac

    source = raw.get("from")
    if source not in deployment.regions:
        return False
    body = {k: v for k, v in raw.items() if k != "signature"}
    return hmac.compare_digest(sign_body(deployment, str(source), body), str(raw.get("signature")))


def copy_file_rows(d: Deployment, path: Path, source: str, dest: str, user_id: str) -> int:
    """The user's rows of a CSV data file of ``source`` (held-out test sets) appended to
    the destination's file of the same name (made with the same header), unless there;
    returns the rows added."""
    if path.suffix != ".csv":
        return 0
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if "user_id" not in header:
            return 0
        col = header.index("user_id")
        rows = [r for r in reader if len(r) > col and r[col] == user_id]
    if not rows:
        return 0
    target = d.config.region_dir(dest) / path.relative_to(d.config.region_dir(source))
    held: set[tuple[str, ...]] = set()
    if target.is_file():
        with target.open(encoding="utf-8", newline="") as f:
            theirs = csv.reader(f)
            if next(theirs, []) != header:
                raise StorageError(
                    f"{target} has another header than {path}: cannot move the user's rows"
                )
            held = {tuple(r) for r in theirs}
    fresh = [r for r in rows if tuple(r) not in held]
    if fresh:
        target.parent.mkdir(parents=True, exist_ok=True)
        new = not target.is_file()
        with target.open("a", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if new:
                writer.writerow(header)
            writer.writerows(fresh)
            f.flush()
            os.fsync(f.fileno())
    return len(fresh)


# -- after a crash, and after a restore ----------------------------------------------------
def finish_moves(deployment: Deployment) -> list[str]:
    """Finish every unfinished move no other process is running (an open of the
    deployment calls this); a move that fails is logged and left for the next try
    (``fyp residency check`` reports it). Returns the move ids finished."""
    done: list[str] = []
    for journal in list(pending_moves(deployment.config)):
        try:
            with MovesLock(deployment.config, journal.source, wait=False):
                path = journal.path(deployment.config)
                if path.exists():
                    Mover(deployment)._run(read_journal(path))
                    done.append(journal.move_id)
        except MoveInProgress:
            continue  # its owner is running it
        except FypError as exc:
            log.warning("could not finish the move %s: %s", journal.move_id, exc.message)
    return done


def reapply_moves(deployment: Deployment, region: str, named: set[str]) -> list[str]:
    """Remove again from ``region`` every user named there whom its ledger records as
    moved away (a restore of an older backup brought them back), unless they have since
    moved back in, or live nowhere else (then they stay: never a user without a home).
    Returns the move ids re-applied."""
    from fyp.sovereignty.ledger import moved_into

    ledger = ErasureLedger(deployment.config, region)
    mover = Mover(deployment)
    done: list[str] = []
    for user_id in sorted(ledger.matching(named, MOVE)):
        entry = ledger.find(user_id)
        if entry is None or entry.kind != MOVE:
            continue  # erased since: the erasure's re-application covers it
        if moved_into(deployment.config, user_id, region, entry.erased_at_ms):
            continue
        deployment.forget_route(user_id)
        homes = [
            r
            for r in deployment.regions
            if r != region and deployment.store(r).existing_users([user_id])
        ]
        if not homes:
            log.warning(
                "region %s: its ledger records move %s away, but no other region holds the "
                "user: they stay here",
                region,
                entry.receipt_id,
            )
            continue
        mover.remove_source(
            user_id,
            region,
            homes[0],
            entry.receipt_id,
            entry.erased_at_ms,
            Outcome(),
            actor="system:move",
            reapplied=True,
        )
        done.append(entry.receipt_id)
    return done
