"""The store contract: everything a region keeps about its users, videos and events.

A store belongs to exactly one region and refuses rows of any other region itself
(a CHECK constraint, not just the code above it), so a routing bug cannot leak a user's
data into a foreign cell. Every backend passes ``tests/contracts/store_contract.py``.
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic_core import to_json

from fyp.catalog.models import User, Video
from fyp.errors import ResidencyViolation, ServerError, StorageError
from fyp.events.schema import StoredEvent


class EventRow(NamedTuple):
    """A validated, labelled event ready to be written (the fast path uses plain tuples)."""

    event_id: str
    user_id: str
    video_id: str
    type: str
    ts_ms: int
    watch_ms: int | None
    watch_ratio: float | None
    valid_play: bool
    long_play: bool
    short_play: bool


def json_text(value: Any) -> str:
    """Compact JSON with non-ASCII kept, as the stores keep list and dict fields;
    ``json.loads`` reads it back to the same values. pydantic-core's encoder is 2-4x
    faster than the json module's."""
    return to_json(value).decode()


class VideoRow(NamedTuple):
    """A catalogue entry ready for a bulk load, its list and dict fields already JSON
    (:func:`json_text`): an import writes one catalogue to every region and encodes it
    once, not once per region. ``Store.bulk_insert_videos`` takes these or Videos."""

    video_id: str
    creator_id: str | None
    caption: str
    hashtags: str
    categories: str
    tags: str
    duration_ms: int
    regions: str
    attributes: str
    created_at_ms: int
    updated_at_ms: int

    @classmethod
    def of(cls, video: Video) -> VideoRow:
        return cls(
            video.video_id,
            video.creator_id,
            video.caption,
            json_text(video.hashtags),
            json_text(video.categories),
            json_text(video.tags),
            video.duration_ms,
            json_text(video.regions),
            json_text(video.attributes),
            video.created_at_ms,
            video.updated_at_ms,
        )


class LabelRow(NamedTuple):
    """A held-out ground-truth pair (e.g. a test positive) that is never an event."""

    dataset: str
    split: str
    user_id: str
    video_id: str


_UNAVAILABLE = re.compile(
    r"disk is full|disk I/O error|readonly database|unable to open|database (table )?is locked"
)
"""SQLite errors of the storage itself, not of the request: a full disk, an I/O error, a
read-only or vanished file, a lock another connection held past the busy timeout."""


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot take the request now (retry later), not
    that the request or fyp is wrong: a :class:`StorageError`, or one of SQLite's errors
    of the storage itself."""
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, sqlite3.OperationalError) and _UNAVAILABLE.search(str(exc)) is not None


@dataclass(frozen=True)
class ErasedCounts:
    users: int
    events: int
    labels: int


class Store(ABC):
    """One region's store. Methods are synchronous and thread-safe."""

    region: str
    url: str
    served_log_elsewhere: str | None = None
    """Where the region's served log is kept when not in this store (its URL without
    credentials), set by the log that keeps it (``fyp.storage.served_logs``): a page
    recorded here, or a read of this store's pages alone, would miss it, so both are
    refused (:meth:`_refuse_served_elsewhere`)."""

    # -- lifecycle ------------------------------------------------------------
    @abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied now."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    def check(self) -> None:
        """Raise (a StorageError) if the store cannot serve now: for readiness probes."""
        self.schema_version()

    def start_background_maintenance(  # noqa: B027 - optional hook
        self, served_window_ms: int | None = None
    ) -> None:
        """Move housekeeping (e.g. WAL checkpoints) off the request path while serving,
        and with ``served_window_ms`` forget served pages older than that now and then."""

    def defer_write(self, sql: str, params: tuple[Any, ...]) -> bool:
        """Write one row (SQLite's spelling) with the served log's next group commit, when
        the store commits it in groups (a serving SQLite store); False: not deferred,
        the caller writes it now."""
        return False

    def flush_served(self) -> None:  # noqa: B027 - optional hook
        """Commit served records a serving process still holds in memory, so a reader
        of the table (an export, an erasure's count) sees every page served so far."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group writes atomically; nested use joins the outer transaction."""

    # -- the region's own rows only (every backend refuses the rest) ----------------
    def _check_home(self, user: User) -> None:
        if user.home_region != self.region:
            raise ResidencyViolation(
                f"user {user.user_id!r} is homed in {user.home_region!r}; "
                f"the {self.region!r} store refuses it",
                user_id=user.user_id,
                home_region=user.home_region,
                region=self.region,
            )

    def _refuse_unpublished(self, video_id: str, regions: list[str]) -> None:
        if self.region not in regions:
            raise ResidencyViolation(
                f"video {video_id!r} is not published to {self.region!r}",
                video_id=video_id,
                regions=regions,
                region=self.region,
            )

    # -- users ----------------------------------------------------------------
    @abstractmethod
    def insert_user(self, user: User) -> None:
        """Raise AlreadyExists if the id is taken, ResidencyViolation if not homed here."""

    @abstractmethod
    def get_user(self, user_id: str) -> User | None: ...

    @abstractmethod
    def update_user(self, user: User) -> None: ...

    @abstractmethod
    def delete_user(self, user_id: str) -> ErasedCounts: ...

    @abstractmethod
    def existing_users(self, user_ids: Iterable[str]) -> set[str]: ...

    @abstractmethod
    def count_users(self) -> int: ...

    @abstractmethod
    def iter_users(self) -> Iterator[User]: ...

    @abstractmethod
    def bulk_insert_users(self, users: Sequence[User]) -> int:
        """Fast path for imports: insert many users, skipping ids already present."""

    # -- videos ---------------------------------------------------------------
    @abstractmethod
    def insert_video(self, video: Video) -> None: ...

    @abstractmethod
    def get_video(self, video_id: str) -> Video | None: ...

    @abstractmethod
    def update_video(self, video: Video) -> None: ...

    @abstractmethod
    def delete_video(self, video_id: str) -> bool: ...

    @abstractmethod
    def video_durations(self, video_ids: Iterable[str]) -> dict[str, int]:
        """Duration of each id that is in this region's catalogue (absent ones omitted)."""

    @abstractmethod
    def get_videos(self, video_ids: Iterable[str]) -> dict[str, Video]:
        """Each id that is in this region's catalogue (absent ones omitted): one read for
        a page's videos, not one per video."""

    @abstractmethod
    def count_videos(self) -> int: ...

    @abstractmethod
    def iter_videos(self) -> Iterator[Video]: ...

    @abstractmethod
    def bulk_insert_videos(self, videos: Sequence[Video | VideoRow]) -> int:
        """Fast path for imports: insert many videos, skipping ids already present;
        ResidencyViolation if one is not published to this region."""

    # -- events ---------------------------------------------------------------
    @abstractmethod
    def existing_event_ids(self, event_ids: Iterable[str]) -> set[str]: ...

    @abstractmethod
    def stored_events(self, event_ids: Iterable[str]) -> dict[str, EventRow]:
        """The stored events of these ids (ids not stored are left out)."""

    @abstractmethod
    def insert_events(self, rows: Sequence[EventRow]) -> list[bool]:
        """Insert validated events atomically; True per row written, False per duplicate.

        An ``event_id`` already stored (or earlier in ``rows``) is never written twice;
        the check and the write happen in one transaction."""

    @abstractmethod
    def bulk_insert_events(self, rows: Sequence[EventRow]) -> int:
        """Fast path for imports: one transaction, ids already stored are skipped.

        Returns how many rows were written."""

    @abstractmethod
    def get_event(self, event_id: str) -> StoredEvent | None: ...

    @abstractmethod
    def user_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        """The user's latest events, newest first."""

    @abstractmethod
    def followed_creators(self, user_id: str) -> list[str]:
        """The creators the user follows (table ``follows``, :mod:`fyp.catalog.follows`):
        read with every feed state built, so a method of the store's own."""

    @abstractmethod
    def blocked_creators(self, user_id: str) -> list[str]:
        """The creators a block keeps out of the user's feeds, either way: those the
        user blocked and those who blocked the user (tables ``blocks`` and
        ``blocked_by``, :mod:`fyp.catalog.blocks`), in one read per feed state."""

    @abstractmethod
    def following_videos(
        self, user_id: str, after: tuple[int, str] | None, limit: int, since_ms: int
    ) -> list[tuple[str, str, int]]:
        """``(video_id, creator_id, created_at_ms)`` of up to ``limit`` videos of the
        creators the user follows, newest first (then by ``video_id``), after the row
        ``after`` names (its time and id), but none the user marked ``not_interested``
        at ``since_ms`` or later (the seen window, as For You reads them): the Following
        tab's read (:mod:`fyp.storage.following_sql`, through the index
        ``videos_creator_time``)."""

    @abstractmethod
    def user_not_interested(
        self, user_id: str, before_seq: int, since_ms: int, limit: int = 1000
    ) -> list[StoredEvent]:
        """The user's ``not_interested`` events older than ``before_seq`` and not before
        ``since_ms``, newest first (by an index holding those events only)."""

    @abstractmethod
    def iter_events(self, after_seq: int = 0, batch: int = 10_000) -> Iterator[StoredEvent]:
        """All events in ``seq`` (ingestion) order, from after ``after_seq``."""

    @abstractmethod
    def count_events(self) -> int: ...

    @abstractmethod
    def expire_events_before(self, before_ms: int, limit: int) -> int:
        """Delete at most ``limit`` of the events whose time is before ``before_ms``
        (oldest first), in one transaction: the region's retention limit. How many went."""

    @abstractmethod
    def count_events_before(self, before_ms: int) -> int: ...

    @abstractmethod
    def max_event_seq(self) -> int: ...

    def user_version(self, user_id: str) -> tuple[int, ...] | None:
        """A marker that changes whenever the user's profile, events or served log change,
        so a caller may keep derived state until it does: ``(profile version, latest
        event seq, served counter)``, where the counter goes up by one per
        ``record_served``. ``None``: the user is absent, or the backend cannot tell
        (callers then read afresh every time)."""
        return None

    # -- served log -----------------------------------------------------------
    def hand_served_log_to(self, where: str) -> None:
        """The region's served log is kept at ``where`` (a URL without credentials) from
        now on: :meth:`record_served` is refused here, and :meth:`served_since` but for
        the pages left from before (what that log itself reads)."""
        self.served_log_elsewhere = where

    def _refuse_served_elsewhere(self, what: str) -> None:
        """A ServerError when the served log is kept elsewhere: code that reaches the
        store's served log directly, not through ``Deployment.served_log``, is a bug."""
        if self.served_log_elsewhere is not None:
            raise ServerError(
                f"{what} in the store of region {self.region!r} is refused: the region's "
                f"served log is at {self.served_log_elsewhere} ([regions.{self.region}] "
                "served_log), which the feed reads; reach it through "
                f"Deployment.served_log({self.region!r})",
                region=self.region,
                served_log=self.served_log_elsewhere,
            )

    @abstractmethod
    def record_served(self, user_id: str, video_ids: Sequence[str], ts_ms: int) -> int:
        """Remember that these videos were shown to the user at ``ts_ms``. Returns the
        user's served counter after the record (the last part of ``user_version``).
        A ServerError while the served log is elsewhere (:meth:`hand_served_log_to`)."""

    @abstractmethod
    def forget_served_before(self, before_ms: int) -> int:
        """Forget every user's pages shown before ``before_ms`` (the served log is kept
        only as long as the feed needs it) and return how many; the served counters do
        not go back. Runs in transactions of its own."""

    @abstractmethod
    def served_since(self, user_id: str, since_ms: int, *, left_here: bool = False) -> list[str]:
        """Videos shown to the user at any time at or after ``since_ms``, each once.
        While the served log is elsewhere (:meth:`hand_served_log_to`) a ServerError,
        unless ``left_here``: then the pages this store still holds from before."""

    # -- held-out labels ------------------------------------------------------
    @abstractmethod
    def insert_label_sets(
        self,
        dataset: str,
        split: str,
        sets: Mapping[str, Sequence[str]],
        stored_at_ms: int | None = None,
    ) -> int:
        """Add each user's videos to their (dataset, split) label set, atomically;
        returns how many labels were new. UnknownUser for a user not in this store. A new
        set is dated ``stored_at_ms`` (default now; a move passes the source's), a set
        that grows keeps its time: the retention limit goes by it."""

    def insert_labels(self, rows: Sequence[LabelRow]) -> int:
        """:meth:`insert_label_sets` for loose rows, all of them or none."""
        groups: dict[tuple[str, str], dict[str, list[str]]] = {}
        for dataset, split, user_id, video_id in rows:
            groups.setdefault((dataset, split), {}).setdefault(user_id, []).append(video_id)
        with self.transaction():
            return sum(self.insert_label_sets(d, s, sets) for (d, s), sets in groups.items())

    @abstractmethod
    def iter_labels(self, dataset: str, split: str) -> Iterator[LabelRow]: ...

    @abstractmethod
    def count_labels(self, dataset: str | None = None) -> int: ...


def merge_label_sets(
    held: Mapping[str, list[str]], sets: Mapping[str, Sequence[str]]
) -> tuple[int, list[tuple[str, list[str]]]]:
    """Each user's new label set (held ones first, in order, new videos after): how many
    labels are new, and (user, merged set) for the users whose set grew."""
    added = 0
    changed: list[tuple[str, list[str]]] = []
    for user_id, videos in sets.items():
        before = held.get(user_id, [])
        merged = dict.fromkeys(before)
        merged.update(dict.fromkeys(videos))
        if len(merged) > len(before):
            added += len(merged) - len(before)
            changed.append((user_id, list(merged)))
    return added, changed
