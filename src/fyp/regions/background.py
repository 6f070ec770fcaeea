"""Work a serving process hands to a child process on a schedule.

Training and erasure retrains take seconds of CPU and most of a region's memory. In a
child process at a lower CPU priority they never hold the serving process's GIL, a
crash there cannot take the server down, and the server picks up what they publish the
way it picks up any new model version. A child must not outlive the server that started
it (a training run would publish a model after the operator stopped the service):
:meth:`ChildScheduler.stop` ends it, and whatever it started, at shutdown.

Several hosts serving one deployment directory each run the same schedules; each run
takes an exclusive file lock there first (:func:`schedule_lock`, with ``fyp.filelock``,
the machinery of the models lock), and a host whose tick finds it held skips that tick
(counted in :attr:`ChildScheduler.skipped`): a schedule's work runs on one host at a
time. Which process holds the lock: the serving process takes it, without waiting,
just before it starts the child, and passes the locked descriptor on to the child. The
lock belongs to that one open file, so it is held while *either* process lives:

- the serving process holds it until the child has exited, then unlocks it (for
  anything the child left running, too), so a child that crashes or is stopped at
  shutdown frees the schedule at once;
- a server killed with ``kill -9`` cannot stop its child (in a session of its own, it
  runs on and may publish): the child still holds the lock, so no other host starts a
  second run beside it, and the kernel releases the lock when the child exits.

Taking the lock in the child command instead would start a Python process, with all
of fyp's imports, on every host at every tick only to find the lock taken, and a skip
would look like any other exit. The lock files stay (see ``fyp.filelock``).

The same commands run by hand or from cron (``fyp train``, ``fyp moderate``, ``fyp
erasure process``, ``fyp user blocks-settle``) take their schedule's lock themselves
(:func:`holding`), so they never run beside a scheduled run or each other: they wait for
it, or with ``--no-wait`` stop with ``run_in_progress``. A scheduled child is told it
already holds its lock by :data:`HELD_LOCK_ENV`, the number of the descriptor it was
passed, which it checks is open on that very lock file and holds its lock (a stray
variable cannot make a run skip the lock).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fyp.errors import RunInProgress
from fyp.filelock import open_locked, try_lock, try_open_locked, unlock

if TYPE_CHECKING:
    from fyp.config import DeploymentConfig

log = logging.getLogger("fyp.background")
STOP_GRACE_S = 5.0  # a child asked to stop (SIGTERM) is killed (SIGKILL) after this


HELD_LOCK_ENV = "FYP_SCHEDULE_LOCK_FD"
"""Set by :meth:`ChildScheduler.run_child` in its child: the descriptor holding its lock."""


def schedule_lock(directory: Path, kind: str) -> Path:
    """The lock file of a schedule's runs: in the deployment directory for one that
    runs for the whole deployment, in the region's directory for one run per region."""
    return directory / f".schedule-{kind}.lock"


def inherited(lock: Path) -> bool:
    """Whether this process was started holding ``lock`` (a scheduled child): the
    descriptor :data:`HELD_LOCK_ENV` names is open on that same file, and locking it
    again succeeds (a no-op for the open file that holds the lock; one that did not
    hold it now does, or fails if another does)."""
    raw = os.environ.get(HELD_LOCK_ENV)
    if raw is None:
        return False
    try:
        fd = int(raw)
        held, named = os.fstat(fd), os.stat(lock)
        return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino) and try_lock(fd)
    except (ValueError, OSError):
        return False


@contextmanager
def holding(
    lock: Path, what: str, wait: bool = True, waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """Run ``what`` (e.g. ``training``) holding its schedule's ``lock``, as a scheduled
    run does: at once if free (or already held: a scheduled child), else after the run
    holding it ends (``waiting`` is called first, to say so), or, with ``wait=False``,
    not at all: :class:`~fyp.errors.RunInProgress`."""
    if inherited(lock):
        yield
        return
    fd = try_open_locked(lock)
    if fd is None:
        if not wait:
            raise RunInProgress(
                f"another {what} run holds {lock} (a server's schedule, or the same "
                "command run elsewhere): try again once it has finished, or leave out "
                "--no-wait to wait for it",
                lock=str(lock),
            )
        if waiting is not None:
            waiting()
        fd = open_locked(lock)
    try:
        yield
    finally:
        unlock(fd)


class ChildScheduler(ABC):
    """A loop in a thread of the serving process: every ``interval_s`` it calls
    :meth:`tick`, which decides whether to run a ``fyp`` command in a child process.
    An interval of 0 turns it off (the operator runs the command from cron)."""

    name = "fyp-background"
    program: tuple[str, ...] = (sys.executable, "-m", "fyp")
    """What a child runs, before its arguments."""
    config: DeploymentConfig | None = None
    """The deployment's config its rounds read, if any."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.runs = 0  # child processes run
        self.failures = 0  # of which exited non-zero or could not start
        self.skipped = 0  # ticks that found another run holding the lock: no child
        self._stop = threading.Event()
        self._wake = threading.Event()  # a round now, not at the end of the interval
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None
        self._child_lock = threading.Lock()  # no child starts once stop() has looked

    @abstractmethod
    def tick(self) -> bool:
        """Do one round of the schedule; True if a child ran and succeeded."""

    def wake(self) -> None:
        """Run the next round now (a running one finishes first; nothing if off)."""
        self._wake.set()

    def due_now(self) -> bool:
        """Whether the first round is due as soon as the schedule starts (checked in its
        thread); by default it comes after the first interval."""
        return False

    def config_changed(self, old: DeploymentConfig, new: DeploymentConfig) -> None:
        """``fyp.toml`` was reloaded while serving (``fyp.serving.reload``): its rounds
        read ``new`` from now on; a schedule whose work the change makes due wakes too
        (by default none does)."""
        if self.config is not None:
            self.config = new

    def run_child(self, *args: str, lock: Path) -> bool:
        """Run ``python -m fyp ARGS`` to completion at a lower priority, holding
        ``lock`` (see the module's docstring), or skip it when another run holds it; a
        failure is logged with the end of what the child wrote to stderr. In a process
        group of its own, so :meth:`stop` ends whatever the child started too."""
        command = " ".join(args)
        with self._child_lock:
            if self._stop.is_set():
                return False
            try:
                fd = try_open_locked(lock)
            except OSError as exc:  # cannot tell whether another host runs it: do not
                self.runs += 1
                self.failures += 1
                log.error("%s: could not lock %s for `fyp %s`: %s", self.name, lock, command, exc)
                return False
            if fd is None:
                self.skipped += 1
                log.info("%s: `fyp %s` skipped: another run holds %s", self.name, command, lock)
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
                    pass_fds=(fd,),  # the child holds the lock too: it outlives a killed server
                    env={**os.environ, HELD_LOCK_ENV: str(fd)},  # and knows it (``holding``)
                )
            except OSError as exc:
                unlock(fd)
                self.failures += 1
                log.error("%s: could not start `fyp %s`: %s", self.name, command, exc)
                return False
            self._child = child
        try:
            _, stderr = child.communicate()
        finally:
            with self._child_lock:
                self._child = None
            unlock(fd)
        if child.returncode != 0:
            self.failures += 1
            log.error(
                "%s: `fyp %s` exited %d: %s",
                self.name,
                command,
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
        group, SIGKILL after ``grace_s``. Returns once the child is gone and the
        schedule's thread has let go of its lock (``run_child`` unlocks after the child)."""
        with self._child_lock:
            self._stop.set()
            self._wake.set()
            child = self._child
        if child is not None and child.poll() is None:
            _signal_group(child, signal.SIGTERM)
            try:
                child.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s: child %d ignored SIGTERM: killed", self.name, child.pid)
                _signal_group(child, signal.SIGKILL)
                child.wait()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(grace_s)

    def _loop(self) -> None:
        try:
            if self.due_now():
                self._wake.set()
        except (OSError, ValueError):
            pass  # unreadable: the first round comes at the end of the interval
        while True:
            self._wake.wait(self.interval_s)
            if self._stop.is_set():
                return
            self._wake.clear()
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
