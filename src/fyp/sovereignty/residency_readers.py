"""Reading the names of users out of a region's files, whatever kind of file holds them.

Each reader yields ``(location, column class, {value: records})``: a store's person
columns and the person fields of JSON kept in its other columns, the user-id arrays of
model artifacts, and CSV columns, JSON fields or ``user_id=…`` pairs of other files,
classed by name as ``user``, ``person``, ``creator`` or ``pseudonym`` (or ``unreadable``:
a file that cannot be vouched for). The residency scan (:mod:`fyp.sovereignty.residency`)
judges what they find; erasure's checks for copies of a user
(:func:`fyp.sovereignty.remnants.copy_hits`) read with the same readers.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sqlite3
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fyp.audit.log import SQLStore
from fyp.sovereignty.columns import (
    BYTES_TYPE,
    CREATOR_COLUMN,
    JSON_FIELD_NEEDLES,
    NUMERIC_TYPE,
    PERSON_COLUMN,
    USER_COLUMN,
    json_field,
    json_objects_sql,
)
from fyp.sovereignty.region_data import read_only
from fyp.sovereignty.remnants import SQLITE_MAGIC

PSEUDONYM_COLUMN = re.compile(r"^subject$")
USER_ARRAY = re.compile(r"user")
ID_ARRAY = re.compile(r"(user|creator)_?ids?$")
TEXT_PAIR = re.compile(
    r"""["']?\b(user_id|userid|user|uid|viewer_id)\b["']?\s*[:=]\s*["']?([\w.@:+-]{1,128})""",
    re.IGNORECASE,
)


Names = tuple[str, str, dict[str, int]]


def _column_class(name: str) -> str | None:
    lowered = name.lower()
    for cls, pattern in (
        ("creator", CREATOR_COLUMN),
        ("user", USER_COLUMN),
        ("person", PERSON_COLUMN),
        ("pseudonym", PSEUDONYM_COLUMN),
    ):
        if pattern.match(lowered):
            return cls
    return None


def sqlite_names(path: Path, counted: dict[str, int] | None = None) -> Iterator[Names]:
    """Person columns of every table of a SQLite file, with each value's row count, and
    the person fields inside JSON objects stored in its other columns (``json_names``)."""
    conn = read_only(path)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]

        def columns(table: str) -> list[tuple[str, str]]:
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            return [(str(col[1]), str(col[2])) for col in info]

        def in_json(table: str, column: str, kind: str) -> Iterator[Names]:
            if not NUMERIC_TYPE.search(kind):  # JSON is text
                yield from json_names(conn, table, column, counted)

        yield from _table_names(
            sorted(tables), columns, lambda sql: conn.execute(sql).fetchall(), in_json, counted
        )
    except sqlite3.DatabaseError:
        yield f"{path.name} (unreadable SQLite)", "unreadable", {}
    finally:
        conn.close()


def _table_names(
    tables: Iterable[str],
    columns: Callable[[str], Iterable[tuple[str, str]]],
    query: Callable[[str], Iterable[Sequence[Any]]],
    in_json: Callable[[str, str, str], Iterator[Names]],
    counted: dict[str, int] | None,
) -> Iterator[Names]:
    """The column walk both kinds of store share: ``columns(table)`` gives ``(name,
    declared type)``, ``in_json(table, column, type)`` reads a column no name classes."""
    for table in tables:
        if counted is not None:
            counted["store_tables"] += 1
        for column, kind in columns(table):
            cls = _column_class(column)
            if cls is None:
                yield from in_json(table, column, kind)
                continue
            if counted is not None:
                counted["store_columns"] += 1
            rows = query(
                f'SELECT "{column}", COUNT(*) FROM "{table}" '
                f'WHERE "{column}" IS NOT NULL GROUP BY "{column}"'
            )
            yield f"{table}.{column}", cls, {str(v): int(n) for v, n in rows}


def json_names(
    conn: sqlite3.Connection, table: str, column: str, counted: dict[str, int] | None = None
) -> Iterator[Names]:
    """Person fields inside the JSON objects of one column (``users.attributes`` is the
    client's own: an app may keep ``{"invited_by": ...}`` there), classified by field
    name as columns are, at any depth and in arrays; each yields
    ``table.column.field``. Only values that start like a JSON object and contain one
    of ``fyp.sovereignty.columns.JSON_FIELD_NEEDLES`` are parsed."""
    source = json_objects_sql(table, column)
    try:
        fields: dict[str, list[tuple[object, str]]] = {}
        for key, path in conn.execute(f"SELECT DISTINCT j.key, j.path {source}").fetchall():
            fields.setdefault(json_field(key, str(path)), []).append((key, str(path)))
    except sqlite3.DatabaseError:
        return  # not JSON this SQLite can read: the column scan above is what there is
    for name, places in sorted(fields.items()):
        cls = _column_class(name)
        if cls is None:
            continue
        if counted is not None:
            counted["store_columns"] += 1
        counts: dict[str, int] = {}
        for key, path in places:
            where = (
                "j.key = ?" if isinstance(key, str) else "typeof(j.key) = 'integer' AND j.path = ?"
            )
            rows = conn.execute(
                f"SELECT j.atom, COUNT(*) {source} AND {where} GROUP BY j.atom",
                (key if isinstance(key, str) else path,),
            ).fetchall()
            for value, n in rows:
                counts[str(value)] = counts.get(str(value), 0) + int(n)
        yield f"{table}.{column}.{name}", cls, counts


def server_names(sql: SQLStore, counted: dict[str, int] | None = None) -> Iterator[Names]:
    """:func:`sqlite_names` for a store on a database server (PostgreSQL), read through
    its own connection; JSON objects are taken apart here (``json_file_names``), one
    distinct value at a time, only those starting like an object and holding a needle."""

    def in_json(table: str, column: str, kind: str) -> Iterator[Names]:
        if not NUMERIC_TYPE.search(kind) and not BYTES_TYPE.search(kind):
            yield from _server_json_names(sql, table, column, counted)

    yield from _table_names(sql.table_names(), sql.table_columns, sql.query, in_json, counted)


def _server_json_names(
    sql: SQLStore, table: str, column: str, counted: dict[str, int] | None
) -> Iterator[Names]:
    col = f'"{column}"'
    named = " OR ".join(f"instr({col}, '{needle}') > 0" for needle in JSON_FIELD_NEEDLES)
    fields: dict[str, tuple[str, dict[str, int]]] = {}
    for text, rows in sql.query(
        f"SELECT {col}, COUNT(*) FROM \"{table}\" WHERE substr({col}, 1, 1) = '{{' "
        f"AND ({named}) GROUP BY {col}"
    ):
        try:
            value = json.loads(str(text))
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        for location, (cls, found) in json_file_names(value).items():
            counts = fields.setdefault(location.removeprefix("field "), (cls, {}))[1]
            for v, n in found.items():
                counts[v] = counts.get(v, 0) + n * int(rows)
    for name, (cls, counts) in sorted(fields.items()):
        if counted is not None:
            counted["store_columns"] += 1
        yield f"{table}.{column}.{name}", cls, counts


def store_region(path: Path) -> str | None:
    conn = read_only(path)
    try:
        row = conn.execute("SELECT value FROM store_meta WHERE key='region'").fetchone()
        return str(row[0]) if row else None
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


def array_names(arrays: Iterable[tuple[str, np.ndarray]]) -> Iterator[Names]:
    for name, arr in arrays:
        numeric_ids = arr.dtype.kind in "iu" and ID_ARRAY.search(name.lower())
        if arr.dtype.kind not in "USO" and not numeric_ids:
            continue  # an integer array is an index (``creator``) unless named as ids
        if CREATOR_COLUMN.match(name):
            cls = "creator"
        elif USER_ARRAY.search(name.lower()):
            cls = "user"
        else:
            continue
        counts: dict[str, int] = {}
        for v in arr.ravel().tolist():
            counts[str(v)] = counts.get(str(v), 0) + 1
        yield name, cls, counts


def npz_names(path: Path) -> Iterator[Names]:
    """The user ids of an ``.npz`` (or ``.npy``); one that does not load is
    ``unreadable``, after the ids of what its bytes still hold (:func:`salvaged_arrays`:
    a killed writer's file names the users it got to)."""
    try:
        if path.suffix == ".npy":
            arrays = [(path.stem, np.load(path, allow_pickle=False))]
        else:
            with np.load(path, allow_pickle=False) as data:
                arrays = [(k, data[k]) for k in data.files if _id_array(k)]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        salvaged = salvaged_arrays(path) if path.suffix == ".npz" else []
        yield from array_names((k, a) for k, a in salvaged if _id_array(k))
        yield f"{path.name} (unreadable arrays)", "unreadable", {}
        return
    yield from array_names(arrays)


def _id_array(name: str) -> bool:
    return bool(USER_ARRAY.search(name)) or "creator" in name


_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header
_ZIP64 = 0xFFFFFFFF


def salvaged_arrays(path: Path) -> list[tuple[str, np.ndarray]]:
    """The arrays a cut ``.npz`` still holds (``np.savez`` killed mid-write: no central
    directory), read member by member from their local headers; a cut member gives its
    whole items. Stops at anything else (a compressed member, bytes that are no member)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out: list[tuple[str, np.ndarray]] = []
    at = 0
    while data.startswith(b"PK\x03\x04", at) and at + _LOCAL_HEADER.size <= len(data):
        _, _, flags, method, _, _, _, size, _, name_len, extra_len = _LOCAL_HEADER.unpack_from(
            data, at
        )
        name_at = at + _LOCAL_HEADER.size
        start = name_at + name_len + extra_len
        if size == _ZIP64:  # the zip64 extra field (id 1) holds the sizes: size, then compressed
            extra = data[name_at + name_len : start]
            size = int.from_bytes(extra[12:20], "little") if extra[:2] == b"\x01\x00" else 0
        if method != 0:  # np.savez stores; np.savez_compressed is not read here
            break
        known = size > 0 and not flags & 0x08  # else its writer was killed inside it
        end = min(start + size, len(data)) if known else len(data)
        array = _npy_items(data[start:end])
        if array is not None:
            out.append((data[name_at : name_at + name_len].decode(errors="replace"), array))
        if not known:
            break
        at = end
    return [(name.removesuffix(".npy"), array) for name, array in out]


def _npy_items(buf: bytes) -> np.ndarray | None:
    """The whole items of a (maybe cut) ``.npy``'s bytes, flat; None if none can be read."""
    f = io.BytesIO(buf)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject or dtype.itemsize == 0:
            return None
        count = min((len(buf) - f.tell()) // dtype.itemsize, int(np.prod(shape)))
        return np.frombuffer(buf, dtype=dtype, count=count, offset=f.tell())
    except (ValueError, EOFError):
        return None


def json_file_names(value: object) -> dict[str, tuple[str, dict[str, int]]]:
    """Person fields of a parsed JSON document, at any depth and in arrays, classified
    by field name as columns are: ``{"field NAME": (class, {value: count})}``."""
    out: dict[str, tuple[str, dict[str, int]]] = {}

    def walk(node: object, field_name: str | None) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, str(key))
        elif isinstance(node, list):
            for child in node:
                walk(child, field_name)
        elif field_name is not None and isinstance(node, str | int) and not isinstance(node, bool):
            cls = _column_class(field_name)
            if cls in {"user", "person", "creator"}:
                counts = out.setdefault(f"field {field_name}", (cls, {}))[1]
                counts[str(node)] = counts.get(str(node), 0) + 1

    walk(value, None)
    return out


def text_names(path: Path) -> Iterator[Names]:
    """User ids in a CSV user column, in the person fields of a JSON document, or in
    ``user_id=…`` / ``"user_id": …`` pairs; a ``.gz`` file is read decompressed."""
    raw = path.read_bytes()
    suffix = path.suffix
    if suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            yield f"{path.name} (unreadable gzip)", "unreadable", {}
            return
        suffix = Path(path.stem).suffix
    text = raw.decode("utf-8", errors="replace")
    if suffix == ".json":
        try:
            fields = json_file_names(json.loads(text))
        except ValueError:
            fields = {}  # not one document (JSON lines?): the pairs below
        for location, (cls, found) in sorted(fields.items()):
            yield location, cls, found
        if fields:
            return
    if suffix in {".csv", ".tsv"}:
        dialect = "excel-tab" if suffix == ".tsv" else "excel"
        reader = csv.reader(io.StringIO(text), dialect=dialect)
        header = [h.strip().lower() for h in next(reader, [])]
        cols = [(i, h) for i, h in enumerate(header) if _column_class(h) in {"user", "person"}]
        for i, h in cols:
            counts: dict[str, int] = {}
            rows = csv.reader(io.StringIO(text), dialect=dialect)
            next(rows, None)  # the header
            for row in rows:
                if len(row) > i:
                    counts[row[i]] = counts.get(row[i], 0) + 1
            yield f"column {h}", _column_class(h) or "user", counts
        if cols:
            return
    counts = {}
    for m in TEXT_PAIR.finditer(text):
        counts[m.group(2)] = counts.get(m.group(2), 0) + 1
    if counts:
        yield "user id pairs", "user", counts


def file_names(path: Path, counted: dict[str, int] | None = None) -> Iterator[Names]:
    """Dispatch a file to the reader for its kind."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
        if head == SQLITE_MAGIC:
            yield from sqlite_names(path, counted)
        elif path.suffix in {".npz", ".npy"}:
            yield from npz_names(path)
        else:
            yield from text_names(path)
    except OSError:
        return
