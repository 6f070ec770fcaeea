"""Work a serving process hands to a child process on a schedule.

Training and erasure retrains take seconds of CPU and most of a region's memory. In a
child process at a lower CPU priority they never hold the serving process's GIL, a
crash there cannot take the server down, and the server picks up what they publish the
way it picks up any new model version.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from abc import ABC, abstractmethod

log = logging.getLogger("fyp.background")


class ChildScheduler(ABC):
    """A loop in a thread of the serving process: every ``interval_s`` it calls
    :meth:`tick`, which decides whether to run a ``fyp`` command in a child process.
    An interval of 0 turns it off (the operator runs the command from cron)."""

    name = "fyp-background"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.runs = 0  # child processes run
        self.failures = 0  # of which exited non-zero or could not start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def tick(self) -> bool:
        """Do one round of the schedule; True if a child ran and succeeded."""

    def run_child(self, *args: str) -> bool:
        """Run ``python -m fyp ARGS`` to completion at a lower priority; a failure is
        logged with the end of what the child wrote to stderr."""
        self.runs += 1
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fyp", *args],
                capture_output=True,
                text=True,
                check=False,
                preexec_fn=_lower_priority if os.name == "posix" else None,
            )
        except OSError as exc:
            self.failures += 1
            log.error("%s: could not start `fyp %s`: %s", self.name, " ".join(args), exc)
            return False
        if done.returncode != 0:
            self.failures += 1
            log.error(
                "%s: `fyp %s` exited %d: %s",
                self.name,
                " ".join(args),
                done.returncode,
                done.stderr.strip()[-2000:],
            )
            return False
        return True

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except (OSError, ValueError):
                continue  # a damaged manifest or file: try again next time


def _lower_priority() -> None:
    os.nice(10)
