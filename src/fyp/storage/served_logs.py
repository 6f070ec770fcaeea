"""Where a region keeps its served log, chosen by URL: the region's store (the default)
or a Redis server of the region's own (``[regions.R] served_log = "redis://…"``, or
``"redis+sentinel://…"`` for the master Redis Sentinel points at: :mod:`fyp.storage.redis_url`).

The served log is what the feed showed each user (``Store.record_served``): the "already
seen" filter reads it so no video repeats across pages and sessions within
``[feed] seen_window_days``, and its counter is the last part of the user's change
marker (``Store.user_version``), which the feed's state cache and orders ranked ahead
key on. Every backend keeps the same promises, checked by
``tests/contracts/served_log_contract.py``: a page recorded by one process is read by
every other at once (read-your-writes across processes), the counter goes up by one per
page and never goes back (not when pages are forgotten, not when the log moves from the
store to Redis), and a user who is not in the region's store gets nothing written.

The feed, ranking ahead and ``fyp recommend`` reach the served log only through
``Deployment.served_log(region)``; while it is kept elsewhere, the store refuses its own
``record_served`` and ``served_since`` (a ServerError naming where the log is:
``Store.hand_served_log_to``), so code that goes to the store directly fails loudly
instead of writing pages the feed never reads. A log kept outside the store is an
:class:`ExternalServedLog`: the sovereignty commands (erasure, its verification, the
residency scan, the user export, restore and carve-out) reach its data through the few
methods it adds, as they reach the store's tables through the store
(:mod:`fyp.sovereignty.served_data`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fyp.errors import ConfigError, FypError
from fyp.storage.base import Store

CLOCK_SLACK_MS = 60_000
"""How far the clocks of a region's serving hosts (and training nodes) may differ: a page
is stamped with its server's clock, so whoever reads pages served since a time of its
own reads from this much earlier too (a page read needlessly was still served)."""


@dataclass(frozen=True)
class ServedPage:
    """One page served to a user: its number (the user's served counter after it), when,
    and the videos it showed."""

    page_seq: int
    served_at_ms: int
    video_ids: tuple[str, ...]


class ServedLog(ABC):
    """The served log of one region, bound to the region's store (which says who its
    users are)."""

    region: str
    store: Store

    @abstractmethod
    def user_version(self, user_id: str) -> tuple[int, ...] | None:
        """``Store.user_version`` with this log's served counter as its last part."""

    @abstractmethod
    def record_served(self, user_id: str, video_ids: Sequence[str], ts_ms: int) -> int:
        """``Store.record_served``: UnknownUser (and nothing written) for a user who is
        not in the region's store."""

    @abstractmethod
    def served_since(self, user_id: str, since_ms: int) -> list[str]:
        """``Store.served_since``."""

    @abstractmethod
    def forget_served_before(self, before_ms: int) -> int:
        """``Store.forget_served_before``: pages forgotten; counters stay."""

    def flush_served(self) -> None:  # noqa: B027 - optional hook
        """Make every page recorded so far readable by other processes (``Store.flush_served``)."""

    @property
    def forgets_by_itself(self) -> bool:
        """True when pages leave by themselves at the end of the seen window, so nobody
        needs to call :meth:`forget_served_before`."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (the store is closed by its owner)."""


class StoreServedLog(ServedLog):
    """The served log in the region's store (``served_pages``): the default."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.region = store.region

    def user_version(self, user_id: str) -> tuple[int, ...] | None:
        return self.store.user_version(user_id)

    def record_served(self, user_id: str, video_ids: Sequence[str], ts_ms: int) -> int:
        return self.store.record_served(user_id, video_ids, ts_ms)

    def served_since(self, user_id: str, since_ms: int) -> list[str]:
        return self.store.served_since(user_id, since_ms)

    def forget_served_before(self, before_ms: int) -> int:
        return self.store.forget_served_before(before_ms)

    def flush_served(self) -> None:
        self.store.flush_served()


class ServedLogData(ABC):
    """What erasure, export, the residency scan, restore and carve-out need of a served
    log on a server of its own: its data, reached by URL alone (a scan opens no store).
    A failure to reach the server is a ``StorageError`` (503 over HTTP) saying which
    region and server, never the password."""

    kind: str  # the backend's name, as receipts and reports say it ("redis")
    region: str

    @property
    @abstractmethod
    def where(self) -> str:
        """The server's URL without credentials."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError if the server does not answer (readiness)."""

    @abstractmethod
    def pages(self, user_id: str) -> list[ServedPage]:
        """The user's pages still held, oldest first."""

    @abstractmethod
    def counter(self, user_id: str) -> int | None:
        """The user's served counter here (None: nothing was served to them here)."""

    @abstractmethod
    def user_keys(self) -> Iterator[tuple[str, str | None]]:
        """Every served log key on the server, as (key, the user it names); the user is
        None for a key under the log's prefix whose user cannot be read from it. Keys of
        other regions' layout are included: they have no business on this server."""

    @abstractmethod
    def keys_naming(self, user_id: str) -> list[str]:
        """Every served log key on the server that names the user, in any region's layout."""

    @abstractmethod
    def erase(self, user_id: str) -> tuple[int, int]:
        """Delete every key naming the user: (videos in the pages removed, keys removed)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class ExternalServedLog(ServedLog, ServedLogData):
    """A served log on a server of its own: the feed's side and the data's side."""


def served_log_state(log: ServedLog) -> tuple[str, str | None]:
    """Where a region's served log is (``"store"``, or its server's URL without
    credentials) and why it does not answer now (None: it answers), for ``fyp status``."""
    where = log.where if isinstance(log, ExternalServedLog) else "store"
    try:
        log.check() if isinstance(log, ExternalServedLog) else log.store.check()
    except Exception as exc:  # whatever it is, the region's feeds cannot use it now
        return where, exc.message if isinstance(exc, FypError) else f"{type(exc).__name__}: {exc}"
    return where, None


def open_served_data(url: str, region: str) -> ServedLogData:
    """The data of ``region``'s served log at ``url``, for scans (no store needed)."""
    _check_url(url, region)
    from fyp.storage.redis_served_log import RedisKeys

    return RedisKeys(url, region)


def _check_url(url: str, region: str) -> None:
    from fyp.storage.redis_url import parse_redis_url

    try:
        parse_redis_url(url)
    except ConfigError as exc:
        raise ConfigError(
            f"no served log at that URL for region {region!r} (or leave served_log out "
            f"for the store's own): {exc.message}",
            region=region,
        ) from exc


def open_served_log(url: str | None, region: str, store: Store, window_ms: int) -> ServedLog:
    """The served log of ``region`` at ``url`` (None: the store's own). ``window_ms``:
    the feed's seen window, how long a page is kept where the backend expires pages
    itself. Opening connects to nothing: the first use does, and fails as a StorageError."""
    if url is None:
        return StoreServedLog(store)
    _check_url(url, region)
    from fyp.storage.redis_served_log import RedisServedLog

    log = RedisServedLog(url, region, store, window_ms)
    store.hand_served_log_to(log.where)  # the store's own served log is refused from now
    return log
