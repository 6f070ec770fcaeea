"""Audit entries read straight from a damaged SQLite file's pages, as a last resort.

SQLite reads a table through its b-tree: once the root or an interior page is damaged,
every row under it is out of reach although the leaf pages holding them are intact.
Like the ``.recover`` command of the sqlite3 shell, :func:`scan_audit_rows` reads every
page of the store file, and of its ``-wal`` (the newest copy of each page wins), as a
table leaf page, decodes each cell as a record in SQLite's file format (following
overflow pages), and keeps the records shaped like an ``audit_log`` row whose hash
matches their content. The hash makes it safe: a record that is not an intact entry of
the log, whatever page it came from, cannot match.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADER = b"SQLite format 3\x00"
TABLE_LEAF = 0x0D
WAL_HEADER, WAL_FRAME_HEADER = 32, 24
AUDIT_COLUMNS = 9  # seq (the rowid: NULL in the record), region, ts_ms, actor, action,
# subject, details, prev_hash, hash
MAX_OVERFLOW = 10_000  # pages followed for one record (a loop in a damaged chain ends)


def scan_audit_rows(path: Path) -> list[tuple[Any, ...]]:
    """Every record of the file (and its WAL) shaped like an audit_log row, as
    ``(seq, region, ts_ms, actor, action, subject, details, prev_hash, hash)``; the
    caller checks each one's hash."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    size, reserved = _page_size(data)
    main = [(n + 1, data[n * size : (n + 1) * size]) for n in range(len(data) // size)]
    frames = _wal_frames(path.with_name(path.name + "-wal"), size)
    pages = dict(main) | dict(frames)  # for overflow chains: the newest image of each page
    usable = size - reserved
    out: list[tuple[Any, ...]] = []
    for number, page in [*main, *frames]:  # every image: an old one may hold rows too
        for rowid, payload in _leaf_cells(page, 100 if number == 1 else 0, usable, pages):
            values = _record(payload)
            if values is not None and len(values) == AUDIT_COLUMNS and values[0] is None:
                out.append((rowid, *values[1:]))
    return out


def _page_size(data: bytes) -> tuple[int, int]:
    """(page size, reserved bytes per page) from the file header; SQLite's defaults
    when the header is gone."""
    if data[:16] == HEADER and len(data) >= 100:
        raw = struct.unpack(">H", data[16:18])[0]
        size = 65536 if raw == 1 else raw
        if size >= 512 and size & (size - 1) == 0:
            return size, data[20]
    return 4096, 0


def _wal_frames(wal: Path, size: int) -> list[tuple[int, bytes]]:
    """(page number, image) of every frame of the WAL, in file order (committed or not,
    current or left from before a checkpoint: the hash decides what counts)."""
    try:
        data = wal.read_bytes()
    except OSError:
        return []
    out: list[tuple[int, bytes]] = []
    at = WAL_HEADER
    while at + WAL_FRAME_HEADER + size <= len(data):
        number = struct.unpack(">I", data[at : at + 4])[0]
        if number:
            out.append((number, data[at + WAL_FRAME_HEADER : at + WAL_FRAME_HEADER + size]))
        at += WAL_FRAME_HEADER + size
    return out


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    """(value, offset after it) of a SQLite varint at ``at``."""
    value = 0
    for i in range(9):
        if at + i >= len(buf):
            raise ValueError("varint past the end")
        byte = buf[at + i]
        if i == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    raise AssertionError("unreachable")


def _leaf_cells(
    page: bytes, start: int, usable: int, pages: dict[int, bytes]
) -> Iterator[tuple[int, bytes]]:
    """(rowid, payload) of each cell, if ``page`` reads as a table leaf page."""
    if len(page) < start + 8 or page[start] != TABLE_LEAF:
        return
    count = struct.unpack(">H", page[start + 3 : start + 5])[0]
    for i in range(count):
        pointer_at = start + 8 + 2 * i
        try:
            (cell,) = struct.unpack(">H", page[pointer_at : pointer_at + 2])
            size, at = _varint(page, cell)
            rowid, at = _varint(page, at)
            payload = _payload(page, at, size, usable, pages)
        except (ValueError, struct.error, IndexError):
            continue
        if payload is not None:
            yield rowid, payload


def _payload(page: bytes, at: int, size: int, usable: int, pages: dict[int, bytes]) -> bytes | None:
    """A cell's payload: the part on the page, then the overflow chain's."""
    most = usable - 35
    if size <= most:
        return page[at : at + size] if at + size <= len(page) else None
    least = (usable - 12) * 32 // 255 - 23
    local = least + (size - least) % (usable - 4)
    if local > most:
        local = least
    parts = [page[at : at + local]]
    (nxt,) = struct.unpack(">I", page[at + local : at + local + 4])
    got = local
    for _ in range(MAX_OVERFLOW):
        if got >= size or nxt == 0 or nxt not in pages:
            break
        overflow = pages[nxt]
        (nxt,) = struct.unpack(">I", overflow[:4])
        take = min(usable - 4, size - got)
        parts.append(overflow[4 : 4 + take])
        got += take
    return b"".join(parts) if got == size else None


def _record(payload: bytes) -> list[Any] | None:
    """The values of a record in SQLite's format (None: it does not decode)."""
    try:
        header_size, at = _varint(payload, 0)
        types: list[int] = []
        while at < header_size:
            kind, at = _varint(payload, at)
            types.append(kind)
        values: list[Any] = []
        at = header_size
        for kind in types:
            value, at = _value(payload, at, kind)
            values.append(value)
    except (ValueError, UnicodeDecodeError, struct.error):
        return None
    return values if at == len(payload) else None


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _value(buf: bytes, at: int, kind: int) -> tuple[Any, int]:
    if kind == 0:
        return None, at
    if kind in _INT_SIZES:
        n = _INT_SIZES[kind]
        if at + n > len(buf):
            raise ValueError("integer past the end")
        return int.from_bytes(buf[at : at + n], "big", signed=True), at + n
    if kind == 7:
        return struct.unpack(">d", buf[at : at + 8])[0], at + 8
    if kind in (8, 9):
        return kind - 8, at
    if kind >= 12:
        n = (kind - 12) // 2
        if at + n > len(buf):
            raise ValueError("value past the end")
        raw = buf[at : at + n]
        return (raw if kind % 2 == 0 else raw.decode("utf-8")), at + n
    raise ValueError(f"serial type {kind}")
