"""Where a user can be named outside their profile row: store columns, artifacts, files.

Erasure (:mod:`fyp.sovereignty.erasure`) and its verification share these finders, so
what is removed and what is checked cannot drift apart. Store columns that name a
person are found by their name (``user_id``, ``*_user_id``, ``creator_id``,
``appellant``, ``actor``, ``*_by``), so a table added by a later capability is checked
without being listed here; the erasure knows how to clean the tables fyp has today.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fyp.audit.log import SQLStore, sql_store
from fyp.catalog.models import ERASED_NAME
from fyp.models.ahead import USER_IDS as AHEAD_USERS
from fyp.models.ahead import without_user as drop_ranked_ahead
from fyp.models.artifacts import ARRAYS, list_versions, models_dir
from fyp.sovereignty.columns import (
    BYTES_TYPE,
    CREATOR_COLUMN,
    JSON_FIELD_NEEDLES,
    NUMERIC_TYPE,
    names_a_person,
)
from fyp.storage.base import json_text

# columns whose rows are the user's own data and go with them (a follow or a block: of
# either person it names); everything else that names the user keeps its row and has
# the name replaced by ERASED_NAME
OWNED_ROWS = {
    "users",
    "events",
    "labels",
    "served_pages",
    "experiment_exposures",
    "follows",
    "follow_actions",
    "blocks",
    "blocked_by",
    "block_mirrors_owed",
}
APPEND_ONLY = {"audit_log"}  # hash-chained: a row there can never be edited
ARTIFACT_USER_ARRAYS = ("user_ids", "lineage_user_ids", "creator_ids", AHEAD_USERS)
SCANNED_SUFFIXES = (".csv", ".jsonl", ".json")
SKIPPED_FILES = {"erasures.jsonl"}  # the ledger names users by pseudonym only
SKIPPED_DIRS = {"models", "secrets"}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # written unquoted in a JSON path


@dataclass(frozen=True)
class ColumnHit:
    table: str
    column: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "column": self.column, "rows": self.rows}


def _columns(store: SQLStore) -> Iterator[tuple[str, str, str]]:
    """(table, column, declared type) of every table of the store, found from the schema."""
    for table in store.table_names():
        for column, kind in store.table_columns(table):
            yield table, column, kind


def person_columns(store: SQLStore) -> list[tuple[str, str]]:
    """Every (table, column) of the store whose name says it holds a person's id."""
    return [(t, c) for t, c, _ in _columns(store) if names_a_person(c)]


def text_columns(store: SQLStore) -> list[tuple[str, str]]:
    """Every (table, column) that may hold JSON objects: text, not named for a person."""
    return [
        (t, c)
        for t, c, kind in _columns(store)
        if not names_a_person(c) and not NUMERIC_TYPE.search(kind) and not BYTES_TYPE.search(kind)
    ]


_person_field = functools.lru_cache(maxsize=4096)(names_a_person)
"""``names_a_person`` of a JSON field name: a store's JSON repeats a few dozen names."""


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f'{path}."{key}"'


def _may_name_a_person(text: str) -> bool:
    """Whether a JSON text can hold a person field at all: every such name contains one
    of ``JSON_FIELD_NEEDLES``; a text with escapes is taken apart whatever it holds (a
    name may be written ``"user\\u005fid"``). Most values of a store (verdicts, model
    inputs) fail this and are never parsed."""
    return "\\" in text or any(needle in text for needle in JSON_FIELD_NEEDLES)


def _names(value: Any, user_id: str) -> bool:
    """Is this JSON scalar the user's id (as text, or as a whole number)?"""
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and value == user_id) or (
        isinstance(value, int) and str(value) == user_id
    )


def _json_objects(
    store: SQLStore, table: str, column: str, user_id: str
) -> list[tuple[str, dict[str, Any], int]]:
    """The column's distinct values that contain the user's id and parse as JSON
    objects: (text, parsed, how many rows hold it)."""
    out: list[tuple[str, dict[str, Any], int]] = []
    for text, rows in store.query(
        f'SELECT "{column}", COUNT(*) FROM "{table}" WHERE instr("{column}", ?) > 0 '
        f'GROUP BY "{column}"',
        (user_id,),
    ):
        if not (isinstance(text, str) and text.startswith("{") and _may_name_a_person(text)):
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append((text, value, int(rows)))
    return out


def _paths_naming(value: Any, user_id: str) -> list[str]:
    """The JSON paths where the user's id sits under a person field; an array's elements
    sit under the array's field (``{"friends": ["u1"]}``: ``$.friends[0]``). Paths are
    built only for containers and hits: a store's objects hold thousands of scalars."""
    found: list[str] = []

    def walk(v: Any, path: str, field: str) -> None:
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            name = k if isinstance(k, str) else field
            if isinstance(x, dict | list):
                walk(x, _key_path(path, k) if isinstance(k, str) else f"{path}[{k}]", name)
            elif _names(x, user_id) and _person_field(name):
                found.append(_key_path(path, k) if isinstance(k, str) else f"{path}[{k}]")

    if isinstance(value, dict | list):
        walk(value, "$", "")
    return found


def json_paths(store: SQLStore, table: str, column: str, user_id: str) -> dict[str, int]:
    """Where ``user_id`` sits under a person field inside the column's JSON objects:
    JSON path -> rows (``{"invited_by": "u1"}`` -> ``$.invited_by``)."""
    found: dict[str, int] = {}
    for _, value, rows in _json_objects(store, table, column, user_id):
        for path in _paths_naming(value, user_id):
            found[path] = found.get(path, 0) + rows
    return found


def _without_user(
    value: Any, user_id: str, replacement: str = ERASED_NAME
) -> tuple[Any, list[str]]:
    """``value`` with the user's id replaced by ``replacement`` under person fields, and
    the paths replaced."""
    hits = _paths_naming(value, user_id)

    def walk(v: Any, name: str) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x, name) for x in v]
        return replacement if _names(v, user_id) and _person_field(name) else v

    return (walk(value, "") if hits else value), hits


def _json_place(column: str, path: str) -> str:
    """``attributes`` and ``$."invited_by"`` -> ``attributes.invited_by`` (for people)."""
    return column + path[1:].replace('"', "")


def store_hits(store: object, user_id: str) -> list[ColumnHit]:
    """Rows of the store that name ``user_id`` in a person column, or in a person field
    of a JSON object kept in another column (reported as ``column.field``)."""
    sql = sql_store(store)
    hits: list[ColumnHit] = []
    for table, column in person_columns(sql):
        n = int(sql.query(f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" = ?', (user_id,))[0][0])
        if n:
            hits.append(ColumnHit(table, column, n))
    for table, column in text_columns(sql):
        for path, n in json_paths(sql, table, column, user_id).items():
            hits.append(ColumnHit(table, _json_place(column, path), n))
    return hits


def person_names(value: Any) -> set[str]:
    """Every id a JSON value holds under a person field (``{"invited_by": "u1"}``)."""
    found: set[str] = set()

    def walk(v: Any, field: str) -> None:
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, x in items:
            name = k if isinstance(k, str) else field
            if isinstance(x, dict | list):
                walk(x, name)
            elif isinstance(x, str) and x and _person_field(name):
                found.add(x)

    if isinstance(value, dict | list):
        walk(value, "")
    return found


def without_names(value: Any, names: set[str], replacement: str) -> Any:
    """``value`` with each of ``names`` replaced under person fields."""
    for name in sorted(names):
        value, _ = _without_user(value, name, replacement)
    return value


def scrub_store(
    store: object,
    user_id: str,
    skip: set[str] | None = None,
    replacement: str = ERASED_NAME,
    creators: bool = True,
) -> dict[str, int]:
    """Delete rows the user owns and replace the user's name in other person columns,
    and in the person fields of JSON objects kept in other columns (someone else's
    ``users.attributes`` naming the user as ``invited_by``). ``creators=False`` leaves
    the creator columns alone (a user who moves away stays the creator of their
    uploads, and others' follows and blocks of them stay).

    Runs in the caller's transaction. Append-only tables are left alone (the audit log
    names users by pseudonym; a raw id there is reported by the verifier)."""
    sql = sql_store(store)
    counts: dict[str, int] = {}
    for table, column in person_columns(sql):
        if table in APPEND_ONLY or table in (skip or set()):
            continue
        if not creators and CREATOR_COLUMN.match(column):
            continue
        if table in OWNED_ROWS:
            n = sql.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', (user_id,))
        else:
            n = sql.execute(
                f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?',
                (replacement, user_id),
            )
        if n:
            counts[f"{table}.{column}"] = counts.get(f"{table}.{column}", 0) + n
    for table, column in text_columns(sql):
        if table in APPEND_ONLY:  # ``skip`` names tables whose own rows go elsewhere
            continue
        for text, value, _ in _json_objects(sql, table, column, user_id):
            cleaned, paths = _without_user(value, user_id, replacement)
            if not paths:
                continue
            # the row stays (it is someone else's); the name in it goes
            n = sql.execute(
                f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?',
                (json_text(cleaned), text),
            )
            for path in paths:
                key = f"{table}.{_json_place(column, path)}"
                counts[key] = counts.get(key, 0) + n
    return counts


def delete_created_videos(store: object, user_id: str) -> list[str]:
    """Withdraw the user's uploads from this store's catalogue, with their moderation rows.

    A video carries its creator's id and is their content: erasing the account takes
    it down everywhere (events of other users that name the video keep only its id)."""
    sql = sql_store(store)
    ids = [
        str(r[0]) for r in sql.query("SELECT video_id FROM videos WHERE creator_id=?", (user_id,))
    ]
    if not ids:
        return []
    tables = {t for t in sql.table_names() if t.startswith("moderation")}
    for table in sorted(tables):
        sql.executemany(f'DELETE FROM "{table}" WHERE video_id = ?', [(v,) for v in ids])
    sql.executemany("DELETE FROM videos WHERE video_id = ?", [(v,) for v in ids])
    return ids


# -- artifacts -------------------------------------------------------------------
def artifact_names(
    region_dir: Path, version: str, user_id: str, creators: bool = True
) -> list[str]:
    """Which of an artifact's id arrays name the user (reads only those arrays;
    ``creators=False``: not the creators' vocabulary)."""
    path = models_dir(region_dir) / version / ARRAYS
    with np.load(path, allow_pickle=False) as data:
        return [
            name
            for name in ARTIFACT_USER_ARRAYS
            if name in data.files
            and (creators or name != "creator_ids")
            and bool(np.any(data[name] == user_id))
        ]


def artifacts_naming(region_dir: Path, user_id: str, creators: bool = True) -> dict[str, list[str]]:
    """``{version: [arrays naming the user]}`` over every artifact version of a region."""
    out: dict[str, list[str]] = {}
    for version in list_versions(region_dir):
        names = artifact_names(region_dir, version, user_id, creators)
        if names:
            out[version] = names
    return out


def without_user(
    arrays: dict[str, np.ndarray], user_id: str, creators: bool = True
) -> tuple[dict[str, np.ndarray], int]:
    """A copy of an artifact's arrays with the user's rows gone; returns the rows removed.

    The user's vector, id and feed ranked ahead go; as a creator their id in the
    vocabulary becomes empty (the index stays, so other videos keep their creators),
    unless ``creators`` is False (a user who moved away still made their uploads)."""
    out, removed = drop_ranked_ahead(arrays, user_id)
    users = arrays["user_ids"]
    keep = users != user_id
    if not bool(keep.all()):
        removed += int((~keep).sum())
        out["user_ids"] = users[keep]
        out["user_factors"] = arrays["user_factors"][keep]
    if "lineage_user_ids" in arrays:
        lineage = arrays["lineage_user_ids"]
        out["lineage_user_ids"] = lineage[lineage != user_id]
        removed += int((lineage == user_id).sum())
    if creators and "creator_ids" in arrays:
        vocabulary = arrays["creator_ids"]
        hit = vocabulary == user_id
        if bool(hit.any()):
            vocabulary = vocabulary.copy()
            vocabulary[hit] = ""
            out["creator_ids"] = vocabulary
            removed += int(hit.sum())
    return out, removed


# -- files -----------------------------------------------------------------------
def region_walk(region_dir: Path) -> Iterator[Path]:
    """Every file under a region's directory but its models and secrets."""
    if not region_dir.is_dir():
        return
    for root, dirs, files in os.walk(region_dir):
        if Path(root) == region_dir:
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in sorted(files):
            yield Path(root) / name


def region_files(region_dir: Path) -> Iterator[Path]:
    """Data files under a region's directory that may hold user ids (not store or models)."""
    for path in region_walk(region_dir):
        if path.name.endswith(SCANNED_SUFFIXES) and path.name not in SKIPPED_FILES:
            yield path


SQLITE_MAGIC = b"SQLite format 3\x00"


def copies(region_dir: Path, live: set[Path]) -> Iterator[Path]:
    """Copies of a region's store or artifacts outside their places: SQLite files other
    than the live store (``live``: its files, resolved) and ``.npz`` arrays outside
    ``models/`` — a backup's, restore's or scan's staging directory (a killed run's stays
    until the next backup or ``fyp erasure process`` removes it), or a copy left by hand."""
    for path in region_walk(region_dir):
        if path.resolve() in live or path.is_symlink():
            continue
        if path.suffix == ".npz":
            yield path
            continue
        try:
            with path.open("rb") as f:
                if f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                    yield path
        except OSError:
            continue


def copy_hits(path: Path, user_id: str) -> dict[str, int]:
    """Where a copy names the user (as the residency scan reads it, pseudonyms aside):
    ``{table.column or array: records}``; an unreadable copy counts (nothing vouches)."""
    from fyp.sovereignty.residency_readers import npz_names, sqlite_names  # builds on this module

    names = npz_names(path) if path.suffix == ".npz" else sqlite_names(path)
    out: dict[str, int] = {}
    for where, cls, counts in names:
        if cls == "unreadable":
            out[where] = 1
        elif cls != "pseudonym" and counts.get(user_id):
            out[where] = counts[user_id]
    return out


def _csv_user_column(header: list[str]) -> int | None:
    return header.index("user_id") if "user_id" in header else None


def file_hits(path: Path, user_id: str) -> int:
    """Records of a CSV (``user_id`` column) or JSON-lines file that name the user."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            col = _csv_user_column(next(reader, []))
            if col is None:
                return 0
            return sum(1 for row in reader if len(row) > col and row[col] == user_id)
    needle = f'"{user_id}"'
    with path.open(encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if needle in line)


def file_user_ids(path: Path) -> set[str]:
    """The user ids a CSV with a ``user_id`` column names (empty for other files)."""
    if path.suffix != ".csv":
        return set()
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        col = _csv_user_column(next(reader, []))
        if col is None:
            return set()
        return {row[col] for row in reader if len(row) > col}


def scrub_file(path: Path, user_id: str) -> int:
    """Rewrite a CSV without the user's rows (atomically); returns the rows removed."""
    if path.suffix != ".csv" or not file_hits(path, user_id):
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    removed = 0
    with (
        path.open(encoding="utf-8", newline="") as src,
        tmp.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\n")
        header = next(reader)
        col = _csv_user_column(header)
        writer.writerow(header)
        for row in reader:
            if col is not None and len(row) > col and row[col] == user_id:
                removed += 1
                continue
            writer.writerow(row)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    return removed
