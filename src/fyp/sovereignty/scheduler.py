"""The server meets the erasure deadline itself: no operator cron is needed.

``fyp serve`` starts an :class:`ErasureScheduler`. Every ``[erasure]
check_every_minutes`` it reads the pending retrains the region's artifacts record (a
manifest read per version, no store access) and, when the earliest deadline is within
half of ``retrain_within_hours``, runs ``fyp erasure process`` in a child process at a
lower CPU priority: training never holds the serving process's GIL, and the server
switches to the retrained artifact the way it picks up any new version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from fyp.config import DeploymentConfig
from fyp.sovereignty.erasure_process import pending_retrains


class ErasureScheduler:
    """Background check-and-retrain loop of one serving process."""

    def __init__(self, config: DeploymentConfig) -> None:
        self.config = config
        self.interval_s = config.erasure.check_every_minutes * 60.0
        self.window_ms = int(config.erasure.retrain_within_hours * 3_600_000)
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, now_ms: int | None = None) -> bool:
        """Whether some region's earliest pending deadline is within half the window."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        for region in self.config.region_names:
            deadlines = pending_retrains(self.config.region_dir(region)).values()
            if deadlines and min(deadlines) - now <= self.window_ms // 2:
                return True
        return False

    def tick(self) -> bool:
        """Run ``fyp erasure process`` when due; True if it ran (and succeeded)."""
        if not self.due():
            return False
        hours = str(self.config.erasure.retrain_within_hours)  # everything pending
        command = [sys.executable, "-m", "fyp", "erasure", "process", str(self.config.root)]
        done = subprocess.run(
            [*command, "--due-within", hours],
            capture_output=True,
            check=False,
            preexec_fn=_lower_priority if os.name == "posix" else None,
        )
        self.runs += 1
        return done.returncode == 0

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="fyp-erasure", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except (OSError, ValueError):
                continue  # a damaged manifest or a failed spawn: try again next time


def _lower_priority() -> None:
    os.nice(10)
