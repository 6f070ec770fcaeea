"""Import KuaiRec-EAR (real KuaiRec positives with a fully observed test set).

``interactions.csv`` (``split,user_id,video_id``) plus KuaiRec's side tables
(:mod:`fyp.datasets.kuairec`) become users, videos, play events and held-out labels of an
existing deployment. The rules, all deterministic so a re-import changes nothing:

- **Home region**: ``regions[int(user_id) % len(regions)]``, regions in ``fyp.toml``
  order. A user who already exists in the deployment keeps the home they have.
- **Users**: every row of ``user_features.csv`` plus any user id seen in interactions.
- **Videos**: every video of the side tables or the interactions, published to every
  region. Duration is unknown in this data: the placeholder
  :data:`~fyp.datasets.kuairec.PLACEHOLDER_DURATION_MS` (15 s), flagged with
  ``attributes["duration_known"] = False``; ``creator_id`` is None (no author ids).
  A video already in a region's catalogue is left as it is.
- **Events**: each ``train`` and ``valid`` row is one ``play`` event with id
  ``kuairec-ear:{split}:{user_id}:{video_id}``. The rows are positives (KuaiRec's
  ``watch_ratio >= 2``), so each is a long play: ``watch_ms = 2 x`` the placeholder
  duration, labelled with :func:`fyp.events.schema.play_labels`. The data has no
  timestamps; synthetic ones keep the file order: train row *i* at
  ``BASE_TS_MS + i`` seconds, valid rows after all train rows.
- **Labels**: ``test`` rows are never events (nothing may train on them). They are
  stored as ``LabelRow("kuairec-ear", "test", user_id, video_id)`` in the user's home.

Writes use the stores' bulk paths (``INSERT OR IGNORE``) in chunks; event ids and label
keys are unique, so running the import twice stores everything once. Each region is
written in one transaction, and bad input is found before anything commits, so a failed
import leaves the deployment as it was. Regions are independent cells, so
:func:`write_regions` gives each region its own writer process, which writes the
catalogue while this process is still parsing the interactions. This module also holds
the write helpers the official-layout importer (:mod:`fyp.datasets.official`) shares.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from fyp.catalog.models import User, Video, now_ms
from fyp.datasets.kuairec import (
    PLACEHOLDER_DURATION_MS,
    SIDE_INFO_FILES,
    SideInfo,
    VideoInfo,
    build_user,
    build_video,
    check_id,
    check_user_id,
    find_side_info,
    home_region,
    read_table,
    read_text,
    read_users,
    read_videos,
)
from fyp.errors import FypError, InvalidRequest, StorageError, ValidationFailed
from fyp.events.schema import play_labels
from fyp.regions.deployment import Deployment
from fyp.storage import EventRow, Store, open_store

DATASET = "kuairec-ear"
INTERACTIONS = "interactions.csv"
COLUMNS = ("split", "user_id", "video_id")
SPLITS = ("train", "valid", "test")
BASE_TS_MS = 1_593_907_200_000  # 2020-07-05 00:00 UTC, when KuaiRec's collection began
WATCH_MS = 2 * PLACEHOLDER_DURATION_MS
CHUNK = 50_000
_PAIRS = {s: re.compile(rf"^{s},([^,\n]*),([^,\n]*)$", re.M) for s in SPLITS}


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
    videos: list[Video] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)  # EventRow-shaped
    # (dataset, split) -> user -> held-out videos: a store keeps one set per user
    label_sets: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)


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


def missing_videos(store: Store, catalogue: Sequence[Video]) -> list[Video]:
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


# -- kuairec-ear ----------------------------------------------------------------
def resolve(data: Path) -> tuple[Path, SideInfo]:
    """``data`` is the folder holding ``kuairec-ear/`` and ``kuairec/``, or ``kuairec-ear``."""
    data = Path(data)
    if (data / DATASET / INTERACTIONS).is_file():
        ear = data / DATASET
    elif (data / INTERACTIONS).is_file():
        ear = data
    else:
        raise InvalidRequest(
            f"no {INTERACTIONS} in {data} or {data / DATASET}: point --data at the folder "
            "that holds kuairec-ear/ and kuairec/ (e.g. ../shared/data) or at kuairec-ear/",
            path=str(data),
        )
    folders = list(dict.fromkeys([ear, ear.parent / "kuairec", data / "kuairec"]))
    side = find_side_info(folders)
    if not side.complete:
        looked = ", ".join(str(f) for f in folders)
        raise InvalidRequest(
            f"KuaiRec side info not found: need {', '.join(SIDE_INFO_FILES)} in one of {looked}",
            path=str(data),
        )
    return ear / INTERACTIONS, side


def read_interactions(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(user_id, video_id), ...]}`` in file order."""
    text = read_text(path)
    head, _, body = text.partition("\n")
    if head.strip() == ",".join(COLUMNS) and '"' not in body and "\r" not in body:
        # The published layout: one regex scan per split builds the pairs in C, 3x faster.
        out = {s: _PAIRS[s].findall(body) for s in SPLITS}
        if sum(len(p) for p in out.values()) == body.count("\n") + (not body.endswith("\n")):
            return out
    header, rows = read_table(path, COLUMNS)  # the general (and error-reporting) path
    si, ui, vi = (header.index(c) for c in COLUMNS)
    out = {s: [] for s in SPLITS}
    for n, r in enumerate(rows):
        pairs = out.get(r[si])
        if pairs is None:
            raise ValidationFailed(
                f"{path}: record {n + 1} has split {r[si]!r}; expected one of "
                f"{', '.join(SPLITS)} (columns {','.join(COLUMNS)})",
                path=str(path),
                record=n + 1,
            )
        pairs.append((r[ui], r[vi]))
    return out


@dataclass
class RegionRows:
    """A region's share of the interactions, as text: one string pickles in no time."""

    users: list[str]  # users first seen in the interactions, new to the deployment
    videos: list[str]  # videos that are in no side table
    events: str  # lines "split,user_id,video_id,ts_ms"
    labels: str  # lines "user_id,video_id"


def _route(
    splits: dict[str, list[tuple[str, str]]],
    homes: dict[str, str],
    new_users: list[str],
    new_videos: list[str],
    regions: list[str],
) -> dict[str, RegionRows]:
    """Send each row to its user's home; train then valid rows get one second each."""
    events: dict[str, list[str]] = {r: [] for r in regions}
    labels: dict[str, list[str]] = {r: [] for r in regions}
    ts = BASE_TS_MS
    for split in ("train", "valid"):
        for user_id, video_id in splits[split]:
            events[homes[user_id]].append(f"{split},{user_id},{video_id},{ts}")
            ts += 1000
    for user_id, video_id in splits["test"]:
        labels[homes[user_id]].append(f"{user_id},{video_id}")
    return {
        r: RegionRows(
            users=[u for u in new_users if homes[u] == r],
            videos=new_videos,
            events="\n".join(events[r]),
            labels="\n".join(labels[r]),
        )
        for r in regions
    }


def _expand(rows: RegionRows) -> tuple[list[tuple[Any, ...]], dict[str, list[str]]]:
    """EventRow-shaped tuples of a region's rows, and each user's test videos."""
    play = play_labels(WATCH_MS, PLACEHOLDER_DURATION_MS)
    # ints, not bools: sqlite3 binds exact ints directly but sends bools via adapters.
    tail = (
        WATCH_MS,
        play.watch_ratio,
        *map(int, (play.valid_play, play.long_play, play.short_play)),
    )
    events: list[tuple[Any, ...]] = []
    for line in rows.events.split("\n") if rows.events else ():
        split, user_id, video_id, ts = line.split(",")
        events.append(
            (f"{DATASET}:{split}:{user_id}:{video_id}", user_id, video_id, "play", int(ts), *tail)
        )
    labels: dict[str, list[str]] = {}
    for line in rows.labels.split("\n") if rows.labels else ():
        user_id, video_id = line.split(",")
        labels.setdefault(user_id, []).append(video_id)
    return events, labels


def import_kuairec_ear(
    deployment: Deployment,
    data: Path,
    *,
    progress: Progress | None = None,
    chunk: int = CHUNK,
    parallel: bool | None = None,
) -> ImportReport:
    """Import KuaiRec-EAR from ``data`` into ``deployment`` (see the module docstring).

    ``parallel``: one writer process per region (default: when there are two regions
    or more, two CPUs or more and ``fork``). Either way each region is written in one
    transaction."""
    started = time.perf_counter()
    regions = deployment.regions
    with gc_paused():
        interactions, side = resolve(data)
        assert side.users and side.categories and side.captions  # resolve() checked
        users = read_users(side.users)
        videos = read_videos(side.categories, side.captions)
        homes, fresh = assign_homes(deployment, users)
        t = now_ms()
        read: list[int] = []  # rows in the file, set by produce()

        # the catalogue is the same in every region: built once, before the writers fork
        catalogue = [build_video(info, regions, t, None, DATASET) for info in videos.values()]

        def first(region: str, store: Store) -> RegionBatch:
            mine = [u for u in users if u in fresh and homes[u] == region]
            return RegionBatch(
                users=[build_user(u, region, users[u], t) for u in mine],
                videos=missing_videos(store, catalogue),
            )

        def produce() -> tuple[dict[str, RegionRows], int]:
            splits = read_interactions(interactions)
            # ids in no side table, in file order (unzipping and de-duplicating in C)
            columns = [tuple(zip(*pairs, strict=True)) for pairs in splits.values() if pairs]
            seen_users = dict.fromkeys(chain.from_iterable(c[0] for c in columns))
            seen_videos = dict.fromkeys(chain.from_iterable(c[1] for c in columns))
            extra_users = {
                check_user_id(u, interactions): None for u in seen_users if u not in users
            }
            extra_videos = {
                check_id(v, "video_id", interactions): None for v in seen_videos if v not in videos
            }
            more_homes, more_fresh = assign_homes(deployment, extra_users)
            homes.update(more_homes)
            new_users = [u for u in extra_users if u in more_fresh]
            routed = _route(splits, homes, new_users, list(extra_videos), regions)
            read.append(sum(len(p) for p in splits.values()))
            return routed, read[0]

        def then(region: str, rows: RegionRows) -> RegionBatch:
            events, labels = _expand(rows)
            return RegionBatch(
                users=[build_user(u, region, {}, t) for u in rows.users],
                videos=[build_video(VideoInfo(v), regions, t, None, DATASET) for v in rows.videos],
                events=events,
                label_sets={(DATASET, "test"): labels},
            )

        workers = use_parallel(parallel, len(regions))
        written = write_regions(
            deployment,
            first,
            produce,
            then,
            progress,
            description=f"importing {DATASET}",
            chunk=chunk,
            parallel=workers,
        )
    seconds = time.perf_counter() - started
    return ImportReport(
        dataset=DATASET,
        rows=read[0],
        seconds=seconds,
        written=written,
        totals=store_totals(deployment),
        notes=[
            f"home region = regions[user_id % {len(regions)}] over {regions}",
            f"durations unknown: placeholder {PLACEHOLDER_DURATION_MS} ms; "
            f"train/valid rows are long plays of watch_ms={WATCH_MS}",
            "test rows are labels (dataset kuairec-ear, split test), never events",
            f"writers: {'one process per region' if workers else 'this process'}",
        ],
    )
