"""The served log on a Redis server of the region's own (``[regions.R] served_log =
"redis://host:6379/0"``, ``"redis+sentinel://…"`` for the master Redis Sentinel points
at, followed through a failover, or ``"redis+cluster://…"`` for a Redis Cluster:
:mod:`fyp.storage.redis_url`; the ``redis`` extra).

Keys name the region and the user, so a scan can judge them (``{…}`` is a Redis Cluster
hash tag: all of a user's keys share a slot, so a page's script runs on one node; a
scan visits every primary):

- ``fyp:served:<region>:{<user id>}:n`` — the user's served counter (a number, no TTL:
  like ``users.served_seq`` in a store it outlives the pages, so it never goes back; it
  starts from the server's clock in microseconds, so even a server that lost its data —
  a restart without persistence — never hands out a number it handed out before);
- ``fyp:served:<region>:{<user id>}:p:<page seq>`` — one page: ``<ms>|<JSON video ids>``,
  expiring (``PXAT``) exactly ``[feed] seen_window_days`` after it was served, so Redis
  forgets old pages itself and no maintenance thread sweeps them;
- ``fyp:region`` — the region the database (or cluster) belongs to, written by the
  first process that opens it for a region; a process of another region refuses it
  (``StorageError``), as a store refuses another region's process. ``fyp.toml``'s
  check compares URLs; this catches one server named two ways (another host name, or
  another node of one cluster), which would keep one region's pages where another's
  policy applies. To give a database to another region, delete the key.

A page is one script run (``EVALSHA``): the counter goes up by one and the page is
written with it, atomically, so two processes serving one user never share a number and
each sees the other's page at once. The counter starts above the store's (a region whose
served log moves from the store to Redis does not count again from 0), and the pages the
store still holds from before count as served until they age out there. A user must be
in the region's store: looked up right after the page is written — an erasure deletes
the user from the store first and their keys second, so a page written before that
lookup sees the user gone is deleted by the erasure, and one that sees it gone is
deleted by the recording process itself: never left behind.

Reading a user's pages walks back from the counter until a page is missing (expired) or
older than asked (by more than ``CLOCK_SLACK_MS``, as serving hosts' clocks differ).

With ``wait_replicas=N`` in the URL every write (a page, a delete) is followed by
``WAIT N`` on the same connection and fails unless N replicas hold it, so what was
acknowledged survives a failover to one of them. On a cluster each slot's part of a
write goes to the slot's primary, with the WAIT after it on that node's connection (a
slot that moved or migrates, or a primary that failed over, is followed: three tries
in all).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json, to_json

from fyp.errors import ConfigError, StorageError, UnknownUser
from fyp.storage.base import Store
from fyp.storage.postgres_dialect import redact
from fyp.storage.redis_url import WAIT_TIMEOUT_MS, connect, disconnect, parse_redis_url
from fyp.storage.served_logs import (
    CLOCK_SLACK_MS,
    ExternalServedLog,
    ServedLogData,
    ServedPage,
)

if TYPE_CHECKING:
    import redis

PREFIX = "fyp:served:"
CLAIM = "fyp:region"  # which region the database (or cluster) belongs to
KEY = re.compile(r"^fyp:served:([^:]*):\{([^{}]*)\}:(n|p:[0-9]+)$")
TIMEOUT_S = 2.0  # a server that does not answer fails the request (503) after this
SCAN_COUNT = 1_000

# KEYS[1]: the counter. ARGV: page key prefix, the store's counter, ms, ids, expiry (ms).
# A counter Redis does not hold starts from its clock in microseconds (or the store's, if
# that is higher): above any it held before, should it have lost its data.
_RECORD = """
local held = redis.call('GET', KEYS[1])
local floor = tonumber(ARGV[2])
if not held then
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if clock > floor then floor = clock end
  redis.call('SET', KEYS[1], string.format('%.0f', floor))
elseif tonumber(held) < floor then
  redis.call('SET', KEYS[1], ARGV[2])
end
local n = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. string.format('%.0f', n), ARGV[3] .. '|' .. ARGV[4], 'PXAT', ARGV[5])
return n
"""
# KEYS[1]: the claim. ARGV: the region. The region the database belongs to, claimed for
# ARGV[1] if it belongs to none yet.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
# KEYS[1]: the counter. ARGV: page key prefix, stop below this ms. Returns seq, page, ...
_READ = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local stop = tonumber(ARGV[2])
local out = {}
for seq = n, 1, -1 do
  local page = redis.call('GET', ARGV[1] .. string.format('%.0f', seq))
  if not page then break end
  local bar = string.find(page, '|', 1, true)
  if tonumber(string.sub(page, 1, bar - 1)) < stop then break end
  out[#out + 1] = seq
  out[#out + 1] = page
end
return out
"""


def _redis_errors() -> tuple[type[Exception], ...]:
    """What redis-py raises when the data cannot be reached: its errors, and a cluster
    client's own (``RedisClusterException``: no node answers, a slot no node serves),
    which are not among them."""
    from redis import exceptions

    return (exceptions.RedisError, exceptions.RedisClusterException)


def user_prefix(region: str, user_id: str) -> str:
    return f"{PREFIX}{region}:{{{user_id}}}:"


def parse_key(key: str) -> tuple[str, str] | None:
    """(region, user) a served log key names; None for another shape."""
    m = KEY.match(key)
    return (m.group(1), m.group(2)) if m else None


def _page(seq: Any, raw: Any) -> ServedPage:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    ms, _, ids = text.partition("|")
    return ServedPage(int(seq), int(ms), tuple(from_json(ids)))


class RedisKeys(ServedLogData):
    """The keys of one region's served log on a Redis server: the connection, reading
    and erasing (all a scan needs; see the module's docstring)."""

    kind = "redis"

    def __init__(self, url: str, region: str) -> None:
        self.url = url
        self.region = region
        self._client: redis.Redis | None = None
        self._wait_replicas = 0
        self._cluster = False
        self._record: Any = None
        self._read: Any = None
        self._opening = threading.Lock()  # one client (and its pool) per log

    # -- the connection ----------------------------------------------------------
    @property
    def where(self) -> str:
        return redact(self.url)

    def _redis(self) -> redis.Redis:
        if self._client is not None:
            return self._client
        with self._opening:
            return self._open()

    def _open(self) -> redis.Redis:
        if self._client is None:
            try:
                from redis.backoff import NoBackoff
                from redis.retry import Retry
            except ImportError as exc:  # pragma: no cover - the extra is in dev/all
                raise ConfigError(
                    f"served_log of region {self.region!r} is on Redis: install the "
                    "`redis` extra (pip install 'fyp[redis]')"
                ) from exc
            target = parse_redis_url(self.url)
            try:  # a dropped idle connection (or one to a demoted master) is retried once
                client = connect(target, TIMEOUT_S, retry=Retry(NoBackoff(), 1))
            except ValueError as exc:
                raise ConfigError(
                    f"served_log of region {self.region!r}: {exc} ({self.where})",
                    region=self.region,
                ) from exc
            except _redis_errors() as exc:  # a cluster client connects at once
                raise self._failed(exc) from exc
            self._claim(client)
            self._record = client.register_script(_RECORD)
            self._read = client.register_script(_READ)
            self._wait_replicas = target.wait_replicas
            self._cluster = target.cluster
            self._client = client
        return self._client

    def _claim(self, client: redis.Redis) -> None:
        """Claim the database for the region, or refuse it if another region has (the
        client is closed then, and the next call tries again)."""
        try:
            held = client.register_script(_CLAIM)(keys=[CLAIM], args=[self.region])
        except _redis_errors() as exc:
            disconnect(client)
            raise self._failed(exc) from exc
        owner = held.decode() if isinstance(held, bytes) else str(held)
        if owner != self.region:
            disconnect(client)
            raise StorageError(
                f"served log {self.where} belongs to region {owner!r}, not {self.region!r}: "
                f"refusing to use it (its key {CLAIM!r} says so; delete that key to give "
                "the database to another region)",
                served_log_region=owner,
                region=self.region,
            )

    def _failed(self, exc: Exception) -> StorageError:
        return StorageError(
            f"region {self.region!r}: its served log on Redis ({self.where}) failed: {exc}",
            region=self.region,
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _redis_errors() as exc:
            raise self._failed(exc) from exc

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        self._redis()  # registers the scripts
        script = getattr(self, name)
        if name == "_record" and self._wait_replicas:
            # EVAL, not EVALSHA: one round trip, and no NOSCRIPT from a master just promoted
            return self._write("eval", script.script, len(keys), *keys, *args)
        return self._call(script, keys=keys, args=args)

    def _write(self, command: str, *args: Any) -> Any:
        """A write command; with ``wait_replicas`` in the URL, followed by a WAIT on the
        same connection (a pipeline: a WAIT on another of the pool's connections would
        wait for that one's writes), which fails unless enough replicas hold it. Short
        of replicas on a master the Sentinels no longer name (a failover left it none),
        the write goes again to the one they name."""
        client = self._redis()
        if not self._wait_replicas:
            return self._call(getattr(client, command), *args)
        if self._cluster:
            return self._write_on_slots(client, command, args)
        for again in (True, False):
            pipe = client.pipeline(transaction=False)
            getattr(pipe, command)(*args)
            pipe.wait(self._wait_replicas, WAIT_TIMEOUT_MS)
            result, held = self._call(pipe.execute)
            if int(held) >= self._wait_replicas:
                return result
            if not (again and self._master_moved()):
                break
        raise self._short_of_replicas(held)

    def _short_of_replicas(self, held: Any) -> StorageError:
        return StorageError(
            f"region {self.region!r}: its served log on Redis ({self.where}) has a write "
            f"on {held} of the {self._wait_replicas} replicas it waits for "
            f"(wait_replicas) after {WAIT_TIMEOUT_MS} ms; it may be lost in a failover",
            region=self.region,
        )

    def _write_on_slots(self, client: Any, command: str, args: tuple[Any, ...]) -> Any:
        """A write with its WAIT on a cluster: a script (``eval``: its keys share a
        slot) on its slot's primary; a ``delete`` split by slot (a cluster refuses a
        command across slots), each part on its slot's primary. Returns the script's
        result, or the keys deleted."""
        if command == "eval":
            return self._write_on_slot(client, args[2], command, args)
        by_slot: dict[int, list[Any]] = {}
        for key in args:
            by_slot.setdefault(client.keyslot(key), []).append(key)
        return sum(int(self._write_on_slot(client, ks[0], command, ks)) for ks in by_slot.values())

    def _write_on_slot(self, client: Any, key: str, command: str, args: Sequence[Any]) -> Any:
        """The write and its WAIT on the slot's primary, in one pipeline. Told the slot
        moved (``MOVED``) or unable to reach the primary (a failover), the client learns
        the cluster's slots again and tries again; told to ask another node while the
        slot migrates (``ASK``), it sends ``ASKING`` and the write there (three tries in
        all)."""
        from redis import exceptions

        asking: Any = None  # the node an ASK named
        retry: Exception
        for _ in range(3):
            try:
                node = asking or client.get_node_from_key(key)
                pipe = client.get_redis_connection(node).pipeline(transaction=False)
                if asking is not None:
                    pipe.execute_command("ASKING")
                getattr(pipe, command)(*args)
                pipe.wait(self._wait_replicas, WAIT_TIMEOUT_MS)
                *_, result, held = pipe.execute()
            except (exceptions.MovedError, exceptions.ConnectionError) as exc:
                retry = exc  # MOVED first: it is a kind of AskError
                asking = None
                self._call(client.nodes_manager.initialize)
            except exceptions.AskError as exc:
                retry = exc
                asking = client.get_node(exc.host, exc.port)
                if asking is None:  # a node the client does not know yet
                    self._call(client.nodes_manager.initialize)
                    asking = client.get_node(exc.host, exc.port)
            except _redis_errors() as exc:
                raise self._failed(exc) from exc
            else:
                if int(held) < self._wait_replicas:
                    raise self._short_of_replicas(held)
                return result
        raise self._failed(retry)

    def _master_moved(self) -> bool:
        """Whether the Sentinels name another master than the one the client writes to
        (asking them makes the pool drop its idle connections to the old one)."""
        pool: Any = getattr(self._redis(), "connection_pool", None)  # none on a cluster
        before = getattr(pool, "master_address", None)  # None: not through Sentinel
        return before is not None and self._call(pool.get_master_address) != before

    def check(self) -> None:
        self._call(self._redis().ping)

    def close(self) -> None:
        if self._client is not None:
            disconnect(self._client)
            self._client = None

    # -- the data's side ---------------------------------------------------------
    def _counter(self, user_id: str) -> int | None:
        raw = self._call(self._redis().get, user_prefix(self.region, user_id) + "n")
        return None if raw is None else int(raw)

    def _pages(self, user_id: str, stop_ms: int) -> list[ServedPage]:
        prefix = user_prefix(self.region, user_id)
        flat = self._script("_read", [prefix + "n"], [prefix + "p:", stop_ms])
        pages = [_page(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        return pages[::-1]

    def _scan(self, match: str) -> Iterator[str]:
        """Every key matching, on the server (or each primary of a cluster)."""
        keys = self._redis().scan_iter(match=match, count=SCAN_COUNT)
        while True:
            try:
                key = next(keys)
            except StopIteration:
                return
            except _redis_errors() as exc:
                raise self._failed(exc) from exc
            yield key.decode() if isinstance(key, bytes) else str(key)

    def pages(self, user_id: str) -> list[ServedPage]:
        return self._pages(user_id, 0)

    def counter(self, user_id: str) -> int | None:
        return self._counter(user_id)

    def user_keys(self) -> Iterator[tuple[str, str | None]]:
        for key in self._scan(f"{PREFIX}*"):
            parsed = parse_key(key)
            yield key, None if parsed is None else parsed[1]

    def keys_naming(self, user_id: str) -> list[str]:
        return sorted(self._scan(f"{PREFIX}*{{{user_id}}}*"))

    def erase(self, user_id: str) -> tuple[int, int]:
        keys = self.keys_naming(user_id)
        if not keys:
            return 0, 0
        client = self._redis()
        values = self._call(client.mget, keys)
        videos = sum(
            len(_page(0, v).video_ids)
            for k, v in zip(keys, values, strict=True)
            if v is not None and k.rpartition("}")[2].startswith(":p:")
        )
        removed = int(self._write("delete", *keys))
        return videos, removed


class RedisServedLog(RedisKeys, ExternalServedLog):
    """One region's served log on a Redis server: the feed's side, beside the region's
    store (which says who its users are)."""

    def __init__(self, url: str, region: str, store: Store, window_ms: int) -> None:
        super().__init__(url, region)
        self.store = store
        self.window_ms = window_ms

    def user_version(self, user_id: str) -> tuple[int, ...] | None:
        marker = self.store.user_version(user_id)
        if marker is None:
            return None
        counter = self._counter(user_id)
        return marker if counter is None else (*marker[:2], max(counter, marker[2]))

    def record_served(self, user_id: str, video_ids: Sequence[str], ts_ms: int) -> int:
        """The page is written, then the user is looked up in the store (one read, not
        two: nothing of a user who is not there stays, see the module's docstring). A
        number not above the store's counter (a counter Redis held from before the
        store's last pages, or a clock behind) is taken back and the page numbered again."""
        prefix = user_prefix(self.region, user_id)
        ids = to_json(list(dict.fromkeys(video_ids))).decode()
        floor = 0
        for _ in range(2):
            args = [prefix + "p:", floor, ts_ms, ids, ts_ms + self.window_ms]
            counter = int(self._script("_record", [prefix + "n"], args))
            page = f"{prefix}p:{counter}"
            after = self.store.user_version(user_id)
            if after is None:  # not (or no longer) in the store: leave nothing
                self._write("delete", prefix + "n", page)
                raise UnknownUser(f"no user {user_id!r} in region {self.region!r}")
            if counter > after[2]:
                return counter
            self._write("delete", page)
            floor = after[2]
        raise StorageError(  # pragma: no cover - the second number is above the floor
            f"region {self.region!r}: could not number a served page of {user_id!r}"
        )

    def served_since(self, user_id: str, since_ms: int) -> list[str]:
        """Pages in Redis and, first, any the store still holds from before the served
        log moved here (they age out of the store as before)."""
        pages = self._pages(user_id, since_ms - CLOCK_SLACK_MS)
        recent = (p.video_ids for p in pages if p.served_at_ms >= since_ms)
        stored = self.store.served_since(user_id, since_ms, left_here=True)
        return list(dict.fromkeys([*stored, *(v for ids in recent for v in ids)]))

    def forget_served_before(self, before_ms: int) -> int:
        """Pages expire by themselves (``PXAT``); this deletes those served before
        ``before_ms`` now (a scan of the region's keys, for the contract and tests)."""
        client = self._redis()
        doomed: list[str] = []
        for key in self._scan(f"{PREFIX}{self.region}:*:p:*"):
            raw = self._call(client.get, key)
            if raw is not None and _page(0, raw).served_at_ms < before_ms:
                doomed.append(key)
        if doomed:
            self._write("delete", *doomed)
        return len(doomed)

    @property
    def forgets_by_itself(self) -> bool:
        return True
