"""The server meets the erasure deadline itself: no operator cron is needed.

``fyp serve`` starts an :class:`ErasureScheduler`. Every ``[erasure]
check_every_minutes`` it reads the pending retrains the region's artifacts record (a
manifest read per version, no store access) and, when the earliest deadline is within
half of ``retrain_within_hours``, runs ``fyp erasure process`` in a child process at a
lower CPU priority (``fyp.regions.background``), holding the deployment's
``.schedule-erasure.lock``: of several hosts, one runs it at a time. Given
``consent_deadline`` (``fyp serve`` passes ``consent_log.withdrawal_deadline`` on its
open deployment: the live manifest and the audit entries after its read), the deadline
of withdrawals of consent to model training counts too, so a deployment whose training
schedule is off (or slower than the window) still meets it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fyp.config import DeploymentConfig
from fyp.regions.background import ChildScheduler, schedule_lock
from fyp.sovereignty.erasure_journal import stopped_marks
from fyp.sovereignty.erasure_process import pending_retrains

log = logging.getLogger("fyp.background")


class ErasureScheduler(ChildScheduler):
    """Background check-and-retrain loop of one serving process."""

    name = "fyp-erasure"
    config: DeploymentConfig

    def __init__(
        self,
        config: DeploymentConfig,
        consent_deadline: Callable[[str], int | None] | None = None,
    ) -> None:
        super().__init__(config.erasure.check_every_minutes * 60.0)
        self.config = config
        self.window_ms = int(config.erasure.retrain_within_hours * 3_600_000)
        self.consent_deadline = consent_deadline

    def due(self, now_ms: int | None = None) -> bool:
        """Whether an erasure stopped part-way, or some region's earliest pending deadline
        (an erasure's, or a consent withdrawal's) is within half the window."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if stopped_marks(self.config):  # an erasure cut short: its process opens and ends it
            return True
        for region in self.config.region_names:
            deadlines = [*pending_retrains(self.config.region_dir(region)).values()]
            withdrawn = self._consent_due(region)
            deadlines += [] if withdrawn is None else [withdrawn]
            if deadlines and min(deadlines) - now <= self.window_ms // 2:
                return True
        return False

    def _consent_due(self, region: str) -> int | None:
        if self.consent_deadline is None:
            return None
        try:
            return self.consent_deadline(region)
        except Exception as exc:  # a store that does not answer: the next round asks again
            log.warning("region %s: consent deadlines could not be read: %s", region, exc)
            return None

    def tick(self) -> bool:
        """Run ``fyp erasure process`` when due; True if it ran (and succeeded)."""
        if not self.due():
            return False
        hours = str(self.config.erasure.retrain_within_hours)  # everything pending
        root = self.config.root
        lock = schedule_lock(root, "erasure")  # one run processes every region
        return self.run_child("erasure", "process", str(root), "--due-within", hours, lock=lock)
