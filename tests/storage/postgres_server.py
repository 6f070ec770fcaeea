"""The PostgreSQL server the PostgreSQL tests use (``FYP_TEST_POSTGRES_URL``), and the
schemas they make on it."""

from __future__ import annotations

import os

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
