"""The sovereignty promises for a served log kept outside the store (Redis:
``[regions.R] served_log``), which the store-table checks cannot see.

- **erasure** deletes the user's keys in every region's served log, after the store
  (see :mod:`fyp.storage.redis_served_log` for why that order leaves nothing behind),
  and the receipt names the backend; a server that does not answer fails the erasure
  *after* everything else is erased, and ``fyp erasure process`` finishes it (the ledger
  holds the erasure, and :func:`named_users` makes its re-application see the keys);
- **erasure verify** scans each served log for keys naming the user; one that cannot
  be scanned is a remnant (nothing vouches for it);
- **residency** classifies the user every key names, like a store's ``user_id`` column:
  homed elsewhere is foreign, homed nowhere an orphan; an unreachable server is
  ``unreadable``;
- **export** adds the pages still held, one row per video as the store's ``served`` view;
- **backups** do not hold it (it lives at most the seen window and is not needed to
  serve); a **restore** deletes the keys of users the restored store does not hold
  (:func:`drop_absent_users`), so nothing outlives the rows it belongs to;
- **carve-out** writes a deployment whose served log is its store's again (it must not
  point at the original region's server), with the pages and counters copied into the
  carved store (:func:`copy_into_store`) so no page repeats there.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fyp.audit.log import sql_store
from fyp.config import DeploymentConfig
from fyp.errors import StorageError
from fyp.regions.deployment import Deployment
from fyp.storage.base import Store, json_text
from fyp.storage.served_logs import (
    ExternalServedLog,
    ServedLogData,
    ServedPage,
    open_served_data,
)

SOURCE = "served_log"


def external(deployment: Deployment) -> dict[str, ExternalServedLog]:
    """The regions whose served log is on a server of its own, with it."""
    out: dict[str, ExternalServedLog] = {}
    for region in deployment.regions:
        log = deployment.served_log(region)
        if isinstance(log, ExternalServedLog):
            out[region] = log
    return out


def open_data(config: DeploymentConfig, region: str) -> ServedLogData | None:
    """The data of the region's served log from its config alone (scans and carve-outs,
    which open no Deployment); None when the served log is in the store."""
    url = config.region(region).served_log
    return None if url is None else open_served_data(url, region)


# -- erasure -----------------------------------------------------------------------------
def erase_everywhere(deployment: Deployment, user_id: str) -> tuple[int, int, StorageError | None]:
    """Delete the user's keys in every region's served log: (videos, keys removed, the
    first server that failed, if one did; the others are still erased)."""
    videos = keys = 0
    failed: StorageError | None = None
    for log in external(deployment).values():
        try:
            v, k = log.erase(user_id)
        except StorageError as exc:
            failed = failed or exc
            continue
        videos, keys = videos + v, keys + k
    return videos, keys, failed


def named_users(deployment: Deployment, region: str) -> set[str]:
    """Every user the region's served log names (for re-applying erasures)."""
    log = external(deployment).get(region)
    if log is None:
        return set()
    return {user for _, user in log.user_keys() if user is not None}


def remnants(deployment: Deployment, user_id: str) -> list[tuple[str, str, int]]:
    """(region, where, keys) of every served log key naming the user, and of every served
    log that cannot be scanned."""
    out: list[tuple[str, str, int]] = []
    for region, log in external(deployment).items():
        try:
            keys = log.keys_naming(user_id)
        except StorageError as exc:
            out.append((region, f"{log.where}: cannot be scanned ({exc.message})", 1))
            continue
        if keys:
            out.append((region, f"{log.where}: {', '.join(keys[:5])}", len(keys)))
    return out


# -- residency ---------------------------------------------------------------------------
def residency_names(log: ServedLogData) -> Iterator[tuple[str, str, dict[str, int]]]:
    """The served log's keys as the residency scan's names: the users they name
    (``user`` class: a name homed nowhere is an orphan), and a key of the log's prefix
    whose user cannot be read, or a server that does not answer, as ``unreadable``."""
    users: Counter[str] = Counter()
    odd: list[str] = []
    try:
        for key, user in log.user_keys():
            if user is None:
                odd.append(key)
            else:
                users[user] += 1
    except StorageError as exc:
        yield f"{log.where}: cannot be scanned ({exc.message})", "unreadable", {}
        return
    for key in odd[:20]:
        yield f"{log.where} key {key!r}", "unreadable", {}
    if users:
        yield f"{log.where} keys fyp:served:*", "user", dict(users)


# -- export ------------------------------------------------------------------------------
def export_rows(deployment: Deployment, region: str, user_id: str) -> list[dict[str, Any]]:
    """The user's pages in the region's served log, a row per video (the shape of the
    store's ``served`` view), oldest first."""
    log = external(deployment).get(region)
    if log is None:
        return []
    return [
        {"user_id": user_id, "video_id": v, "region": region, "served_at_ms": page.served_at_ms}
        for page in log.pages(user_id)
        for v in page.video_ids
    ]


# -- move -------------------------------------------------------------------------------
def user_pages(
    deployment: Deployment, region: str, user_id: str, since_ms: int
) -> list[ServedPage]:
    """The user's pages served at or after ``since_ms`` in the region's served log: the
    store's (a log moved to Redis keeps its older pages there until they age out) and
    the Redis server's, oldest first."""
    store = deployment.store(region)
    store.flush_served()
    pages = [
        ServedPage(int(seq), int(ts), tuple(ids if isinstance(ids, list) else json.loads(ids)))
        for seq, ts, ids in sql_store(store).query(
            "SELECT page_seq, served_at_ms, video_ids FROM served_pages "
            "WHERE user_id=? AND served_at_ms>=? ORDER BY page_seq",
            (user_id, since_ms),
        )
    ]
    log = external(deployment).get(region)
    if log is not None:
        pages += [p for p in log.pages(user_id) if p.served_at_ms >= since_ms]
    return sorted(pages, key=lambda p: (p.served_at_ms, p.page_seq))


# -- restore -----------------------------------------------------------------------------
def drop_absent_users(deployment: Deployment, region: str) -> int:
    """After a restore: delete the served log keys of every user the restored store does
    not hold (an account made after the backup is gone with it; its pages must go too).
    Returns the keys deleted. A served log that does not answer fails the restore's
    re-application step, which the next open of the deployment runs again."""
    log = external(deployment).get(region)
    if log is None:
        return 0
    store = deployment.store(region)
    named = named_users(deployment, region)
    present = store.existing_users(named) if named else set()
    return sum(log.erase(user)[1] for user in sorted(named - present))


# -- carve-out ---------------------------------------------------------------------------
def copy_into_store(log: ServedLogData, store: Store) -> int:
    """Write the served log's pages into ``store``'s own served log, with their numbers,
    and each user's counter into ``users.served_seq``, so the counters never go back
    and the pages still in the window are not shown again. Returns the pages copied."""
    sql = sql_store(store)
    users = sorted({u for _, u in log.user_keys() if u is not None})
    present = store.existing_users(users) if users else set()
    copied = 0
    with store.transaction():
        for user in sorted(present):
            counter = log.counter(user)
            if counter is not None:
                sql.execute(
                    "UPDATE users SET served_seq = ? WHERE user_id = ? AND served_seq < ?",
                    (counter, user, counter),
                )
            for page in log.pages(user):
                sql.execute(
                    "INSERT OR IGNORE INTO served_pages (user_id, page_seq, served_at_ms, "
                    "video_ids) VALUES (?, ?, ?, ?)",
                    (user, page.page_seq, page.served_at_ms, json_text(list(page.video_ids))),
                )
                copied += 1
    return copied


def carve_into(config: DeploymentConfig, region: str, store_url: str) -> list[str]:
    """The carved deployment of ``region`` keeps its served log in its store (its config
    names no served_log: it must not point at this region's server): copy the pages and
    counters into the store at ``store_url`` (the carved SQLite file, or the snapshot a
    server store is loaded from, so they go in with the rest in its one load). Returns
    the notes for the carve-out's report."""
    log = open_data(config, region)
    if log is None:
        return []
    from fyp.storage import open_store

    store = open_store(store_url, region)
    try:
        copied = copy_into_store(log, store)
    finally:
        store.close()
        log.close()
    return [
        f"the served log of {region} is on {log.where}: the carved deployment keeps it in its "
        f"store instead ({copied:,} pages copied, counters kept); to move it to a Redis server "
        f"of its own, set [regions.{region}] served_log in its fyp.toml"
    ]
