"""Counters shared by the workers of one server (``fyp serve --workers``): whichever
worker answers a scrape, the totals are the host's and never go back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fyp.serving.metrics import OWNER_FILE, ServerMetrics, SharedCounts, shared_directory


def _worker(directory: Path, name: str) -> ServerMetrics:
    metrics = ServerMetrics()
    metrics.shared = SharedCounts(directory, name)
    return metrics


def _requests(metrics: ServerMetrics) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == "fyp_http_requests_total":
                total += s.value
    return total


def test_a_scrape_sums_every_worker_and_the_supervisors_schedules(tmp_path: Path) -> None:
    one, two = _worker(tmp_path, "w1"), _worker(tmp_path, "w2")
    SharedCounts(tmp_path, "supervisor").write(
        {"schedules": [["fyp-training", 3, 1, 2]], "started": 100.0}
    )
    one.request("/healthz", "GET", 200, 0.002)
    two.request("/healthz", "GET", 200, 0.2)
    two.request("/v1/users", "POST", 201, 0.004)
    one.tab_page("us", 10)
    two.tab_page("us", 4)
    one.guest_page("eu", 10)
    two.guest_page("eu", 5)
    two.guest_page("us", 0)
    two.flush()  # its thread's once-a-second write
    text = one.exposition().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert samples["fyp_http_requests_total", healthz] == 2
    assert samples["fyp_http_request_duration_seconds_count", (("route", "/healthz"),)] == 2
    bucket = (("le", "0.0025"), ("route", "/healthz"))
    assert samples["fyp_http_request_duration_seconds_bucket", bucket] == 1
    assert samples["fyp_background_runs_total", (("schedule", "fyp-training"),)] == 3
    assert samples["fyp_background_failures_total", (("schedule", "fyp-training"),)] == 1
    assert samples["fyp_background_skipped_total", (("schedule", "fyp-training"),)] == 2
    assert samples["fyp_process_start_time_seconds", ()] == 100.0  # the supervisor's
    assert samples["fyp_following_tab_pages_total", (("region", "us"),)] == 2
    assert samples["fyp_following_tab_items_total", (("region", "us"),)] == 14
    assert samples["fyp_guest_feed_pages_total", (("region", "eu"),)] == 2
    assert samples["fyp_guest_feed_items_total", (("region", "eu"),)] == 15
    assert samples["fyp_guest_feed_pages_total", (("region", "us"),)] == 1


def test_one_process_reports_its_own_live_counters_and_writes_nothing(tmp_path: Path) -> None:
    metrics = ServerMetrics()  # fyp serve without --workers
    metrics.request("/healthz", "GET", 200, 0.001)
    assert _requests(metrics) == 1
    assert metrics.totals().requests is metrics.requests  # no copy on the scrape
    assert not list(tmp_path.iterdir())


Step = tuple[str, int]
steps = st.lists(
    st.tuples(st.sampled_from(["request", "flush", "scrape", "kill"]), st.integers(0, 2)),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_totals_never_go_back_and_lose_nothing_a_scrape_reported(plan: list[Step]) -> None:
    """Requests, the workers' periodic writes, scrapes through any worker and workers
    killed (replaced by a new one, the old file left): every scrape's total is at least
    the one before, and once every live worker has written, it is every request made
    except those a killed worker had not written yet."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        names = iter(f"w{k}" for k in range(1000))
        live = [_worker(directory, next(names)) for _ in range(3)]
        made, lost, last = 0, 0, 0.0
        for action, k in plan:
            worker = live[k]
            if action == "request":
                worker.request("/healthz", "GET", 200, 0.001)
                made += 1
            elif action == "flush":
                worker.flush()
            elif action == "scrape":
                total = _requests(worker)
                assert total >= last
                last = total
            else:  # kill -9: what it never wrote is gone, the rest keeps counting
                written = directory / f"{worker.shared.name}.json"  # type: ignore[union-attr]
                lost += sum(worker.requests.values()) - _file_requests(written)
                live[k] = _worker(directory, next(names))
        for worker in live:
            worker.flush()
        for worker in live:
            assert _requests(worker) == made - lost >= last


def _file_requests(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(int(n) for *_, n in json.loads(path.read_text())["requests"])


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_killed_servers_directory_goes_a_live_ones_stays(tmp_path: Path) -> None:
    """What ``kill -9`` of a supervisor leaves is removed by the next server's start;
    a live server's directory, and one that names no owner, are left alone."""
    dead = tmp_path / "fyp-serve-8000-dead"
    live = tmp_path / "fyp-serve-8001-live"
    unnamed = tmp_path / "fyp-serve-8002-unnamed"
    other = tmp_path / "not-ours"
    for d in (dead, live, unnamed, other):
        d.mkdir()
        SharedCounts(d, "w1").write({"requests": []})
    (dead / OWNER_FILE).write_text(str(_dead_pid()))
    (live / OWNER_FILE).write_text(str(os.getpid()))
    (other / OWNER_FILE).write_text(str(_dead_pid()))
    made = shared_directory(8000, parent=tmp_path)
    assert not dead.exists()
    assert live.exists() and unnamed.exists() and other.exists()
    assert made.name.startswith("fyp-serve-8000-") and made.is_dir()
    assert (made / OWNER_FILE).read_text() == str(os.getpid())
    assert made.stat().st_mode & 0o777 == 0o700
    assert shared_directory(8000, parent=tmp_path) != made  # each server its own
    assert made.exists()  # its owner (this process) is alive
