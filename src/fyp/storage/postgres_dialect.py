"""What the PostgreSQL store needs to speak to the server: the driver, URLs, and the
few SQLite idioms of the capability packages' SQL translated (:func:`to_postgres`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fyp.errors import StorageError

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def driver() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageError(
            "the PostgreSQL store needs psycopg: pip install 'fyp[postgres]'"
        ) from exc
    return psycopg


_SECRET_OPTION = re.compile(r"([?&][A-Za-z_]*password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """A server URL (PostgreSQL, Redis, Redis Sentinel) without its passwords, for
    messages and logs: the one after ``USER:`` and any option named ``…password``
    (``?password=``, ``?sentinel_password=``). The rest is kept as written (an IPv6
    address keeps its brackets, a list of hosts its commas). Read by hand, not with
    ``urlsplit`` (which refuses some host lists): the user part ends at the last ``@``
    before the path, so a password holding ``?`` or ``#`` is hidden too."""
    head, sep, rest = url.partition("://")
    if sep:
        end = rest.find("/")
        end = len(rest) if end < 0 else end
        userinfo, at, host = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.partition(':')[0]}:***@{host}{rest[end:]}"
    return _SECRET_OPTION.sub(r"\1***", head + sep + rest)


def split_url(url: str) -> tuple[str, str | None]:
    """(what the driver connects with, the schema fyp keeps the region in)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise StorageError(f"not a PostgreSQL URL: {redact(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise StorageError(
            f"schema {schema!r} in {redact(url)!r}: use lower-case letters, digits and _"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=rest))
    return conninfo, schema


_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?(\d*)|%")
_JSON_EACH = re.compile(r"json_each\(([^()]*)\)")
_INSTR = re.compile(r"\binstr\(", re.IGNORECASE)
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO", re.IGNORECASE)


def to_postgres(sql: str, params: Sequence[Any] = ()) -> tuple[str, Sequence[Any] | dict[str, Any]]:
    """SQLite SQL of the capability packages in PostgreSQL's dialect: ``?`` and ``?N``
    placeholders, ``INSERT OR IGNORE``, ``json_each(x)`` over a JSON array, ``instr``; a literal
    ``%`` is escaped for the driver. Anything else must already be common SQL."""
    numbered = False

    def swap(m: re.Match[str]) -> str:
        nonlocal numbered
        token = m.group(0)
        if token.startswith("'"):
            return token.replace("%", "%%")
        if token == "%":
            return "%%"
        if m.group(1):
            numbered = True
            return f"%(p{m.group(1)})s"
        return "%s"

    out = _JSON_EACH.sub(r"json_array_elements_text((\1)::json)", sql)
    out = _INSTR.sub("strpos(", out)  # the same (text, needle) order
    if _OR_IGNORE.match(out):
        out = _OR_IGNORE.sub("INSERT INTO", out, count=1).rstrip().rstrip(";")
        out += " ON CONFLICT DO NOTHING"
    out = _PLACEHOLDER.sub(swap, out)
    if numbered:
        return out, {f"p{n}": v for n, v in enumerate(params, start=1)}
    return out, params


@functools.cache
def bool_as_int(psycopg: Any) -> type:
    """A dumper sending Python booleans as 0/1: flags are integer columns, as in SQLite,
    and capability packages pass ``True``/``False`` for them."""

    class BoolAsInt(psycopg.adapt.Dumper):  # type: ignore[misc]
        oid = psycopg.postgres.types["int4"].oid

        def dump(self, obj: bool) -> bytes:
            return b"1" if obj else b"0"

    return BoolAsInt
