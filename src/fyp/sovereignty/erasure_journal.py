"""Erasures under way: a mark per erasure, so one cut short is finished without anyone.

An erasure is recorded in the ledger first, then carried out region by region. A
process killed in between (a server restarted while a ``DELETE`` waited on a locked
store) left the ledger entry and every row of the user: nothing but a hand-run ``fyp
erasure process`` finished it, and the user went on being served. Now
:class:`ErasureMark` writes ``regions/<home>/.erasing/<receipt id>.json`` (the user
id, region, receipt and time; fsynced) before the ledger, holds an exclusive ``flock``
on it while the erasure runs, and removes it once the erasure is done. A mark whose
lock is free belongs to an erasure that stopped: the next open of the deployment
(:class:`fyp.regions.deployment.Deployment`, as for moves) and the server's erasure
schedule finish it (:func:`finish_erasures`). The mark names the user until then, so
``fyp erasure verify`` counts it as a remnant, as it should.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fyp.config import DeploymentConfig
from fyp.durable import fsync_path, write_durable
from fyp.errors import FypError
from fyp.filelock import open_locked, try_open_locked

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment

ERASING_DIR = ".erasing"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erasing:
    user_id: str
    region: str
    receipt_id: str
    erased_at_ms: int

    def path(self, config: DeploymentConfig) -> Path:
        return config.region_dir(self.region) / ERASING_DIR / f"{self.receipt_id}.json"


class ErasureMark:
    """Marks an erasure as under way for as long as the ``with`` block runs; the mark
    goes when the block ends without an error, and stays (its lock released) otherwise."""

    def __init__(self, config: DeploymentConfig, erasing: Erasing) -> None:
        self.path = erasing.path(config)
        self.erasing = erasing
        self._fd: int | None = None

    def __enter__(self) -> ErasureMark:
        self._fd = open_locked(self.path)  # created (empty) and locked before it says anything
        write_durable(self.path, json.dumps(asdict(self.erasing), sort_keys=True).encode())
        fsync_path(self.path.parent)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.path.unlink(missing_ok=True)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def marks(config: DeploymentConfig) -> list[Path]:
    return sorted(
        p
        for region in config.region_names
        if (config.region_dir(region) / ERASING_DIR).is_dir()
        for p in (config.region_dir(region) / ERASING_DIR).glob("*.json")
    )


def stopped_marks(config: DeploymentConfig) -> list[Path]:
    """The marks of erasures no process is running (their lock is free)."""
    out = []
    for path in marks(config):
        fd = try_open_locked(path, create=False)
        if fd is not None:
            os.close(fd)
            out.append(path)
    return out


def finish_erasures(deployment: Deployment) -> list[str]:
    """Finish every erasure that stopped part-way (its ledger entry written again if it
    stopped before that); one that fails again is logged and kept for the next try.
    Returns the receipt ids finished."""
    from fyp.sovereignty.erasure import Eraser
    from fyp.sovereignty.ledger import ErasureLedger

    done: list[str] = []
    for path in marks(deployment.config):
        fd = try_open_locked(path, create=False)
        if fd is None:
            continue  # running in another process, or just ended (never made again here)
        try:
            try:
                erasing = Erasing(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                log.warning("%s: not an erasure mark (empty or damaged): removed", path)
                path.unlink(missing_ok=True)
                continue
            ledger = ErasureLedger(deployment.config, erasing.region)
            entry = ledger.find(erasing.user_id)
            if entry is None or entry.receipt_id != erasing.receipt_id:  # stopped before it
                ledger.record(erasing.user_id, erasing.receipt_id, erasing.erased_at_ms)
            os.close(fd)  # the erasure takes the mark's lock itself
            fd = None
            Eraser(deployment).reapply(
                erasing.user_id, erasing.region, erasing.receipt_id, erasing.erased_at_ms
            )
            done.append(erasing.receipt_id)
        except FypError as exc:
            log.warning("could not finish the erasure %s: %s", path.stem, exc.message)
        finally:
            if fd is not None:
                os.close(fd)
    return done
