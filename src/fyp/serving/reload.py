"""A serving process applies edits of ``fyp.toml`` while it serves, all or nothing.

Every ``[serving] config_check_seconds`` (and at once on SIGHUP) a thread reads the
file and compares its sha256 with the last content it looked at: the deployment
directory is shared, so one edit reaches every host within that interval. A new
content is parsed and checked whole, then:

- it does not parse or validate (a ConfigError): ``invalid``; the config in force
  stays, the error is logged;
- it changes a setting that cannot apply live (:func:`fyp.regions.live_config.restart_keys`):
  ``needs_restart``; the config in force stays, the log names the settings;
- otherwise every part of the process built from the config prepares its new state
  (nothing changes yet), the region policies that changed are put on the audit record
  (:func:`fyp.regions.live_config.record_policy_changes`), and the new states and the
  deployment's config are swapped in at once, on the event loop between two requests:
  ``applied``. A failure before the swap (a store that cannot be written) applies
  nothing, is counted ``failed`` and is tried again at the next check.

A refused content is not looked at again until the file changes. ``/metrics`` counts
the reloads by result and names the sha256 in force (``fyp_config_info``): hosts that
agree show the same one. A feed request pays nothing for any of this: what it reads
is an attribute swapped here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from fyp.config import CONFIG_FILE, DeploymentConfig, parse_config_bytes
from fyp.errors import ConfigError
from fyp.regions.live_config import live_changes, record_policy_changes, restart_keys

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

log = logging.getLogger("fyp.config")
RESULTS = ("applied", "invalid", "needs_restart", "failed")
COMMIT_WAIT_S = 0.5  # how often a check waiting for the event loop sees if it stopped


class LiveConsumer(Protocol):
    """A part of the serving process built from the config: ``prepare`` builds its state
    for ``config`` without changing anything, and returns what swaps it in (which must
    not fail: only assignments)."""

    def prepare(self, config: DeploymentConfig) -> Callable[[], None]: ...


Listener = Callable[[DeploymentConfig, DeploymentConfig], None]
"""Told ``(old, new)`` after a reload applied (the schedules wake for what changed)."""


class ConfigReloader:
    """The reload thread of one serving process (:meth:`start` / :meth:`stop`), or
    :meth:`check` called directly."""

    name = "fyp-config"

    def __init__(
        self,
        deployment: Deployment,
        consumers: Sequence[LiveConsumer],
        sha256: str,
        interval_s: float | None = None,
    ) -> None:
        """``sha256``: that of the content ``deployment.config`` was parsed from."""
        self.deployment = deployment
        self.consumers = list(consumers)
        self.listeners: list[Listener] = []
        self.interval_s = (
            deployment.config.serving.config_check_seconds if interval_s is None else interval_s
        )
        self.in_force = sha256
        self.applied_at = time.time()
        self.results: Counter[str] = Counter(dict.fromkeys(RESULTS, 0))
        self._seen = sha256
        self._check_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the thread ---------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Watch in a thread; ``loop``: the event loop serving requests, where the swap
        runs (None: in the thread). With an interval of 0 only :meth:`wake` checks."""
        self._loop = loop
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Check now (SIGHUP): safe from a signal handler."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self._loop = None

    def _run(self) -> None:
        timeout = self.interval_s if self.interval_s > 0 else None
        while True:
            self._wake.wait(timeout)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.check()
            except Exception:  # never let the watch die: the next check tries again
                log.exception("%s: checking %s failed", self.name, CONFIG_FILE)

    # -- one check ----------------------------------------------------------------
    def check(self) -> str | None:
        """Look at the file once; the result of what it did, or None when its content
        is the one last looked at (or it cannot be read: logged, tried again)."""
        with self._check_lock:
            path = self.deployment.config.root / CONFIG_FILE
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.error("%s: cannot read %s: %s; the config in force stays", self.name, path, exc)
                return None
            sha256 = hashlib.sha256(data).hexdigest()
            if sha256 == self._seen:
                return None
            self._seen = sha256
            return self._consider(data, sha256)

    def _consider(self, data: bytes, sha256: str) -> str:
        old = self.deployment.config
        try:
            new = parse_config_bytes(old.root, data)
        except ConfigError as exc:
            return self._refuse(
                "invalid", sha256, f"it is invalid: {exc.message}; fix it and save again"
            )
        except Exception as exc:  # a check that failed otherwise: refused all the same
            log.exception("%s: reading %s failed", self.name, CONFIG_FILE)
            return self._refuse("invalid", sha256, f"it could not be read: {exc!r}")
        restart = restart_keys(old, new)
        if restart:
            return self._refuse(
                "needs_restart",
                sha256,
                f"it changes settings that apply only when the server restarts: "
                f"{', '.join(restart)} (every change in it waits for that restart; live: "
                "[regions.NAME.policy] and [experiments])",
            )
        try:
            swaps = [consumer.prepare(new) for consumer in self.consumers]
            recorded = record_policy_changes(self.deployment, old, new, sha256)
        except Exception as exc:
            self._seen = ""  # not refused: the next check tries the same content again
            self.results["failed"] += 1
            log.exception(
                "%s: %s (sha256 %s) not applied, tried again at the next check: %s",
                self.name,
                CONFIG_FILE,
                sha256[:12],
                exc,
            )
            return "failed"
        changed = live_changes(old, new)

        def swap() -> None:
            for apply in swaps:
                apply()
            self.deployment.config = new
            self.in_force = sha256
            self.applied_at = time.time()
            self.results["applied"] += 1

        self._on_loop(swap)
        audited = f"; recorded in the audit log of {', '.join(recorded)}" if recorded else ""
        # each edit's own line: the log's repeat filter holds back lines of one text
        log.info(
            f"{self.name}: applied {CONFIG_FILE} (sha256 {sha256[:12]}): "
            f"{', '.join(changed) or 'no setting changed'}{audited}"
        )
        for listener in self.listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("%s: a listener of the reload failed", self.name)
        return "applied"

    def _refuse(self, result: str, sha256: str, why: str) -> str:
        self.results[result] += 1
        log.error(
            f"{self.name}: {CONFIG_FILE} changed (sha256 {sha256[:12]}) but was not applied "
            f"({result}): {why}; the config in force (sha256 {self.in_force[:12]}) stays"
        )
        return result

    def _on_loop(self, swap: Callable[[], None]) -> None:
        """Run ``swap`` on the event loop, between two requests (no request sees half of
        it), or here when there is none."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            swap()
            return
        try:
            if asyncio.get_running_loop() is loop:
                swap()
                return
        except RuntimeError:
            pass  # no loop in this thread: the usual case
        done = threading.Event()

        def run() -> None:
            try:
                swap()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        while not done.wait(COMMIT_WAIT_S):
            if self._stop.is_set() or loop.is_closed():
                return  # shutting down: the swap runs whole if the loop gets to it
