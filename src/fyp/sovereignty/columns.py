"""Which store columns name a person: one list for erasure and the residency scan alike.

Found by name, so a table a later capability adds is covered without registering it.
The erasure removes or blanks every kind; the residency scan judges each kind on its
own terms (a catalogue entry names its creator in every region it is published to).
"""

from __future__ import annotations

import csv
import re

# The scans read data files with the csv module, whose default 128 KiB field limit made
# a file with one long field (a caption, a JSON blob) fail the residency scan and stop an
# erasure half-way; a field is bounded by the file instead.
csv.field_size_limit(2**31 - 1)

USER_COLUMN = re.compile(r"^(user_id|.+_user_id|user_ids|reporter_id)$")
"""Columns that only ever hold user ids: an unknown value there is an orphan."""

PERSON_COLUMN = re.compile(r"^(actor|appellant|reporter|owner|author_id|.+_by)$")
"""Columns that name a person who may be staff: only a user homed elsewhere counts."""

CREATOR_COLUMN = re.compile(r"^(creator_id|creator_ids)$")
"""The public catalogue's creator: a user id, published wherever the video is."""


def names_a_person(column: str) -> bool:
    """Whether an erasure must look in ``column`` for the erased user's id."""
    return any(p.match(column) for p in (USER_COLUMN, PERSON_COLUMN, CREATOR_COLUMN))


# Fields of JSON objects kept in other text columns (``users.attributes`` holds what the
# app sends) are judged by the same names. Every name the patterns above (and the
# residency scan's ``subject``) match contains one of these: a cheap test per value
# before a JSON value is taken apart. A name written with JSON escapes
# (``"user\\u005fid"``) is not found.
JSON_FIELD_NEEDLES = (
    "user_id",
    "_by",
    "actor",
    "appellant",
    "reporter",
    "owner",
    "author_id",
    "creator_id",
    "subject",
)
NUMERIC_TYPE = re.compile(r"INT|REAL|FLOA|DOUB|NUM|BOOL", re.IGNORECASE)  # no JSON there
BYTES_TYPE = re.compile(r"BLOB|BYTEA", re.IGNORECASE)  # signatures: no JSON there either
_PATH_END = re.compile(r'\.(?:"([^"]+)"|([^."\[\]]+))$')


def json_field(key: object, path: str) -> str:
    """The field a JSON atom sits under (``json_tree``'s key and path): its key, or for
    an array element the name that ends its parent's path (``$.invited_by``)."""
    if isinstance(key, str):
        return key
    found = _PATH_END.search(path)
    return (found.group(1) or found.group(2)) if found else ""


def json_objects_sql(table: str, column: str, containing: bool = False) -> str:
    """``FROM ... WHERE ...`` over the atoms of the column's JSON objects that may sit
    under a person field (``j`` is ``json_tree``; values without a needle are skipped).
    ``containing``: only values whose text contains parameter ``?1``, tested first (one
    search per value when looking for one user)."""
    col = f'"{table}"."{column}"'
    named = " OR ".join(f"instr({col}, '{needle}') > 0" for needle in JSON_FIELD_NEEDLES)
    first = f"instr({col}, ?1) > 0 AND " if containing else ""
    return (
        f"FROM \"{table}\", json_tree({col}) AS j WHERE {first}substr({col}, 1, 1) = '{{' "
        f"AND ({named}) AND json_valid({col}) AND json_type({col}) = 'object' "
        "AND j.type IN ('text', 'integer')"
    )
