"""The PostgreSQL server the PostgreSQL tests use (``FYP_TEST_POSTGRES_URL``), and the
schemas they make on it."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fyp.regions.deployment import Deployment

SERVER = os.environ.get("FYP_TEST_POSTGRES_URL", "")


def schema_url(schema: str) -> str:
    """The server's URL naming one schema of it."""
    return f"{SERVER}{'&' if '?' in SERVER else '?'}schema={schema}"


def drop_schemas(prefix: str) -> None:
    """Drop every schema whose name starts with ``prefix`` (a test's own)."""
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as conn:
        made = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{prefix}%",)
        ).fetchall()
        for (schema,) in made:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def deployments_on_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every deployment made meanwhile (``Deployment.init``) keeps its stores in schemas
    of its own on the server, dropped afterwards."""
    prefix = f"d{uuid.uuid4().hex[:12]}"
    numbers = itertools.count()
    real = Deployment.init.__func__  # type: ignore[attr-defined]

    def init(
        cls: type[Deployment],
        root: Any,
        regions: list[str],
        name: str | None = None,
        store: str | None = None,
    ) -> Deployment:
        template = schema_url(f"{prefix}_{next(numbers)}_{{region}}")
        return real(cls, root, regions, name, store or template)  # type: ignore[no-any-return]

    monkeypatch.setattr(Deployment, "init", classmethod(init))
    try:
        yield
    finally:
        drop_schemas(prefix)
