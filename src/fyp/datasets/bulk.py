"""Bulk writes of an import: every region in one transaction, one writer process each.

Shared by the KuaiRec-EAR (:mod:`fyp.datasets.kuairec_ear`) and official-layout
(:mod:`fyp.datasets.official`) importers. Regions are independent cells, so
:func:`write_regions` gives each region its own writer process, which writes what is
known up front (the catalogue, the users) while the importer is still parsing.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol, TypeVar, cast

from fyp.catalog.models import User, Video
from fyp.datasets.kuairec import VideoInfo, build_video, home_region
from fyp.errors import FypError, StorageError
from fyp.regions.deployment import Deployment
from fyp.sovereignty.ledger import ERASURE, ErasureLedger
from fyp.storage import EventRow, Store, VideoRow, open_store

CHUNK = 100_000
"""Rows per bulk write: a progress step; a region's events in one go let the store index
them after the load (see SQLiteStore.bulk_insert_events)."""


# -- reporting ------------------------------------------------------------------
class Progress(Protocol):
    """What an importer reports while it writes (the CLI draws a rich progress bar)."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


class NoProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass
class RegionCounts:
    users: int = 0
    videos: int = 0
    events: int = 0
    labels: int = 0

    def __add__(self, other: RegionCounts) -> RegionCounts:
        return RegionCounts(
            self.users + other.users,
            self.videos + other.videos,
            self.events + other.events,
            self.labels + other.labels,
        )


@dataclass
class ImportReport:
    """What an import read and wrote; ``written`` counts new rows only (0 on a re-run)."""

    dataset: str
    rows: int
    seconds: float
    written: dict[str, RegionCounts]
    totals: dict[str, RegionCounts] = field(default_factory=dict)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def store_totals(deployment: Deployment) -> dict[str, RegionCounts]:
    return {
        r: RegionCounts(s.count_users(), s.count_videos(), s.count_events(), s.count_labels())
        for r, s in deployment.stores.items()
    }


@contextmanager
def gc_paused() -> Iterator[None]:
    """Bulk parsing allocates millions of small lists; the cyclic GC only slows it down."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# -- writing --------------------------------------------------------------------
@dataclass
class RegionBatch:
    """Everything one region's store receives from an import."""

    users: list[User] = field(default_factory=list)
    videos: Sequence[Video | VideoRow] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)  # EventRow-shaped
    # (dataset, split) -> user -> held-out videos: a store keeps one set per user
    label_sets: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)


def erased_users(deployment: Deployment, user_ids: Iterable[str]) -> set[str]:
    """Which of ``user_ids`` some region's erasure ledger records as erased. An import
    skips them and every row of theirs: the data predates the erasure, and importing it
    again must not bring an erased user back."""
    wanted = set(user_ids)
    out: set[str] = set()
    for region in deployment.regions:
        ledger = ErasureLedger(deployment.config, region)
        if ledger.path.is_file():
            out |= ledger.matching(wanted, ERASURE)  # a user moved away lives on elsewhere
    return out


def erased_note(erased: set[str]) -> list[str]:
    if not erased:
        return []
    return [f"{len(erased):,} users skipped with all their rows: an erasure ledger names them"]


def assign_homes(
    deployment: Deployment, user_ids: Iterable[str]
) -> tuple[dict[str, str], set[str]]:
    """Every user's home (existing users keep theirs) and the ids that are new."""
    regions = deployment.regions
    wanted = list(user_ids)
    existing = deployment.locate_users(wanted)
    homes = {u: existing.get(u) or home_region(u, regions) for u in wanted}
    return homes, {u for u in wanted if u not in existing}


def new_videos(
    store: Store,
    videos: dict[str, VideoInfo],
    regions: list[str],
    t: int,
    source: str,
    durations: dict[str, int] | None = None,
) -> list[Video]:
    """Videos not yet in this store's catalogue, published to every region."""
    present = _present(store, videos)
    known = durations or {}
    return [
        build_video(info, regions, t, known.get(vid), source)
        for vid, info in videos.items()
        if vid not in present
    ]


def missing_videos(store: Store, catalogue: Sequence[VideoRow]) -> list[VideoRow]:
    """The videos of a catalogue built once for every region that this store lacks."""
    present = _present(store, [v.video_id for v in catalogue])
    return [v for v in catalogue if v.video_id not in present]


def _present(store: Store, video_ids: Iterable[str]) -> set[str] | dict[str, int]:
    # a first import finds an empty catalogue: one count instead of 10,000 lookups
    return set() if store.count_videos() == 0 else store.video_durations(video_ids)


def write_batch(
    store: Store, batch: RegionBatch, chunk: int, advance: Callable[[int], None]
) -> RegionCounts:
    """Write one region's batch in chunks: users, videos, then events and labels."""
    counts = RegionCounts()
    for i in range(0, len(batch.users), chunk):
        counts.users += store.bulk_insert_users(batch.users[i : i + chunk])
    for i in range(0, len(batch.videos), chunk):
        counts.videos += store.bulk_insert_videos(batch.videos[i : i + chunk])
    events = cast(Sequence[EventRow], batch.events)
    for i in range(0, len(events), chunk):
        part = events[i : i + chunk]
        counts.events += store.bulk_insert_events(part)
        advance(len(part))
    for (dataset, split), sets in batch.label_sets.items():
        some: dict[str, list[str]] = {}
        size = 0
        for n, (user_id, videos) in enumerate(sets.items(), 1):
            some[user_id] = videos
            size += len(videos)
            if size >= chunk or n == len(sets):
                counts.labels += store.insert_label_sets(dataset, split, some)
                advance(size)
                some, size = {}, 0
    return counts


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1


def use_parallel(parallel: bool | None, regions: int) -> bool:
    """Worker processes unless asked not to, or pointless (one region, one CPU, no fork).

    SQLite inserts are CPU-bound: on an idle 2-core machine the full KuaiRec-EAR import
    takes 1.9 s with workers and 3.2 s without. On a machine whose cores are already
    busy the workers compete for them and can be ~10-20 % slower: pass False there."""
    return parallel is not False and regions > 1 and can_fork()


P = TypeVar("P")
First = Callable[[str, Store], RegionBatch]
"""A region's batch from what is known up front (runs in the region's writer)."""


def write_regions(
    deployment: Deployment,
    first: First,
    produce: Callable[[], tuple[dict[str, P], int]],
    then: Callable[[str, P], RegionBatch],
    progress: Progress | None = None,
    *,
    description: str = "importing",
    chunk: int = CHUNK,
    parallel: bool = False,
) -> dict[str, RegionCounts]:
    """Write every region in one transaction each: ``first``, then ``then(payload)``.

    ``produce`` (run once, in the caller) returns each region's payload and the number
    of event and label rows. Sequentially, it runs before anything is written. With
    ``parallel``, each region gets a forked writer that opens its *own* store connection
    (never one inherited from the parent, as SQLite requires) and writes ``first`` while
    the parent runs ``produce``: parsing overlaps the catalogue writes, and the regions'
    CPU-bound inserts run side by side. If ``produce`` fails (bad input) no region
    commits; a region whose own write fails rolls back alone (stores are independent)."""
    progress = progress or NoProgress()
    if not parallel:
        payloads, total = produce()
        progress.start(description, total)
        out: dict[str, RegionCounts] = {}
        for region in deployment.regions:
            store = deployment.store(region)
            with store.transaction():
                counts = write_batch(store, first(region, store), chunk, progress.advance)
                more = write_batch(store, then(region, payloads[region]), chunk, progress.advance)
            out[region] = counts + more
        return out
    return _write_forked(deployment, first, produce, then, progress, description, chunk)


class _Abort(Exception):
    pass


def _child(
    url: str,
    region: str,
    first: First,
    then: Callable[[str, Any], RegionBatch],
    chunk: int,
    conn: Connection,
) -> None:
    def advance(n: int) -> None:
        conn.send(("advance", n))

    try:
        store = open_store(url, region, migrate=False)
        with store.transaction():
            counts = write_batch(store, first(region, store), chunk, advance)
            kind, payload = conn.recv()
            if kind != "rows":
                raise _Abort
            counts = counts + write_batch(store, then(region, payload), chunk, advance)
        # No close(): the process ends with os._exit and SQLite's WAL holds the commit.
        conn.send(("done", counts))
    except _Abort:
        conn.send(("aborted", None))
    except FypError as exc:
        conn.send(("error", exc))
    except BaseException as exc:
        conn.send(("error", StorageError(f"writing region {region!r} failed: {exc!r}")))
    finally:
        conn.close()


def _send(conn: Connection, message: tuple[str, Any]) -> None:
    with suppress(OSError):  # that writer is gone; its end of the pipe says why (or EOF)
        conn.send(message)


def _write_forked(
    deployment: Deployment,
    first: First,
    produce: Callable[[], tuple[dict[str, P], int]],
    then: Callable[[str, P], RegionBatch],
    progress: Progress,
    description: str,
    chunk: int,
) -> dict[str, RegionCounts]:
    ctx = multiprocessing.get_context("fork")
    conns: dict[str, Connection] = {}
    procs = []
    for region in deployment.regions:
        url = deployment.config.resolve_url(deployment.config.region(region).store)
        parent_end, child_end = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_child, args=(url, region, first, then, chunk, child_end))
        proc.daemon = True
        proc.start()
        child_end.close()
        conns[region] = parent_end
        procs.append(proc)
    error: BaseException | None = None
    results: dict[str, RegionCounts] = {}
    finished = False
    try:
        try:
            payloads, total = produce()
        except Exception as exc:  # bad input: every writer rolls back
            error = exc
            for conn in conns.values():
                _send(conn, ("abort", None))
        else:
            progress.start(description, total)
            for region, conn in conns.items():
                _send(conn, ("rows", payloads[region]))
        pending = {conn: region for region, conn in conns.items()}
        while pending:
            for ready in wait(list(pending)):
                conn = cast(Connection, ready)
                try:
                    kind, value = conn.recv()
                except EOFError:
                    region = pending.pop(conn)
                    if region not in results and error is None:
                        error = StorageError(f"the writer of region {region!r} stopped early")
                    continue
                if kind == "advance":
                    progress.advance(value)
                elif kind == "done":
                    results[pending[conn]] = value
                elif kind == "error" and error is None:
                    error = value
        finished = True
    finally:
        for proc in procs:
            if not finished:  # interrupted: an uncommitted transaction simply vanishes
                proc.terminate()
            proc.join()
        for conn in conns.values():
            conn.close()
    if error is not None:
        raise error
    return results
