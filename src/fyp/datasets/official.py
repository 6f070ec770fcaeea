"""Import KuaiRec 2.0 in its official layout (``big_matrix.csv`` / ``small_matrix.csv``).

The authors' ``KuaiRec.zip`` (Zenodo record 18164998) holds the two interaction matrices,
columns exactly ``user_id,video_id,play_duration,video_duration,time,date,timestamp,
watch_ratio`` (durations in ms, ``timestamp`` in unix seconds), next to the side tables.
``data`` is that folder; side tables are looked for there, then in a sibling ``kuairec/``
(each one is optional). Users are homed by the same rule as
:mod:`fyp.datasets.kuairec_ear`: ``regions[int(user_id) % len(regions)]``.

- **Events**: each row is a ``play`` with ``watch_ms = play_duration`` at its real time,
  id ``kuairec:{user_id}:{video_id}:{ts_ms}`` (so a pair present in both matrices with
  the same time is one event). Labels come from :func:`fyp.events.schema.play_labels`
  with the row's own ``video_duration``, which reproduces KuaiRec's ``watch_ratio``. A
  row without a timestamp falls back to ``time`` (Beijing time), then ``date``; rows
  with no time at all or a non-positive duration are skipped and counted.
- **Videos**: ``duration_ms`` is the video's most common ``video_duration`` across rows
  (ties: the longest), with ``attributes["duration_known"] = True``; a video that is only
  in the side tables gets the placeholder duration, flagged False.
- **``split_protocol``** (the paper's evaluation protocol: train on big minus small):
  big-matrix rows whose (user, video) pair is in the small matrix are not events, and the
  small matrix is *not* imported as events. It is the test set, written per home region
  to ``regions/<region>/datasets/kuairec-small.csv`` (``user_id,video_id,watch_ratio``,
  the graded gain a label row cannot hold); its positives (``watch_ratio >= 2``) are also
  stored as ``LabelRow("kuairec", "test", ...)`` so tools that read labels find them.

The matrices are ~1.4 GB together, so they are streamed twice (a scan for users,
durations and small-matrix pairs, then the import) and written in chunks, each its own
transaction: an interrupted import keeps what it wrote, and running it again (it is
idempotent: event ids and label keys are unique) completes it.
"""

from __future__ import annotations

import csv
import time
from array import array
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np

from fyp.catalog.models import now_ms
from fyp.datasets.bulk import (
    CHUNK,
    ImportReport,
    NoProgress,
    Progress,
    RegionBatch,
    RegionCounts,
    assign_homes,
    erased_note,
    erased_users,
    gc_paused,
    new_videos,
    store_totals,
    write_batch,
)
from fyp.datasets.kuairec import (
    VideoInfo,
    build_user,
    check_user_id,
    find_side_info,
    read_users,
    read_videos,
)
from fyp.errors import InvalidRequest, ValidationFailed
from fyp.events.schema import play_labels
from fyp.regions.deployment import Deployment
from fyp.storage import EventRow, LabelRow

DATASET = "kuairec"
BIG = "big_matrix.csv"
SMALL = "small_matrix.csv"
COLUMNS = (
    "user_id",
    "video_id",
    "play_duration",
    "video_duration",
    "time",
    "date",
    "timestamp",
    "watch_ratio",
)
TEST_FILE = "kuairec-small.csv"
TEST_COLUMNS = ("user_id", "video_id", "watch_ratio")
POSITIVE_RATIO = 2.0
BEIJING = timezone(timedelta(hours=8))
_U, _V, _PLAY, _DUR, _TIME, _DATE, _TS, _RATIO = range(8)


def resolve(data: Path) -> tuple[Path | None, Path | None, list[Path]]:
    """The matrices found in ``data`` and the folders to search for side tables."""
    data = Path(data)
    big, small = data / BIG, data / SMALL
    if not big.is_file() and not small.is_file():
        raise InvalidRequest(
            f"neither {BIG} nor {SMALL} is in {data}: point --data at the folder of the "
            f"official KuaiRec layout (columns {','.join(COLUMNS)})",
            path=str(data),
        )
    folders = list(dict.fromkeys([data, data.parent / "kuairec", data / "kuairec"]))
    return (big if big.is_file() else None), (small if small.is_file() else None), folders


def _rows(path: Path) -> Iterator[list[str]]:
    """Stream a matrix's records (columns in the official order), checking the header."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        yield from _records(path, f)


def _records(path: Path, f: TextIO) -> Iterator[list[str]]:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    if tuple(header[: len(COLUMNS)]) != COLUMNS:
        raise ValidationFailed(
            f"{path}: expected columns {','.join(COLUMNS)}, found {','.join(header) or 'none'}",
            path=str(path),
            expected=list(COLUMNS),
            found=header,
        )
    for n, r in enumerate(reader):
        if not r:
            continue
        if len(r) < len(COLUMNS) or not r[_U].isdigit() or not r[_V].isdigit():
            raise ValidationFailed(
                f"{path}: record {n + 1} is not user_id,video_id (integers) and 6 more "
                f"columns: {','.join(r)[:200]!r}",
                path=str(path),
                record=n + 1,
            )
        yield r


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)  # "4381.0", "nan", ""
    except ValueError:
        return None
    return round(f) if f == f else None  # NaN != NaN


def ts_ms(row: list[str]) -> int | None:
    """Epoch ms from ``timestamp``, else ``time`` (Beijing), else ``date``; None if none."""
    try:
        ts = float(row[_TS])
        if ts == ts:
            return round(ts * 1000)
    except ValueError:
        pass
    for value, fmt in ((row[_TIME].strip(), None), (row[_DATE].strip(), "%Y%m%d")):
        if not value or value.lower() == "nan":
            continue
        try:
            if fmt is None:
                when = datetime.fromisoformat(value)
            else:
                when = datetime.strptime(value.split(".")[0], fmt)
        except ValueError:
            continue
        return int(when.replace(tzinfo=when.tzinfo or BEIJING).timestamp() * 1000)
    return None


def _pair_key(user_id: str, video_id: str) -> int:
    """(user, video) packed in one int64, so millions of pairs fit in a numpy array."""
    u, v = int(user_id), int(video_id)
    if u >= 1 << 31 or v >= 1 << 32:
        raise ValidationFailed(
            f"ids too large for --split-protocol: user {user_id}, video {video_id} "
            "(users must be < 2^31, videos < 2^32)"
        )
    return (u << 32) | v


class _Scan:
    """What the first pass learns: users, video durations, small-matrix pairs."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.durations: dict[str, dict[int, int]] = {}
        self.small_keys: np.ndarray[Any, np.dtype[np.int64]] = np.empty(0, dtype=np.int64)
        self.rows = 0

    def add(self, path: Path, progress: Progress, keep_pairs: bool) -> None:
        keys = array("q")
        progress.start(f"scanning {path.name}", None)
        n = 0
        durations = self.durations
        for r in _rows(path):
            self.users.add(r[_U])
            dur = _int(r[_DUR])
            if dur is not None and dur > 0:
                seen = durations.get(r[_V])
                if seen is None:
                    seen = durations[r[_V]] = {}
                seen[dur] = seen.get(dur, 0) + 1
            if keep_pairs:
                keys.append(_pair_key(r[_U], r[_V]))
            n += 1
            if n % CHUNK == 0:
                progress.advance(CHUNK)
        progress.advance(n % CHUNK)
        self.rows += n
        if keep_pairs:
            self.small_keys = np.unique(np.frombuffer(keys, dtype=np.int64))

    def video_durations(self) -> dict[str, int]:
        """Each video's most common duration; ties go to the longest."""
        return {
            v: max(c.items(), key=lambda kv: (kv[1], kv[0]))[0] for v, c in self.durations.items()
        }

    def in_small(self, keys: list[int]) -> np.ndarray[Any, np.dtype[np.bool_]]:
        if not len(self.small_keys):
            return np.zeros(len(keys), dtype=bool)
        arr = np.array(keys, dtype=np.int64)
        pos = np.searchsorted(self.small_keys, arr).clip(max=len(self.small_keys) - 1)
        return np.asarray(self.small_keys[pos] == arr)


def import_kuairec(
    deployment: Deployment,
    data: Path,
    *,
    split_protocol: bool = False,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> ImportReport:
    """Import the official KuaiRec layout from ``data`` (see the module docstring)."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    big, small, folders = resolve(data)
    if split_protocol and small is None:
        raise InvalidRequest(
            f"--split-protocol needs {SMALL} in {data}: it is the test set", path=str(data)
        )
    side = find_side_info(folders)
    with gc_paused():
        scan = _Scan()
        for path in (big, small):
            if path is not None:
                scan.add(path, progress, keep_pairs=split_protocol and path == small)
        users: dict[str, dict[str, Any]] = read_users(side.users) if side.users else {}
        for u in sorted(scan.users - users.keys(), key=int):
            users[check_user_id(u, big or small or Path(data))] = {}
        erased = erased_users(deployment, users)
        users = {u: a for u, a in users.items() if u not in erased}
        videos = read_videos(side.categories, side.captions)
        for v in scan.durations:
            videos.setdefault(v, VideoInfo(v))
        durations = scan.video_durations()

        regions = deployment.regions
        homes, fresh = assign_homes(deployment, users)
        t = now_ms()
        written = {r: RegionCounts() for r in regions}
        for region in regions:
            store = deployment.store(region)
            mine = [u for u in users if u in fresh and homes[u] == region]
            batch = RegionBatch(
                users=[build_user(u, region, users[u], t) for u in mine],
                videos=new_videos(store, videos, regions, t, DATASET, durations),
            )
            c = write_batch(store, batch, chunk, progress.advance)
            written[region].users, written[region].videos = c.users, c.videos

        progress.start(f"importing {DATASET}", scan.rows)
        writer = _EventWriter(deployment, homes, written, progress, chunk, erased)
        skipped = 0
        if big is not None:
            skipped += writer.play_events(big, scan if split_protocol else None)
        notes = [f"home region = regions[user_id % {len(regions)}] over {regions}"]
        notes += erased_note(erased)
        if small is not None and split_protocol:
            notes += writer.test_set(small)
        elif small is not None:
            skipped += writer.play_events(small, None)
        writer.flush()
    seconds = time.perf_counter() - started
    if skipped:
        notes.append(f"{skipped} rows skipped: no usable time, or a non-positive duration")
    return ImportReport(
        dataset=DATASET,
        rows=writer.rows,
        seconds=seconds,
        written=written,
        totals=store_totals(deployment),
        skipped=skipped,
        notes=notes,
    )


class _EventWriter:
    """Buffers event and label rows per region and writes them in chunks."""

    def __init__(
        self,
        deployment: Deployment,
        homes: dict[str, str],
        written: dict[str, RegionCounts],
        progress: Progress,
        chunk: int,
        erased: set[str] | None = None,
    ) -> None:
        self.deployment = deployment
        self.homes = homes
        self.erased = erased or set()  # their rows are skipped (``erased_users``)
        self.written = written
        self.progress = progress
        self.chunk = chunk
        self.events: dict[str, list[tuple[Any, ...]]] = {r: [] for r in deployment.regions}
        self.labels: dict[str, list[tuple[str, str, str, str]]] = {
            r: [] for r in deployment.regions
        }
        self.buffered = 0
        self.rows = 0

    def play_events(self, path: Path, exclude: _Scan | None) -> int:
        """Stream a matrix into play events; returns the number of skipped rows."""
        skipped = 0
        block: list[list[str]] = []
        for r in _rows(path):
            block.append(r)
            if len(block) >= self.chunk:
                skipped += self._event_block(block, exclude)
                block = []
        skipped += self._event_block(block, exclude)
        return skipped

    def _event_block(self, block: list[list[str]], exclude: _Scan | None) -> int:
        skipped = 0
        keep = (
            ~exclude.in_small([_pair_key(r[_U], r[_V]) for r in block])
            if exclude is not None
            else None
        )
        self.rows += len(block)
        self.progress.advance(len(block))
        for i, r in enumerate(block):
            if (keep is not None and not keep[i]) or r[_U] in self.erased:
                continue
            ts, watch, dur = ts_ms(r), _int(r[_PLAY]), _int(r[_DUR])
            if ts is None or watch is None or watch < 0 or dur is None or dur <= 0:
                skipped += 1
                continue
            p = play_labels(watch, dur)
            u, v = r[_U], r[_V]
            self.events[self.homes[u]].append(
                (
                    f"{DATASET}:{u}:{v}:{ts}",
                    u,
                    v,
                    "play",
                    ts,
                    watch,
                    p.watch_ratio,
                    int(p.valid_play),
                    int(p.long_play),
                    int(p.short_play),
                )
            )
            self.buffered += 1
        if self.buffered >= self.chunk:
            self.flush()
        return skipped

    def test_set(self, path: Path) -> list[str]:
        """Write the small matrix per home region (graded) and store its positives.

        Each file is written beside its target and renamed into place at the end, so
        a failed import never leaves a truncated test set."""
        regions = self.deployment.regions
        outs = {g: self.deployment.config.region_dir(g) / "datasets" / TEST_FILE for g in regions}
        counts = dict.fromkeys(regions, 0)
        files: dict[str, TextIO] = {}
        try:
            for g, out in outs.items():
                out.parent.mkdir(parents=True, exist_ok=True)
                files[g] = out.with_suffix(".csv.partial").open("w", encoding="utf-8", newline="")
            writers = {g: csv.writer(f, lineterminator="\n") for g, f in files.items()}
            for w in writers.values():
                w.writerow(TEST_COLUMNS)
            n = 0
            for r in _rows(path):
                n += 1
                if r[_U] in self.erased:
                    continue
                home = self.homes[r[_U]]
                writers[home].writerow((r[_U], r[_V], r[_RATIO]))
                counts[home] += 1
                ratio = _float(r[_RATIO])
                if ratio is not None and ratio >= POSITIVE_RATIO:
                    self.labels[home].append((DATASET, "test", r[_U], r[_V]))
                    self.buffered += 1
                if n % self.chunk == 0:
                    self.progress.advance(self.chunk)
                if self.buffered >= self.chunk:
                    self.flush()
            self.progress.advance(n % self.chunk)
            self.rows += n
        except BaseException:
            for f in files.values():
                f.close()
            for out in outs.values():
                out.with_suffix(".csv.partial").unlink(missing_ok=True)
            raise
        for f in files.values():
            f.close()
        for out in outs.values():
            out.with_suffix(".csv.partial").replace(out)
        return [f"test set: {counts[g]} rows in {outs[g]}" for g in regions]

    def flush(self) -> None:
        for region in self.deployment.regions:
            store = self.deployment.store(region)
            events, labels = self.events[region], self.labels[region]
            if events:
                self.written[region].events += store.bulk_insert_events(
                    cast(Sequence[EventRow], events)
                )
            if labels:
                self.written[region].labels += store.insert_labels(cast(Sequence[LabelRow], labels))
            self.events[region], self.labels[region] = [], []
        self.buffered = 0


def _float(value: str) -> float | None:
    try:
        f = float(value)
    except ValueError:
        return None
    return f if f == f else None
