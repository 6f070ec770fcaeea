"""SQLite SQL translated for PostgreSQL, and PostgreSQL URLs: no server needed."""

from __future__ import annotations

import pytest

from fyp.errors import StorageError
from fyp.storage.postgres_dialect import redact, split_url, to_postgres


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
        # a literal % is escaped for the driver, in and out of quotes; a quoted ? stays
        ("SELECT 1 WHERE x LIKE 'sql_%' AND y = '?'", "SELECT 1 WHERE x LIKE 'sql_%%' AND y = '?'"),
        ("SELECT 5 % 2, 'it''s ?', ?", "SELECT 5 %% 2, 'it''s ?', %s"),
        (
            "INSERT OR IGNORE INTO t (a, b) VALUES (?, ?);",
            "INSERT INTO t (a, b) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        ),
        (
            "SELECT video_id FROM m WHERE video_id IN (SELECT value FROM json_each(?))",
            "SELECT video_id FROM m WHERE video_id IN "
            "(SELECT value FROM json_array_elements_text((%s)::json))",
        ),
        (
            "SELECT 1 FROM json_each(j.excluded) WHERE value = ?",
            "SELECT 1 FROM json_array_elements_text((j.excluded)::json) WHERE value = %s",
        ),
    ],
)
def test_positional_sql_is_translated(sqlite: str, postgres: str) -> None:
    sql, params = to_postgres(sqlite, ("a", "b"))
    assert sql == postgres
    assert params == ("a", "b")


def test_numbered_placeholders_become_named_parameters() -> None:
    sql, params = to_postgres("SELECT ?1, ?2 WHERE u = ?1", ("u1", 7))
    assert sql == "SELECT %(p1)s, %(p2)s WHERE u = %(p1)s"
    assert params == {"p1": "u1", "p2": 7}


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://fyp:s3cret@db.eu:5432/fyp?schema=eu") == (
        "postgresql://fyp:***@db.eu:5432/fyp?schema=eu"
    )
    assert redact("postgresql://fyp@db.eu/fyp") == "postgresql://fyp@db.eu/fyp"
    assert redact("postgresql://:s3cret@db.eu/fyp") == "postgresql://:***@db.eu/fyp"  # no user
    assert redact("redis://:s3cret@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert redact("postgresql://fyp:p@ss@db/fyp") == "postgresql://fyp:***@db/fyp"
    assert redact("redis://:pa?ss@h/0") == "redis://:***@h/0"  # ? or # in it, unencoded


def test_redact_hides_password_options() -> None:
    """redis-py and libpq both take a password as an option too: it was shown."""
    assert redact("redis://h:6379/0?password=s3cret") == "redis://h:6379/0?password=***"
    assert redact("postgresql://db/fyp?sslmode=require&PASSWORD=s3cret&sslpassword=k3y") == (
        "postgresql://db/fyp?sslmode=require&PASSWORD=***&sslpassword=***"
    )
    assert redact("redis://h?password=s3cret#x") == "redis://h?password=***#x"
    assert redact("redis://h/0?passwords_policy=1") == "redis://h/0?passwords_policy=1"


def test_schema_is_taken_out_of_what_the_driver_sees() -> None:
    conninfo, schema = split_url("postgres://fyp@h/db?sslmode=require&schema=fyp_eu")
    assert schema == "fyp_eu"
    assert conninfo == "postgresql://fyp@h/db?sslmode=require"
    assert split_url("postgresql://fyp@h/db") == ("postgresql://fyp@h/db", None)


@pytest.mark.parametrize("schema", ["EU", "eu-1", 'x"; DROP', "1eu", ""])
def test_a_schema_that_is_not_a_plain_name_is_refused(schema: str) -> None:
    with pytest.raises(StorageError, match="schema"):
        split_url(f"postgresql://h/db?schema={schema}")
