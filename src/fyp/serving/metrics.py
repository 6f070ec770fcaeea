"""Prometheus metrics of a serving process: ``GET /metrics``.

What an operator graphs and alerts on: requests and their latency by route and status,
the feed's items by candidate source, the Following tab's pages and items, and, read
from each region when scraped, the live
model (version, age), the moderation backlog (videos by state, review jobs by status)
and the server's background children (runs, failures).

Requests only bump plain counters (a dict entry and a histogram bucket, ~1 µs): the
metric families are built when Prometheus scrapes, never on a request's path. Nothing
here names a user or a video: labels are routes, regions, sources and states.

With ``fyp serve --workers N`` a scrape reaches one worker of several, so the counters
are shared (:class:`SharedCounts`): each worker writes a snapshot of its own to a file
of a private directory about once a second, off the request path (``fyp.cli.workers``),
and the worker answering a scrape first writes its own, then sums its live counters
with every other file there, the supervisor's schedule counts included. A worker that
died keeps its last file, so the totals never go back when it is replaced: whatever a
scrape reported is in a file by then. The per-region gauges are read at scrape time by
the worker answering, never summed.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from fyp.feed.page import FeedItem
    from fyp.regions.background import ChildScheduler
    from fyp.serving.dependencies import AppState
    from fyp.serving.reload import ConfigReloader

log = logging.getLogger("fyp.serving")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Request latency buckets (seconds): a feed page is ~3 ms, a batch of events ~10 ms."""


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


ScheduleRow = tuple[str, int, int, int]
"""A schedule's (name, runs, failures, skipped)."""


def schedule_rows(schedules: Sequence[ChildScheduler]) -> list[ScheduleRow]:
    return [(s.name, s.runs, s.failures, s.skipped) for s in schedules]


@dataclass
class _Totals:
    """The counts a scrape reports: one process's, or a server's summed."""

    requests: Counter[tuple[str, str, int]]
    latency: dict[str, _Histogram]
    items: Counter[tuple[str, str]]
    pages: Counter[tuple[str, bool]]
    schedules: list[ScheduleRow] = field(default_factory=list)
    started: float = 0.0
    tab_pages: Counter[str] = field(default_factory=Counter)
    tab_items: Counter[str] = field(default_factory=Counter)
    guest_pages: Counter[str] = field(default_factory=Counter)
    guest_items: Counter[str] = field(default_factory=Counter)

    def add(self, snapshot: dict[str, Any]) -> None:
        """Add a snapshot (:meth:`ServerMetrics.snapshot`, or a supervisor's) read from
        a file."""
        for route, method, status, n in snapshot.get("requests", ()):
            self.requests[route, method, int(status)] += int(n)
        for route, counts, total in snapshot.get("latency", ()):
            h = self.latency.get(route)
            if h is None:
                h = self.latency[route] = _Histogram()
            if len(counts) == len(h.counts):  # same buckets: same fyp version
                h.counts = [a + int(b) for a, b in zip(h.counts, counts, strict=True)]
                h.total += float(total)
        for region, source, n in snapshot.get("items", ()):
            self.items[region, source] += int(n)
        for region, profiled, n in snapshot.get("pages", ()):
            self.pages[region, bool(profiled)] += int(n)
        for name in _BY_REGION:
            by_region: Counter[str] = getattr(self, name)
            for region, n in snapshot.get(name, ()):
                by_region[region] += int(n)
        mine = {row[0]: row for row in self.schedules}
        for name, runs, failures, skipped in snapshot.get("schedules", ()):
            _, r, f, k = mine.get(name, (name, 0, 0, 0))
            mine[name] = (name, r + int(runs), f + int(failures), k + int(skipped))
        self.schedules = list(mine.values())
        started = float(snapshot.get("started", 0.0))
        if started and (not self.started or started < self.started):
            self.started = started


_BY_REGION = {
    "tab_pages": (
        "fyp_following_tab_pages",
        "Following tab pages served (the followed creators' videos, not ranked)",
    ),
    "tab_items": ("fyp_following_tab_items", "Videos served in Following tab pages"),
    "guest_pages": (
        "fyp_guest_feed_pages",
        "Guest feed pages served (GET /v1/regions/{region}/feed: no user, not profiled)",
    ),
    "guest_items": ("fyp_guest_feed_items", "Videos served in guest feed pages"),
}
"""The counters kept by region alone (a snapshot's lists of ``[region, n]``): each
one's metric and help."""


class SharedCounts:
    """The files through which the processes of one server (``fyp serve --workers``)
    share their counters: ``NAME.json`` each, in a directory only they use (the
    supervisor's ``supervisor.json`` holds the schedules' counts and the server's start)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name

    @property
    def path(self) -> Path:
        return self.directory / f"{self.name}.json"

    def write(self, snapshot: dict[str, Any]) -> None:
        """Replace this process's file whole (a reader sees the old one or the new one)."""
        tmp = self.directory / f".{self.name}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(snapshot, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.path)

    def others(self) -> Iterator[dict[str, Any]]:
        """The last snapshot of every other process of the server, a dead one's too."""
        for path in sorted(self.directory.glob("*.json")):
            if path.name == self.path.name:
                continue
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:  # cleaned up under us: the server stops
                log.warning("metrics: cannot read %s: %s", path, exc)


SHARED_PREFIX = "fyp-serve-"  # the shared directories' names: fyp-serve-PORT-RANDOM
OWNER_FILE = "owner.pid"  # the supervisor's process id, to tell a dead server's directory


def shared_directory(port: int, parent: Path | None = None) -> Path:
    """A new directory (mode 0700) for one server's :class:`SharedCounts`, after removing
    those a server killed with ``kill -9`` left (its supervisor's process is gone: its
    ``finally`` never ran). Only this user's directories that name their owner are
    removed, and only when no process has that id, so a live server's is never touched
    (a reused id keeps a dead one's, harmlessly)."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    for old in parent.glob(f"{SHARED_PREFIX}*"):
        try:
            if old.stat().st_uid != os.getuid() or not old.is_dir():
                continue
            pid = int((old / OWNER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours, or no owner named (being made, or an older version's)
        if not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
            log.info("metrics: removed %s, left by a server that is gone (pid %d)", old, pid)
    made = Path(tempfile.mkdtemp(prefix=f"{SHARED_PREFIX}{port}-", dir=parent))
    (made / OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
    return made


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class ServerMetrics:
    """The process's counters; a scrape reads them, and the regions, through a view
    (:class:`_View`) limited to the regions the key may see."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency: dict[str, _Histogram] = {}
        self.items: Counter[tuple[str, str]] = Counter()
        self.pages: Counter[tuple[str, bool]] = Counter()  # (region, profiled)
        self.tab_pages: Counter[str] = Counter()  # region: Following tab pages
        self.tab_items: Counter[str] = Counter()  # region: videos on them
        self.guest_pages: Counter[str] = Counter()  # region: guest feed pages
        self.guest_items: Counter[str] = Counter()  # region: videos on them
        self.started = time.time()
        self.app: AppState | None = None  # set once the app exists
        self.shared: SharedCounts | None = None  # one worker of several: see the module
        self._flushing = threading.Lock()  # a snapshot and its write: the file never goes back

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[route, method, status] += 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = _Histogram()
        histogram.observe(seconds)

    def page(self, region: str, items: Iterable[FeedItem], personalised: bool = True) -> None:
        self.items.update([(region, item.source) for item in items])  # counted in C
        self.pages[region, personalised] += 1

    def tab_page(self, region: str, items: int) -> None:
        """A Following tab page served (``fyp.feed.following_tab``): not For You, so
        counted apart from ``fyp_feed_pages`` and ``fyp_feed_items``."""
        self.tab_pages[region] += 1
        self.tab_items[region] += items

    def guest_page(self, region: str, items: int) -> None:
        """A guest feed page served (``fyp.feed.guest``): nobody's For You, so counted
        apart from ``fyp_feed_pages`` and ``fyp_feed_items``."""
        self.guest_pages[region] += 1
        self.guest_items[region] += items

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data. Safe from another thread than the event loop's:
        each dict and list is copied whole by one C call, during which no request runs."""
        requests, latency = dict(self.requests), list(self.latency.items())
        items, pages = dict(self.items), dict(self.pages)
        by_region = {name: dict(getattr(self, name)) for name in _BY_REGION}
        return {
            "requests": [[*key, n] for key, n in requests.items()],
            "latency": [[route, h.counts[:], h.total] for route, h in latency],
            "items": [[*key, n] for key, n in items.items()],
            "pages": [[*key, n] for key, n in pages.items()],
            **{name: [[r, n] for r, n in counts.items()] for name, counts in by_region.items()},
            "started": self.started,
        }

    def flush(self) -> dict[str, Any]:
        """Write this process's counters to its shared file (if shared); returns them."""
        with self._flushing:
            snapshot = self.snapshot()
            if self.shared is not None:
                self.shared.write(snapshot)
            return snapshot

    def totals(self) -> _Totals:
        """What a scrape reports: this process's counts or, shared, the server's."""
        schedules = schedule_rows(self.app.schedules) if self.app is not None else []
        if self.shared is None:
            return _Totals(
                self.requests,
                self.latency,
                self.items,
                self.pages,
                schedules,
                self.started,
                self.tab_pages,
                self.tab_items,
                self.guest_pages,
                self.guest_items,
            )
        mine = self.flush()  # first: what this scrape reports is never lost
        totals = _Totals(Counter(), {}, Counter(), Counter(), schedules)
        totals.add(mine)
        for other in self.shared.others():
            totals.add(other)
        return totals

    def exposition(self, regions: Collection[str] | None = None) -> bytes:
        """The text a scrape gets: the process's counts, and those of ``regions`` (None:
        every region) — a key for one region sees nothing labelled with another."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_View(self, regions))
        return generate_latest(registry)


class _View(Collector):
    """The metrics as one key may see them."""

    def __init__(self, metrics: ServerMetrics, regions: Collection[str] | None) -> None:
        self.metrics = metrics
        self.regions = regions

    def visible(self, region: str) -> bool:
        return self.regions is None or region in self.regions

    def collect(self) -> Iterator[Metric]:
        totals = self.metrics.totals()
        yield from self._process(totals)
        yield from _schedules(totals.schedules)
        app = self.metrics.app
        if app is not None:
            yield from _regions(app, [r for r in app.deployment.regions if self.visible(r)])
            if app.reloader is not None:
                yield from _config(app.reloader)

    def _process(self, m: _Totals) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "fyp_http_requests", "HTTP requests answered", labels=["route", "method", "status"]
        )
        for (route, method, status), n in sorted(m.requests.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "fyp_http_request_duration_seconds",
            "Time from a request's start to its response, by route",
            labels=["route"],
        )
        for route, h in sorted(m.latency.items()):
            latency.add_metric([route], h.cumulative(), h.total)
        yield latency
        items = CounterMetricFamily(
            "fyp_feed_items",
            "Videos served in feed pages, by candidate source",
            labels=["region", "source"],
        )
        for (region, source), n in sorted(m.items.items()):
            if self.visible(region):
                items.add_metric([region, source], n)
        yield items
        pages = CounterMetricFamily(
            "fyp_feed_pages",
            "Feed pages served, by whether they were profiled (false: the user's "
            "personalised_feed consent is off)",
            labels=["region", "personalised"],
        )
        for (region, profiled), n in sorted(m.pages.items()):
            if self.visible(region):
                pages.add_metric([region, "true" if profiled else "false"], n)
        yield pages
        for counter, (name, about) in _BY_REGION.items():
            family = CounterMetricFamily(name, about, labels=["region"])
            for region, n in sorted(getattr(m, counter).items()):
                if self.visible(region):
                    family.add_metric([region], n)
            yield family
        yield GaugeMetricFamily(
            "fyp_process_start_time_seconds",
            "When this serving process (with --workers, its supervisor) started",
            m.started,
        )


def _regions(app: AppState, regions: Sequence[str]) -> Iterator[Metric]:
    """Per-region state, read now. A region that cannot be read reports ``fyp_region_up
    0`` (logged) and nothing else: a scrape never fails for one region."""
    up = GaugeMetricFamily(
        "fyp_region_up", "1 if the region's store answered this scrape", labels=["region"]
    )
    model = GaugeMetricFamily(
        "fyp_model_info", "The live model version served", labels=["region", "version"]
    )
    age = GaugeMetricFamily(
        "fyp_model_trained_timestamp_seconds", "When the live model was trained", labels=["region"]
    )
    videos = GaugeMetricFamily(
        "fyp_moderation_videos", "Catalogue videos by moderation state", labels=["region", "state"]
    )
    jobs = GaugeMetricFamily(
        "fyp_moderation_review_jobs", "Human review jobs by status", labels=["region", "status"]
    )
    for region in regions:
        try:
            mod = app.moderator.cell(region).mod
            states, by_status = mod.count_by_state(), mod.count_jobs_by_status()
        except Exception as exc:  # whatever it is, the region is not answering
            log.error("metrics: the store of region %s: %s", region, exc)
            up.add_metric([region], 0)
            continue
        up.add_metric([region], 1)
        for state, n in sorted(states.items()):
            videos.add_metric([region, state], n)
        for status, n in sorted(by_status.items()):
            jobs.add_metric([region, status], n)
        try:
            manifest = app.feed.model(region).manifest
        except Exception:  # no model: readiness says why; here it is just absent
            continue
        model.add_metric([region, manifest.version], 1)
        trained = _timestamp(manifest.created_at)
        if trained is not None:
            age.add_metric([region], trained)
    yield from (up, model, age, videos, jobs)


def _schedules(schedules: Sequence[ScheduleRow]) -> Iterator[Metric]:
    runs = CounterMetricFamily(
        "fyp_background_runs", "Child processes the server's schedules ran", labels=["schedule"]
    )
    failures = CounterMetricFamily(
        "fyp_background_failures",
        "Of those, the ones that exited non-zero or could not start",
        labels=["schedule"],
    )
    skipped = CounterMetricFamily(
        "fyp_background_skipped",
        "Runs left to another host or process that held the schedule's lock",
        labels=["schedule"],
    )
    for name, n_runs, n_failures, n_skipped in schedules:
        runs.add_metric([name], n_runs)
        failures.add_metric([name], n_failures)
        skipped.add_metric([name], n_skipped)
    yield from (runs, failures, skipped)


def _config(reloader: ConfigReloader) -> Iterator[Metric]:
    """What ``fyp.toml`` content is in force (hosts that agree show one sha256) and how
    its edits went (``fyp.serving.reload``)."""
    reloads = CounterMetricFamily(
        "fyp_config_reloads",
        "Edits of fyp.toml this process looked at, by result (applied; invalid or "
        "needs_restart: refused whole, the config in force stays; failed: tried again)",
        labels=["result"],
    )
    for result, n in sorted(reloader.results.items()):
        reloads.add_metric([result], n)
    info = GaugeMetricFamily(
        "fyp_config_info", "The sha256 of the fyp.toml content in force", labels=["sha256"]
    )
    info.add_metric([reloader.in_force], 1)
    applied = GaugeMetricFamily(
        "fyp_config_applied_timestamp_seconds",
        "When the config in force was applied (the process's start, or a reload)",
        reloader.applied_at,
    )
    yield from (reloads, info, applied)


def _timestamp(iso: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None
