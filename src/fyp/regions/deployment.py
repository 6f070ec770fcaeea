"""An opened deployment: its config, one store per region, and the user router.

The router is the only place that maps a user to a region. It keeps no global
directory of users (that would itself be cross-region personal data): it asks each
region's store whether it holds the user and caches the answer in memory. A cached
route goes stale when another process (another serving host) moves the user
(:mod:`fyp.sovereignty.move`) or erases them, and the id may then be taken again in
another region: code that finds a user absent from the cached region calls
:meth:`Deployment.relocate` (forget the route, locate once more, refuse a region the
request's key may not touch), and where a stale route would decide something (an id
taken, a user to erase or export) it is checked afresh (``locate_users(fresh=True)``,
:meth:`Deployment.homed_region`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import threading
from collections.abc import Collection, Iterable
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType

import tomli_w

from fyp.config import (
    CONFIG_FILE,
    DeploymentConfig,
    check_backup_targets,
    check_region_name,
    default_region,
    load_config,
    new_config,
    with_served_logs,
    write_config,
)
from fyp.errors import (
    AlreadyExists,
    ConfigError,
    Forbidden,
    InvalidRequest,
    StorageError,
    UnknownUser,
)
from fyp.sovereignty.erasure_journal import ERASING_DIR
from fyp.sovereignty.move_journal import JOURNAL_DIR
from fyp.sovereignty.staging import PENDING_RESTORE
from fyp.storage import Store, check_store_scheme, open_store
from fyp.storage.served_logs import ServedLog, open_served_log

_ROUTE_CACHE_MAX = 2_000_000
REQUEST_REGIONS: ContextVar[Collection[str] | None] = ContextVar(
    "fyp_request_regions", default=None
)
"""The regions the current request's API key may touch (None: any). The access check
sets it; :meth:`Deployment.relocate` refuses a user who turns out to live outside them."""


class Deployment:
    """A deployment directory opened for use; close it (or use ``with``) when done."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        create: bool = False,
        finish_restores: bool = True,
        finish_moves: bool = True,
    ) -> None:
        """Opens every region's store. ``create`` makes missing region stores (``init``);
        any other open of a deployment whose store file is missing fails
        (``fyp.storage.open_store``). Unless told not to (a restore doing it itself),
        first finishes any restore that stopped before re-applying erasures, so restored
        data with erased users in it is never served (:mod:`fyp.sovereignty.restore`);
        then finishes the moves and erasures a killed process left (unless told not to:
        ``fyp user move`` finishes its own, to print the receipt)."""
        self.config = config
        self.stores: dict[str, Store] = {}
        self.served_logs: dict[str, ServedLog] = {}
        self._routes: dict[str, str] = {}
        self._routes_lock = threading.Lock()
        pending = finish_restores and any(
            (config.region_dir(r) / PENDING_RESTORE).exists() for r in config.regions
        )
        try:
            if pending:
                from fyp.sovereignty import restore

                restore.finish_pending_swaps(config)  # before any store file is open
            for name, region in config.regions.items():
                url = config.resolve_url(region.store)
                self.stores[name] = open_store(url, name, create=create)
                self.served_logs[name] = open_served_log(
                    region.served_log, name, self.stores[name], config.feed.seen_window_ms
                )
            if pending:
                restore.finish_pending_restores(self)
            if finish_moves and any(
                (config.region_dir(r) / JOURNAL_DIR).is_dir() for r in config.regions
            ):
                from fyp.sovereignty import move

                move.finish_moves(self)  # moves a killed process left unfinished
            if finish_moves and any(
                (config.region_dir(r) / ERASING_DIR).is_dir() for r in config.regions
            ):
                from fyp.sovereignty.erasure_journal import finish_erasures

                finish_erasures(self)  # erasures a killed process left part-way
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, root: str | Path, finish_moves: bool = True) -> Deployment:
        return cls(load_config(Path(root)), finish_moves=finish_moves)

    @classmethod
    def init(
        cls,
        root: str | Path,
        regions: list[str],
        name: str | None = None,
        store: str | None = None,
        served_log: str | None = None,
    ) -> Deployment:
        """Create a new deployment directory with one store per region: embedded SQLite
        files, or ``store``, a URL with ``{region}`` in it (say
        ``postgresql://fyp@db/fyp?schema=fyp_{region}``) naming each region's own.
        ``served_log``: likewise a Redis URL per region for the served log (default: in
        the store)."""
        root = Path(root)
        for option, url in (("--store", store), ("--served-log", served_log)):
            if url is not None and "{region}" not in url:
                raise InvalidRequest(
                    f"{option} needs {{region}} in the URL: every region has its own",
                    url=url,
                )
        if store is not None:
            check_store_scheme(store, "--store")
        if (root / "fyp.toml").exists():
            raise AlreadyExists(f"{root} already holds a deployment (fyp.toml exists)")
        if root.exists() and not root.is_dir():
            raise InvalidRequest(f"{root} is a file, not a directory", path=str(root))
        config = new_config(root, regions, name)
        if store is not None:
            cells = {
                r: dataclasses.replace(cell, store=store.replace("{region}", r))
                for r, cell in config.regions.items()
            }
            config = dataclasses.replace(config, regions=cells)
        if served_log is not None:
            config = with_served_logs(config, dict.fromkeys(config.regions, served_log))
        # what init makes (fyp.toml, region folders, SQLite files, the parents of each
        # that are missing), so a failure (a store that cannot be opened) leaves none of
        # it behind: a half-made deployment is unusable and refuses the retry
        made = _missing_paths(config, root)
        try:
            try:
                write_config(config)
                for r in regions:
                    config.region_dir(r).mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a parent that is a file, no permission: the path given
                raise InvalidRequest(
                    f"cannot create a deployment in {root}: {exc.strerror}", path=str(root)
                ) from exc
            return cls(config, create=True)
        except BaseException:
            _remove(made)
            raise

    def close(self) -> None:
        for log in self.served_logs.values():
            log.close()
        self.served_logs = {}
        for store in self.stores.values():
            store.close()
        self.stores = {}

    def __enter__(self) -> Deployment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def regions(self) -> list[str]:
        return self.config.region_names

    def store(self, region: str) -> Store:
        # every feed asks for its region's store and served log: an open store is a
        # declared region, so only a miss needs the config to say which error it is
        try:
            return self.stores[region]
        except KeyError:
            self.config.region(region)  # raises UnknownRegion with the declared list
            raise ConfigError(f"store of region {region!r} is not open") from None

    def served_log(self, region: str) -> ServedLog:
        """Where the region's feed records what it showed (``[regions.R] served_log``:
        the region's store by default, or a Redis server of its own)."""
        try:
            return self.served_logs[region]
        except KeyError:
            self.store(region)  # an undeclared or closed region says so
            raise ConfigError(f"served log of region {region!r} is not open") from None

    # -- routing ----------------------------------------------------------------
    def locate_users(self, user_ids: Iterable[str], fresh: bool = False) -> dict[str, str]:
        """Home region of each user that exists; unknown users are absent from the result.
        ``fresh``: ask the stores about cached users too (another process may have erased
        them since), and forget the routes of those no store holds."""
        wanted = list(dict.fromkeys(user_ids))
        found: dict[str, str] = {}
        missing: list[str] = []
        for uid in wanted:
            region = None if fresh else self._routes.get(uid)
            if region is None:
                missing.append(uid)
            else:
                found[uid] = region
        for region, store in self.stores.items():
            if not missing:
                break
            hits = store.existing_users(missing)
            if hits:
                for uid in hits:
                    found[uid] = region
                missing = [u for u in missing if u not in hits]
        with self._routes_lock:
            if len(self._routes) > _ROUTE_CACHE_MAX:
                self._routes.clear()
            for uid in wanted:
                if uid in found:
                    self._routes[uid] = found[uid]
                else:
                    self._routes.pop(uid, None)
        return found

    def home_region(self, user_id: str) -> str:
        # cached, so it may be stale after a move by another process: see relocate
        region = self._routes.get(user_id)
        if region is not None:
            return region
        region = self.locate_users([user_id]).get(user_id)
        if region is None:
            raise UnknownUser(f"no user {user_id!r} in any region", user_id=user_id)
        return region

    def forget_route(self, user_id: str) -> None:
        with self._routes_lock:
            self._routes.pop(user_id, None)

    def relocate(self, user_id: str) -> str:
        """The cached home region said the user is there but they are not (moved or
        erased since, maybe by another process): forget the route and locate them once
        more (UnknownUser if nowhere). A request whose key may not touch the region they
        live in now is refused, as the access check would have refused it."""
        self.forget_route(user_id)
        region = self.home_region(user_id)
        allowed = REQUEST_REGIONS.get()
        if allowed is not None and region not in allowed:
            raise Forbidden(
                f"user {user_id!r} is not in a region this API key may touch",
                user_id=user_id,
            )
        return region

    def homed_region(self, user_id: str) -> str:
        """The user's home region, checked against its store (one indexed read): a
        cached route gone stale is located again (:meth:`relocate`)."""
        region = self.home_region(user_id)
        if self.stores[region].existing_users([user_id]):
            return region
        return self.relocate(user_id)

    def locate_video(self, video_id: str) -> list[str]:
        """Regions whose catalogue holds the video (in config order)."""
        return [r for r, s in self.stores.items() if s.video_durations([video_id])]


def add_region(root: str | Path, name: str) -> DeploymentConfig:
    """Create the empty store of region ``name``, declaring it in fyp.toml (with the
    default store URL and backup target) unless an operator already has. Besides
    ``init`` and a restore, the one way a region's store comes to exist: any other open
    of a missing store file fails."""
    config = load_config(Path(root))
    declare = name not in config.regions
    if declare:
        check_region_name(name)
        regions = {**config.regions, name: default_region(name)}
        check_backup_targets(config.root, regions)
        config = dataclasses.replace(config, regions=regions)
    url = config.resolve_url(config.region(name).store)
    try:
        open_store(url, name).close()
    except StorageError:
        pass  # missing (or unopenable: creating it says why)
    else:
        raise AlreadyExists(f"region {name!r} already has a store ({url})", region=name)
    config.region_dir(name).mkdir(parents=True, exist_ok=True)
    open_store(url, name, create=True).close()
    if declare:  # appended: the operator's comments and layout in fyp.toml stay
        block = {"regions": {name: config.region(name).to_dict()}}
        with (config.root / CONFIG_FILE).open("a", encoding="utf-8") as out:
            out.write("\n" + tomli_w.dumps(block))
    return config


def _topmost_missing(path: Path) -> Path | None:
    """``path`` or its highest ancestor that does not exist (what creating ``path`` with
    its parents makes), or None when ``path`` exists."""
    if path.exists() or path.is_symlink():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _missing_paths(config: DeploymentConfig, root: Path) -> list[Path]:
    """What creating the deployment ``config`` describes would make, as it is now."""
    from fyp.sovereignty.region_data import store_companions, store_file

    wanted = [root / CONFIG_FILE] + [config.region_dir(r) for r in config.regions]
    for name in config.regions:
        with contextlib.suppress(ConfigError):  # a store on a server has no file here
            wanted += store_companions(store_file(config, name))
    made = [m for m in map(_topmost_missing, wanted) if m is not None]
    return list(dict.fromkeys(made))


def _remove(paths: list[Path]) -> None:
    """Remove what a failed init made (best effort: the failure is what gets reported)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # missing, or under a file: never made
                path.unlink()
