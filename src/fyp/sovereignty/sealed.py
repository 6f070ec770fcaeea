"""Sealed streams: a byte stream encrypted with AES-256-GCM in authenticated chunks.

A backup is written as it is packed, so it is never whole in memory and its plaintext
never touches the backup target. The stream is cut into chunks of ``CHUNK`` bytes;
each is sealed with a fresh random nonce, and its associated data binds the stream's
context (backup id and region), the chunk's index and whether it is the last one. A
chunk moved, dropped, swapped between backups or regions, or a stream cut short after
a chunk boundary, therefore fails to open, as does any changed byte.

Layout: ``MAGIC``, then per chunk ``nonce (12) | length (4, big-endian) | ciphertext``
(the ciphertext ends in GCM's 16-byte tag). Keys come from the region's ``backup``
secret through HKDF, one sub-key per purpose (:func:`derive_key`).
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fyp.errors import SealBroken

MAGIC = b"FYPSEAL1"
CHUNK = 4 * 1024 * 1024
NONCE = 12
TAG = 16
_LEN = struct.Struct(">I")


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte sub-key of ``secret`` for one purpose (encryption, manifest MAC)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"fyp/{purpose}".encode()
    ).derive(secret)


def _aad(context: bytes, index: int, last: bool) -> bytes:
    return context + struct.pack(">Q?", index, last)


class SealWriter:
    """A write-only file object that seals what is written to ``out``.

    ``close()`` seals the final (possibly empty) chunk; ``sha256`` and ``size`` then
    describe the ciphertext exactly as written."""

    def __init__(self, out: BinaryIO, key: bytes, context: bytes) -> None:
        self.out = out
        self.context = context
        self._aead = AESGCM(key)
        self._buf = bytearray()
        self._index = 0
        self._hash = hashlib.sha256()
        self.size = 0
        self.plain_size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:
            raise ValueError("write to a closed SealWriter")
        self._buf += data
        self.plain_size += len(data)
        while len(self._buf) > CHUNK:  # keep >= 1 byte back so the last chunk is known
            self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def _emit(self, data: bytes) -> None:
        self.out.write(data)
        self._hash.update(data)
        self.size += len(data)

    def _seal(self, plain: bytes, last: bool) -> None:
        nonce = os.urandom(NONCE)
        sealed = self._aead.encrypt(nonce, plain, _aad(self.context, self._index, last))
        if self._index == 0:
            self._emit(MAGIC)
        self._emit(nonce + _LEN.pack(len(sealed)) + sealed)
        self._index += 1

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
            self.out.flush()
            self.closed = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class OpenReader:
    """A read-only file object over a sealed stream; raises :class:`SealBroken` on any
    failed tag, and at the end if the final chunk never came."""

    def __init__(self, src: BinaryIO, key: bytes, context: bytes) -> None:
        self.src = src
        self.context = context
        self._aead = AESGCM(key)
        self._buf = b""
        self._pos = 0
        self._index = 0
        self._done = False
        magic = src.read(len(MAGIC))
        if magic != MAGIC:
            raise SealBroken("not a sealed fyp stream (bad magic)")

    def _next(self) -> None:
        head = self.src.read(NONCE + _LEN.size)
        if len(head) < NONCE + _LEN.size:
            raise SealBroken(f"sealed stream cut short before chunk {self._index}")
        (length,) = _LEN.unpack(head[NONCE:])
        if length < TAG or length > CHUNK + TAG:
            raise SealBroken(f"chunk {self._index} has an impossible length {length}")
        body = self.src.read(length)
        if len(body) < length:
            raise SealBroken(f"sealed stream cut short inside chunk {self._index}")
        nonce = head[:NONCE]
        for last in (False, True):
            try:
                plain = self._aead.decrypt(nonce, body, _aad(self.context, self._index, last))
            except InvalidTag:
                continue
            self._buf, self._pos, self._done = plain, 0, last
            self._index += 1
            if last and self.src.read(1):
                raise SealBroken("bytes after the final chunk of a sealed stream")
            return
        raise SealBroken(
            f"chunk {self._index} failed authentication: wrong key, or the backup was "
            "changed, reordered or belongs to another backup or region"
        )

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if self._pos >= len(self._buf):
                if self._done:
                    break
                self._next()
                continue
            take = (
                len(self._buf) - self._pos
                if n < 0
                else min(n - len(out), len(self._buf) - self._pos)
            )
            out += self._buf[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    def readable(self) -> bool:
        return True
