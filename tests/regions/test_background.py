"""Children of a serving process end with it (``fyp.regions.background``)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from fyp.regions.background import ChildScheduler


def _sleeper(marker: Path, ignore_term: bool) -> tuple[str, ...]:
    code = (
        "import pathlib, signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + f"pathlib.Path({str(marker)!r}).write_text('ready')\n"
        + "time.sleep(60)\n"
    )
    return (sys.executable, "-c", code)


class Sleeper(ChildScheduler):
    def __init__(self, interval_s: float, lock: Path) -> None:
        super().__init__(interval_s)
        self.lock = lock

    def tick(self) -> bool:
        return self.run_child(lock=self.lock)


def _started(marker: Path) -> None:
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _run(tmp_path: Path, ignore_term: bool, grace_s: float) -> tuple[float, int]:
    marker = tmp_path / "ready"
    scheduler = Sleeper(0.01, tmp_path / ".lock")
    scheduler.program = _sleeper(marker, ignore_term)
    scheduler.start()
    _started(marker)
    child = scheduler._child
    assert child is not None
    started = time.monotonic()
    try:
        scheduler.stop(grace_s=grace_s)
        return time.monotonic() - started, child.pid
    finally:
        if child.poll() is None:  # the old behaviour: clean up what the test started
            child.kill()
            child.wait()


def test_stop_ends_a_running_child(tmp_path: Path) -> None:
    """A training child left running after the server stopped published a model 9 s
    after the operator's SIGTERM."""
    took, pid = _run(tmp_path, ignore_term=False, grace_s=5)
    assert _gone(pid)
    assert took < 5


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    took, pid = _run(tmp_path, ignore_term=True, grace_s=0.5)
    assert _gone(pid)
    assert 0.4 < took < 5


def test_no_child_starts_once_stopped(tmp_path: Path) -> None:
    scheduler = Sleeper(0.01, tmp_path / ".lock")
    scheduler.program = _sleeper(tmp_path / "ready", ignore_term=False)
    scheduler.stop()
    assert scheduler.tick() is False
    assert scheduler.runs == 0 and not (tmp_path / "ready").exists()
