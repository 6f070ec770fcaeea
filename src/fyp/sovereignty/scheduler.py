"""The server meets the erasure deadline itself: no operator cron is needed.

``fyp serve`` starts an :class:`ErasureScheduler`. Every ``[erasure]
check_every_minutes`` it reads the pending retrains the region's artifacts record (a
manifest read per version, no store access) and, when the earliest deadline is within
half of ``retrain_within_hours``, runs ``fyp erasure process`` in a child process at a
lower CPU priority (``fyp.regions.background``), holding the deployment's
``.schedule-erasure.lock``: of several hosts, one runs it at a time.
"""

from __future__ import annotations

import time

from fyp.config import DeploymentConfig
from fyp.regions.background import ChildScheduler, schedule_lock
from fyp.sovereignty.erasure_process import pending_retrains


class ErasureScheduler(ChildScheduler):
    """Background check-and-retrain loop of one serving process."""

    name = "fyp-erasure"

    def __init__(self, config: DeploymentConfig) -> None:
        super().__init__(config.erasure.check_every_minutes * 60.0)
        self.config = config
        self.window_ms = int(config.erasure.retrain_within_hours * 3_600_000)

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
        root = self.config.root
        lock = schedule_lock(root, "erasure")  # one run processes every region
        return self.run_child("erasure", "process", str(root), "--due-within", hours, lock=lock)
