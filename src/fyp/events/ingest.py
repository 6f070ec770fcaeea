"""Event ingestion: validate, route to the home region, label, store exactly once.

A batch is judged event by event: an invalid event is rejected with its reason while
the valid ones beside it are stored. So is an event whose user is outside the regions
the caller's API key reaches (``forbidden``, the same 403 a single event gets): a
gateway may batch users of several regions, and its in-scope events still land.
Nothing of a rejected event is written. An ``event_id`` already stored (or repeated
inside the batch) is reported as a duplicate and never stored twice. Subscribers (e.g.
the feed's real-time user state) are told about every stored event after it is committed.

Each region's events are written in a transaction of their own. A region whose store
fails (full, locked past the busy timeout, gone: ``fyp.storage.base.unavailable``) has
its events rejected with a ``storage_error`` (503: retry them) while the other regions'
are stored; when nothing of the batch was stored, the batch is refused whole with that
``StorageError`` instead. A retry stores exactly the missing events, the rest being
duplicates.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from fyp.config import DAY_MS, DeploymentConfig
from fyp.errors import (
    AlreadyExists,
    ClientError,
    Forbidden,
    FypError,
    PayloadTooLarge,
    ResidencyViolation,
    StorageError,
    UnknownUser,
    UnknownVideo,
    ValidationFailed,
)
from fyp.events.schema import EventIn, EventType, moved_event_id, play_labels, to_ms
from fyp.regions.deployment import Deployment
from fyp.sovereignty.retention import retention_policy
from fyp.storage import EventRow
from fyp.storage.base import unavailable

Status = Literal["stored", "duplicate", "rejected"]
EARLIEST_TS_MS = 946_684_800_000  # 2000-01-01: older timestamps are clock bugs
WATCH_TYPES = frozenset({EventType.play, EventType.skip})
_EVENT = TypeAdapter(EventIn)
log = logging.getLogger("fyp.events")


@dataclass(slots=True)
class EventResult:
    event_id: str | None
    status: Status
    region: str | None = None
    error: FypError | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": self.event_id, "status": self.status}
        if self.region is not None:
            out["region"] = self.region
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


@dataclass
class BatchResult:
    results: list[EventResult]
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        counts = {"stored": 0, "duplicate": 0, "rejected": 0}
        for r in self.results:
            counts[r.status] += 1
        self.counts = counts

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts, "results": [r.to_dict() for r in self.results]}


def _validation_error(exc: ValidationError) -> ValidationFailed:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
    ]
    summary = "; ".join(f"{p['field'] or 'event'}: {p['problem']}" for p in problems[:3])
    return ValidationFailed(f"invalid event: {summary}", problems=problems)


def _raw_id(raw: Any) -> str | None:
    if isinstance(raw, EventIn):
        return raw.event_id
    if isinstance(raw, dict):
        value = raw.get("event_id")
        return value if isinstance(value, str) else None
    return None


StoredListener = Callable[[str, Sequence[EventRow]], None]


class Ingestor:
    """Validates and stores events for one deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.limits = deployment.config.limits
        self.listeners: list[StoredListener] = []
        # [regions.R.policy.retention]: an event already past its region's limit is
        # refused; read again when the policy is (a live edit of fyp.toml swaps the config)
        self._keep_for: DeploymentConfig | None = None
        self._keep_ms: dict[str, int | None] = {}

    def subscribe(self, listener: StoredListener) -> None:
        """Call ``listener(region, rows)`` after each commit of newly stored events."""
        self.listeners.append(listener)

    def ingest(
        self,
        raw_events: Sequence[Any],
        region: str | None = None,
        allowed: Collection[str] | None = None,
        relocate: bool = True,
    ) -> BatchResult:
        """Ingest a batch. ``region``, if given, is where the caller believes the users live;
        ``allowed``, if given, the only regions whose users' events may be written (the
        API key's scope). An event of any other user, unknown ones included, is rejected
        as ``forbidden`` without saying where, or whether, the user lives. An event whose
        user is gone from the region the router had cached (moved by another process) is
        judged once more against where they live now (``relocate``).

        A region whose store fails has its events rejected with a 503 ``storage_error``
        each, the other regions' stored; raises that StorageError when nothing was stored."""
        results, down, landed = self._ingest(raw_events, region, allowed, relocate)
        if down and not landed:
            names = ", ".join(repr(r) for r in down)
            raise StorageError(
                f"the storage of region {names} cannot take events now (the server's log "
                "says why); nothing of the batch was stored: retry it later",
                regions=down,
            )
        return BatchResult(results)

    def _ingest(
        self,
        raw_events: Sequence[Any],
        region: str | None,
        allowed: Collection[str] | None,
        relocate: bool,
    ) -> tuple[list[EventResult], list[str], bool]:
        """The batch's results, the regions whose store failed, and whether any event
        was newly stored."""
        if len(raw_events) > self.limits.max_batch:
            raise PayloadTooLarge(
                f"batch of {len(raw_events)} events is over the limit of {self.limits.max_batch}",
                limit=self.limits.max_batch,
                size=len(raw_events),
            )
        if region is not None:
            self.deployment.store(region)
        results: list[EventResult] = [EventResult(_raw_id(r), "rejected") for r in raw_events]
        parsed: dict[int, EventIn] = {}
        for i, raw in enumerate(raw_events):
            try:
                parsed[i] = _EVENT.validate_python(raw)
            except ValidationError as exc:
                results[i].error = _validation_error(exc)

        homes = self.deployment.locate_users(e.user_id for e in parsed.values())
        declared = self.deployment.config.regions
        by_region: dict[str, list[int]] = defaultdict(list)
        for i, event in parsed.items():
            home = homes.get(event.user_id)
            wrong = next((c for c in (event.region, region) if c is not None and c != home), None)
            if event.region is not None and event.region not in declared:
                # a region no deployment of this config has: the event is wrong, not a
                # residency question (422, as an undeclared region is anywhere else)
                results[i].error = ValidationFailed(
                    f"region {event.region!r} is not declared in this deployment",
                    field="region",
                    regions=sorted(declared),
                )
            elif allowed is not None and home not in allowed:
                results[i].error = Forbidden(
                    f"user {event.user_id!r} is not in a region this API key may write to "
                    f"({', '.join(sorted(allowed))})",
                    user_id=event.user_id,
                )
            elif home is None:
                results[i].error = UnknownUser(
                    f"no user {event.user_id!r} in any region", user_id=event.user_id
                )
            elif wrong is not None:
                results[i].error = ResidencyViolation(
                    f"user {event.user_id!r} is homed in {home!r}; their events cannot be "
                    f"written to {wrong!r}",
                    user_id=event.user_id,
                    home_region=home,
                    region=wrong,
                )
            else:
                results[i].region = home
                by_region[home].append(i)

        # Judge every event fully before writing anything; then the first *valid* copy of
        # a repeated event_id is the one written, and later copies are duplicates of it.
        now = time.time_ns() // 1_000_000
        valid: list[tuple[int, str, EventRow]] = []
        for home, indices in by_region.items():
            durations = self.deployment.store(home).video_durations(
                parsed[i].video_id for i in indices
            )
            failed: dict[int, ClientError] = {}
            for i in indices:
                try:
                    valid.append((i, home, self._row(parsed[i], durations, home, now)))
                except ClientError as exc:
                    failed[i] = exc
            # a retry of an event already stored is a duplicate, even if its video has
            # gone since (or a limit changed): the client must not be told it was lost
            stored = (
                self.deployment.store(home).stored_events(parsed[i].event_id for i in failed)
                if failed
                else {}
            )
            for i, error in failed.items():
                if parsed[i].event_id not in stored:
                    results[i].error = error
                elif (other := _other_event(parsed[i], stored[parsed[i].event_id])) is not None:
                    results[i].error = other
                else:
                    results[i].status = "duplicate"
        to_write: dict[str, list[tuple[int, EventRow]]] = defaultdict(list)
        first_copy: dict[str, EventRow] = {}
        # an id repeated in the batch and already stored: each copy is judged against the
        # stored event (a retry among clashing copies is still a retry)
        copies = Counter(row.event_id for _, _, row in valid)
        repeated: dict[str, set[str]] = defaultdict(set)
        for _, home, row in valid:
            if copies[row.event_id] > 1:
                repeated[home].add(row.event_id)
        for home, ids in repeated.items():
            first_copy |= self.deployment.store(home).stored_events(ids)
        for i, home, row in sorted(valid, key=lambda t: t[0]):
            if row.event_id not in first_copy:
                first_copy[row.event_id] = row
                to_write[home].append((i, row))
            elif (other := _other_event(parsed[i], first_copy[row.event_id])) is not None:
                results[i].error = other
            else:
                results[i].status = "duplicate"
        stale: list[int] = []
        down: list[str] = []
        landed = False
        for home, pairs in to_write.items():
            try:
                stale += self._write(home, pairs, results, parsed)
            except Exception as exc:
                if not unavailable(exc):
                    raise
                down.append(home)
                self._unstored(home, exc, [results[i] for i, _ in pairs])
            fresh = [row for i, row in pairs if results[i].status == "stored"]
            if fresh:  # committed, also when what followed the commit failed
                landed = True
                for listener in self.listeners:
                    listener(home, fresh)
        if stale and relocate:  # the users' routes are forgotten: locate them once more
            again, gone, more = self._ingest(
                [raw_events[i] for i in stale], region, allowed, relocate=False
            )
            for i, result in zip(stale, again, strict=True):
                results[i] = result
            down += [r for r in gone if r not in down]
            landed = landed or more
        return results, down, landed

    @staticmethod
    def _unstored(home: str, exc: Exception, results: list[EventResult]) -> None:
        """Reject the events of region ``home`` not known to be stored when its store
        failed: a retry stores them, or finds them stored (a duplicate)."""
        log.error("region %s's store failed; events of a batch not stored: %s", home, exc)
        for result in results:
            if result.status != "stored":
                result.status, result.region = "rejected", home
                result.error = StorageError(
                    f"the storage of region {home!r} cannot take events now; this event "
                    "was not stored: retry it later",
                    region=home,
                )

    def _write(
        self,
        home: str,
        pairs: list[tuple[int, EventRow]],
        results: list[EventResult],
        given: dict[int, EventIn],
    ) -> list[int]:
        """Write one region's events; returns the indices of events whose user is not in
        the region's store (a stale route, forgotten now), rejected as unknown for now.
        An event's result is ``stored`` as soon as its transaction committed."""
        store = self.deployment.store(home)
        stale: list[int] = []
        try:
            written = store.insert_events([row for _, row in pairs])
        except UnknownUser:
            # A cached route went stale (the user was deleted, e.g. by another process):
            # reject that user's events and store everyone else's.
            present = store.existing_users({row.user_id for _, row in pairs})
            for _, row in pairs:
                if row.user_id not in present:
                    self.deployment.forget_route(row.user_id)
            for i, row in pairs:
                if row.user_id not in present:
                    stale.append(i)
                    results[i].region = None
                    results[i].error = UnknownUser(
                        f"no user {row.user_id!r} in any region", user_id=row.user_id
                    )
            pairs = [(i, row) for i, row in pairs if row.user_id in present]
            written = store.insert_events([row for _, row in pairs]) if pairs else []
        for (i, _), is_new in zip(pairs, written, strict=True):
            results[i].status = "stored" if is_new else "duplicate"
        repeats = [row.event_id for (_, row), new in zip(pairs, written, strict=True) if not new]
        if repeats:  # a retry must be the same event, or a client id clash lost data silently
            earlier = store.stored_events(repeats)
            # an event that moved here with its user under another id (its own was taken)
            others = [
                moved_event_id(row.event_id, row.user_id)
                for _, row in pairs
                if row.event_id in earlier and earlier[row.event_id].user_id != row.user_id
            ]
            moved = store.stored_events(others) if others else {}
            for (i, row), is_new in zip(pairs, written, strict=True):
                if not is_new and row.event_id in earlier:
                    clash = _other_event(given[i], earlier[row.event_id])
                    alias = moved.get(moved_event_id(row.event_id, row.user_id))
                    if clash is not None and alias is not None:
                        clash = _other_event(given[i], alias._replace(event_id=row.event_id))
                    if clash is not None:
                        results[i].status, results[i].error = "rejected", clash
        return stale

    def _keep(self, region: str) -> int | None:
        """How long ``region`` keeps events, in ms (None: until erased)."""
        config = self.deployment.config
        if config is not self._keep_for:
            self._keep_ms = {r: retention_policy(config, r).events_ms for r in config.regions}
            self._keep_for = config
        return self._keep_ms.get(region)

    def _row(self, e: EventIn, durations: dict[str, int], home: str, now: int) -> EventRow:
        duration = durations.get(e.video_id)
        if duration is None:
            raise UnknownVideo(
                f"video {e.video_id!r} is not available in region {home!r}",
                video_id=e.video_id,
                region=home,
            )
        ts = now if e.ts is None else to_ms(e.ts)
        if ts > now + self.limits.max_future_skew_s * 1000:
            raise ValidationFailed(
                f"timestamp is {(ts - now) / 1000:.0f} s in the future "
                f"(limit {self.limits.max_future_skew_s} s)",
                field="ts",
            )
        if ts < EARLIEST_TS_MS:
            raise ValidationFailed("timestamp is before 2000-01-01", field="ts")
        keep = self._keep(home)
        if keep is not None and ts < now - keep:
            raise ValidationFailed(
                f"timestamp is older than region {home!r} keeps events "
                f"({keep // DAY_MS} days, [regions.{home}.policy.retention] events_days)",
                field="ts",
            )
        watch = e.watch_ms
        if e.type == EventType.play and watch is None:
            raise ValidationFailed("a play event needs watch_ms", field="watch_ms")
        if watch is not None:
            if e.type not in WATCH_TYPES:
                raise ValidationFailed(
                    f"watch_ms is only meaningful for play and skip events, not {e.type}",
                    field="watch_ms",
                )
            if watch < 0:
                raise ValidationFailed(f"watch_ms must be >= 0, got {watch}", field="watch_ms")
            if watch > self.limits.max_watch_ms:
                raise ValidationFailed(
                    f"watch_ms {watch} is over the limit of {self.limits.max_watch_ms}",
                    field="watch_ms",
                )
        labels = play_labels(watch, duration)
        return EventRow(
            e.event_id,
            e.user_id,
            e.video_id,
            e.type.value,
            ts,
            watch,
            labels.watch_ratio,
            labels.valid_play,
            labels.long_play,
            labels.short_play,
        )


def _other_event(new: EventIn, stored: EventRow) -> AlreadyExists | None:
    """The conflict when ``new`` reuses the id of a different event (None: a retry). A
    retry is the same user, video, type and watch time, and the same time when the
    client gave one (an event without ``ts`` is stamped on arrival, so a retry's differs)."""
    same = (new.user_id, new.video_id, new.type.value, new.watch_ms)
    if same == (stored.user_id, stored.video_id, stored.type, stored.watch_ms) and (
        new.ts is None or to_ms(new.ts) == stored.ts_ms
    ):
        return None
    return AlreadyExists(
        f"event_id {stored.event_id!r} already names a different event; a retry must repeat "
        "the event exactly, and a new event needs a new id (e.g. a UUID)",
        event_id=stored.event_id,
    )
