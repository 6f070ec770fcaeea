"""Region stores, opened by URL: ``sqlite:///…`` (the embedded default, a file per
region) or ``postgresql://…`` (a database, or with ``?schema=`` a schema, per region on a
PostgreSQL server; needs the ``postgres`` extra)."""

from __future__ import annotations

from fyp.errors import ConfigError, InvalidRequest
from fyp.storage.base import ErasedCounts, EventRow, LabelRow, Store, VideoRow, json_text

__all__ = [
    "ErasedCounts",
    "EventRow",
    "LabelRow",
    "Store",
    "VideoRow",
    "check_store_scheme",
    "json_text",
    "open_store",
]

STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].lower()


def check_store_scheme(url: str, option: str) -> None:
    """Refuse a store URL given on the command line whose scheme no backend opens (a
    client error: in fyp.toml the same URL is a config error, :func:`open_store`)."""
    if _scheme(url) not in STORE_SCHEMES:
        raise InvalidRequest(
            f"{option}: no store backend for URL scheme {_scheme(url)!r} "
            "(use sqlite:///… or postgresql://…)",
            url=url,
        )


def open_store(url: str, region: str, *, migrate: bool = True, create: bool = False) -> Store:
    """Open (and by default migrate) the store of ``region`` at ``url``. A store that
    does not exist is an error unless ``create`` (what makes a region's store)."""
    scheme = _scheme(url)
    store: Store
    if scheme == "sqlite":
        from fyp.storage.sqlite import SQLiteStore

        store = SQLiteStore(url, region, create=create)
    elif scheme in {"postgres", "postgresql"}:
        from fyp.storage.postgres import PostgresStore

        store = PostgresStore(url, region, create=create)
    else:
        raise ConfigError(f"no store backend for URL scheme {scheme!r}", url=url)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
