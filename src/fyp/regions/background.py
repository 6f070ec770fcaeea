"""Work a serving process hands to a child process on a schedule.

Training and erasure retrains take seconds of CPU and most of a region's memory. In a
child process at a lower CPU priority they never hold the serving process's GIL, a
crash there cannot take the server down, and the server picks up what they publish the
way it picks up any new model version. A child must not outlive the server that started
it (a training run would publish a model after the operator stopped the service):
:meth:`ChildScheduler.stop` ends it, and whatever it started, at shutdown.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod

log = logging.getLogger("fyp.background")
STOP_GRACE_S = 5.0  # a child asked to stop (SIGTERM) is killed (SIGKILL) after this


class ChildScheduler(ABC):
    """A loop in a thread of the serving process: every ``interval_s`` it calls
    :meth:`tick`, which decides whether to run a ``fyp`` command in a child process.
    An interval of 0 turns it off (the operator runs the command from cron)."""

    name = "fyp-background"
    program: tuple[str, ...] = (sys.executable, "-m", "fyp")
    """What a child runs, before its arguments."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.runs = 0  # child processes run
        self.failures = 0  # of which exited non-zero or could not start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None
        self._child_lock = threading.Lock()  # no child starts once stop() has looked

    @abstractmethod
    def tick(self) -> bool:
        """Do one round of the schedule; True if a child ran and succeeded."""

    def run_child(self, *args: str) -> bool:
        """Run ``python -m fyp ARGS`` to completion at a lower priority; a failure is
        logged with the end of what the child wrote to stderr. In a process group of
        its own, so :meth:`stop` ends whatever the child started too."""
        with self._child_lock:
            if self._stop.is_set():
                return False
            self.runs += 1
            try:
                child = subprocess.Popen(
                    [*self.program, *args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    preexec_fn=_lower_priority if os.name == "posix" else None,
                    start_new_session=True,
                )
            except OSError as exc:
                self.failures += 1
                log.error("%s: could not start `fyp %s`: %s", self.name, " ".join(args), exc)
                return False
            self._child = child
        try:
            _, stderr = child.communicate()
        finally:
            with self._child_lock:
                self._child = None
        if child.returncode != 0:
            self.failures += 1
            log.error(
                "%s: `fyp %s` exited %d: %s",
                self.name,
                " ".join(args),
                child.returncode,
                "stopped with the server" if self._stop.is_set() else stderr.strip()[-2000:],
            )
            return False
        return True

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the schedule and end a child still running: SIGTERM to its process
        group, SIGKILL after ``grace_s``. Returns once the child is gone."""
        with self._child_lock:
            self._stop.set()
            child = self._child
        if child is None or child.poll() is not None:
            return
        _signal_group(child, signal.SIGTERM)
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s: child %d ignored SIGTERM: killed", self.name, child.pid)
            _signal_group(child, signal.SIGKILL)
            child.wait()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except (OSError, ValueError):
                continue  # a damaged manifest or file: try again next time


def _lower_priority() -> None:
    os.nice(10)


def _signal_group(child: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Signal the child and every process it started (its own session's group)."""
    try:
        if os.name == "posix":
            os.killpg(child.pid, sig)
        else:
            child.send_signal(sig)
    except ProcessLookupError:
        pass  # already gone
