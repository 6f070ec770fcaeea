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
  timestamps; synthetic ones keep the file order, one second apart, train rows then
  valid rows, the last one second before the import: the data counts as recent, so
  live events that follow it do not make it look years old to the time decay of
  popularity (it was dated 2020, when KuaiRec was collected, until session 11: one
  live like then halved every imported event 156 times at the next training).
- **Labels**: ``test`` rows are never events (nothing may train on them). They are
  stored as ``LabelRow("kuairec-ear", "test", user_id, video_id)`` in the user's home.

Writes use the stores' bulk paths (``INSERT OR IGNORE``) in chunks; event ids and label
keys are unique, so running the import twice stores everything once. Each region is
written in one transaction, and bad input is found before anything commits, so a failed
import leaves the deployment as it was. Each region gets its own writer process
(:func:`fyp.datasets.bulk.write_regions`), which writes the catalogue while this process
is still parsing the interactions.
"""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from fyp.catalog.models import now_ms
from fyp.datasets.bulk import (
    CHUNK,
    ImportReport,
    Progress,
    RegionBatch,
    RegionCounts,
    assign_homes,
    erased_note,
    erased_users,
    gc_paused,
    missing_videos,
    store_totals,
    use_parallel,
    write_regions,
)
from fyp.datasets.kuairec import (
    PLACEHOLDER_DURATION_MS,
    SIDE_INFO_FILES,
    SideInfo,
    VideoInfo,
    build_user,
    build_video,
    build_video_row,
    check_id,
    check_user_id,
    find_side_info,
    read_bytes,
    read_table,
    read_users,
    read_videos,
)
from fyp.errors import InvalidRequest, ValidationFailed
from fyp.events.schema import play_labels
from fyp.regions.deployment import Deployment
from fyp.storage import Store

__all__ = [
    "DATASET",
    "WATCH_MS",
    "ImportReport",
    "Progress",
    "RegionCounts",
    "import_kuairec_ear",
]

DATASET = "kuairec-ear"
INTERACTIONS = "interactions.csv"
COLUMNS = ("split", "user_id", "video_id")
SPLITS = ("train", "valid", "test")
WATCH_MS = 2 * PLACEHOLDER_DURATION_MS
_SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])
_NONE = (pa.array([], pa.string()), pa.array([], pa.string()))


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


def read_interactions(path: Path) -> pa.Table:
    """The rows as a table of strings ``split, user_id, video_id``, in file order.

    The published layout (that header, no quoting, ``\\n`` or CRLF line ends) is parsed by
    pyarrow's CSV reader, ten times faster than Python; anything else, or a file it
    refuses, goes through :func:`~fyp.datasets.kuairec.read_table`, which also says
    what is wrong with a bad file."""
    data = read_bytes(path)
    head, _, body = data.partition(b"\n")
    # pyarrow ends lines at a bare CR too; read_text keeps it (only a CRLF file's go)
    crlf = head.endswith(b"\r") and body.count(b"\r") == body.count(b"\r\n")
    if (
        head.strip() == ",".join(COLUMNS).encode()
        and b'"' not in body
        and (crlf or b"\r" not in body)
    ):
        with suppress(pa.ArrowInvalid):
            table = pa_csv.read_csv(
                pa.BufferReader(data),
                read_options=pa_csv.ReadOptions(use_threads=False),
                parse_options=pa_csv.ParseOptions(quote_char=False),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(COLUMNS, pa.string())
                ),
            )
            if set(table["split"].unique().to_pylist()) <= set(SPLITS):
                return table
    header, rows = read_table(path, COLUMNS)  # the general (and error-reporting) path
    si = header.index("split")
    for n, r in enumerate(rows):
        if r[si] not in SPLITS:
            raise ValidationFailed(
                f"{path}: record {n + 1} has split {r[si]!r}; expected one of "
                f"{', '.join(SPLITS)} (columns {','.join(COLUMNS)})",
                path=str(path),
                record=n + 1,
            )
    columns = [[r[i] for r in rows] for i in map(header.index, COLUMNS)]
    return pa.table(dict(zip(COLUMNS, columns, strict=True)), schema=_SCHEMA)


EventColumns = tuple[pa.StringArray, pa.StringArray, npt.NDArray[np.int64]]
"""The user ids, video ids and timestamps of a split's event rows."""


@dataclass
class RegionRows:
    """A region's share of the interactions as Arrow columns: they pickle as buffers,
    and the writer turns them into Python strings in C."""

    users: list[str]  # users first seen in the interactions, new to the deployment
    videos: list[str]  # videos that are in no side table
    events: dict[str, EventColumns]  # split: its event rows
    labels: tuple[pa.StringArray, pa.StringArray]  # the test rows' users and videos


def _route(
    table: pa.Table,
    homes: dict[str, str],
    new_users: list[str],
    new_videos: list[str],
    regions: list[str],
    now_ms: int,
) -> dict[str, RegionRows]:
    """Send each row to its user's home; train then valid rows get one second each,
    in file order, the last one second before ``now_ms``. Vectorised: Python looks at
    each distinct user, never at a row."""
    played = int(pc.sum(pc.invert(pc.equal(table["split"], "test"))).as_py() or 0)
    base_ts = now_ms - 1000 * played
    users, splits = (_encoded(table[c]) for c in ("user_id", "split"))
    index = {r: i for i, r in enumerate(regions)}
    home = np.array([index[homes[u]] for u in users.dictionary.to_pylist()], dtype=np.intp)
    where = home[users.indices.to_numpy()]
    codes = splits.indices.to_numpy()
    names = splits.dictionary.to_pylist()
    pairs = (table["user_id"].combine_chunks(), table["video_id"].combine_chunks())
    out = {
        r: RegionRows([u for u in new_users if homes[u] == r], new_videos, {}, _NONE)
        for r in regions
    }
    first = 0  # file position of the split's first row, over train then valid rows
    for name in SPLITS:
        rows = np.flatnonzero(codes == names.index(name)) if name in names else np.arange(0)
        for i, region in enumerate(regions):
            at = np.flatnonzero(where[rows] == i)  # the region's rows, counted in the split
            columns = (pairs[0].take(rows[at]), pairs[1].take(rows[at]))
            if name == "test":
                out[region].labels = columns
            else:
                out[region].events[name] = (*columns, base_ts + 1000 * (first + at))
        first += len(rows)
    return out


def _encoded(column: pa.ChunkedArray) -> pa.DictionaryArray:
    return column.combine_chunks().dictionary_encode()


def _expand(rows: RegionRows) -> tuple[list[tuple[Any, ...]], dict[str, list[str]]]:
    """EventRow-shaped tuples of a region's rows (built in C), each user's test videos."""
    play = play_labels(WATCH_MS, PLACEHOLDER_DURATION_MS)
    # ints, not bools: sqlite3 binds exact ints directly but sends bools via adapters.
    tail = (
        WATCH_MS,
        play.watch_ratio,
        *map(int, (play.valid_play, play.long_play, play.short_play)),
    )
    events: list[tuple[Any, ...]] = []
    for split, (users, videos, ts) in rows.events.items():
        ids = pc.binary_join_element_wise(f"{DATASET}:{split}", users, videos, ":")
        columns = (ids.to_pylist(), users.to_pylist(), videos.to_pylist())
        events += zip(*columns, repeat("play"), ts.tolist(), *map(repeat, tail))
    # each user's test videos in file order: single-threaded, group_by keeps the order
    users, videos = rows.labels
    sets = pa.table({"u": users, "v": videos}).group_by("u", use_threads=False)
    sets = sets.aggregate([("v", "list")])
    labels = dict(zip(sets["u"].to_pylist(), sets["v_list"].to_pylist(), strict=True))
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
        erased = erased_users(deployment, users)
        users = {u: a for u, a in users.items() if u not in erased}
        videos = read_videos(side.categories, side.captions)
        homes, fresh = assign_homes(deployment, users)
        t = now_ms()
        read: list[int] = []  # rows in the file, set by produce()

        # the catalogue is the same in every region: built and encoded once, before the fork
        catalogue = [build_video_row(v, regions, t, None, DATASET) for v in videos.values()]

        def first(region: str, store: Store) -> RegionBatch:
            mine = [u for u in users if u in fresh and homes[u] == region]
            return RegionBatch(
                users=[build_user(u, region, users[u], t) for u in mine],
                videos=missing_videos(store, catalogue),
            )

        def produce() -> tuple[dict[str, RegionRows], int]:
            table = read_interactions(interactions)
            erased.update(erased_users(deployment, table["user_id"].unique().to_pylist()))
            if erased:
                table = table.filter(pc.invert(pc.is_in(table["user_id"], pa.array(erased))))
            # ids in no side table, in first-seen order
            seen_users = table["user_id"].unique().to_pylist()
            seen_videos = table["video_id"].unique().to_pylist()
            extra_users = {
                check_user_id(u, interactions): None for u in seen_users if u not in users
            }
            extra_videos = {
                check_id(v, "video_id", interactions): None for v in seen_videos if v not in videos
            }
            more_homes, more_fresh = assign_homes(deployment, extra_users)
            homes.update(more_homes)
            new_users = [u for u in extra_users if u in more_fresh]
            routed = _route(table, homes, new_users, list(extra_videos), regions, t)
            read.append(table.num_rows)
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
            *erased_note(erased),
        ],
    )
