"""One socket write per response: uvicorn's httptools protocol with coalesced writes.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body in a second write when it sends
``http.response.body``. With uvloop each write is its own ``send`` syscall and, with
``TCP_NODELAY``, its own TCP segment, so a client gets a ~1.5 KB feed page in two
packets. (py-spy put uvicorn's two writes at ~7 % of a feed request; the interleaved
A/B of docs/benchmarks.md could not tell the saving from this machine's noise.) Here
the protocol's transport holds what a task writes until the event loop's next turn and
writes it in one piece: headers and body of a response leave together, a streamed body
still leaves chunk by chunk (each chunk is written in a turn of its own), and nothing is
held across a wait for the network.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # uvicorn[standard]

from fyp.errors import InvalidRequest, error_body

MAX_HEAD = 64 * 1024
"""Bytes of request line and headers a request may send: llhttp caps the request line
near this but not the headers (an 8 MB header reached the app), so the protocol counts."""
# what is refused before the app sees a request: a request line and headers over
# MAX_HEAD, or bytes that are not HTTP/1.1
UNPARSABLE = InvalidRequest(
    "the request is not valid HTTP/1.1, or its request line and headers exceed 64 KiB"
)


class CoalescingTransport:
    """A transport whose writes within one turn of the event loop become one write.

    Everything but the writes goes to the real transport (flow control, peer name,
    reading, ``abort``); ``close`` and ``write_eof`` write what is held first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(bytes(data))

    def writelines(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`
    (``uvicorn.run(app, http=CoalescingHttpToolsProtocol)``)."""

    _head = 0  # bytes of the current request's headers so far

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        super().connection_made(CoalescingTransport(transport, loop))  # type: ignore[arg-type]

    def on_message_begin(self) -> None:
        self._head = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head + len(self.url) > MAX_HEAD:  # raised in the parser: a 400 below
            raise ValueError(f"request line and headers over {MAX_HEAD} bytes")
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, with the API's JSON error body
        instead of a plain-text line (every 4xx has the same shape)."""
        body = json.dumps(error_body(UNPARSABLE)).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        self.transport.write(b"".join(head) + b"connection: close\r\n\r\n" + body)
        self.transport.close()
