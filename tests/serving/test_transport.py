"""Responses leave in one write, and every kind of response still arrives whole."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse

from fyp.serving.transport import CoalescingHttpToolsProtocol, CoalescingTransport


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_within_one_turn_leave_as_one() -> None:
    async def scenario() -> FakeTransport:
        real = FakeTransport()
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body")
        assert real.writes == []  # held until the loop's next turn
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        t.write(b"chunk")  # a later turn: a write of its own
        await asyncio.sleep(0)
        t.write(memoryview(b"last"))
        t.close()  # writes what is held, then closes
        assert real.writes[1:] == [b"chunk", b"last"] and real.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        assert len(real.writes) == 3
        assert t.get_extra_info("peername") == "info:peername"  # the rest goes through
        again = CoalescingTransport(FakeTransport(), asyncio.get_running_loop())  # type: ignore[arg-type]
        again.write(b"tail")
        again.write_eof()  # what is held goes before the end of the stream
        assert again._transport.writes == [b"tail", b"<eof>"]  # type: ignore[attr-defined]
        return real

    asyncio.run(scenario())


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/json")
    async def as_json() -> dict[str, Any]:
        return {"videos": [str(k) for k in range(200)], "text": "美食 🍜"}

    @app.get("/empty", status_code=204)
    async def empty() -> Response:
        return Response(status_code=204)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for k in range(5):
                await asyncio.sleep(0.001)
                yield f"part{k};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        _app(), host="127.0.0.1", port=port, log_level="warning", http=CoalescingHttpToolsProtocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_every_kind_of_response_arrives_whole(url: str) -> None:
    with httpx.Client(base_url=url) as client:  # one kept-alive connection throughout
        for _ in range(3):
            r = client.get("/json")
            assert r.status_code == 200 and r.json()["text"] == "美食 🍜"
            assert len(r.json()["videos"]) == 200
            head = client.head("/json")
            assert head.status_code == 405 or head.content == b""
            assert client.get("/empty").status_code == 204
            streamed = client.get("/stream")
            assert streamed.text == "part0;part1;part2;part3;part4;"
            assert client.get("/missing").status_code == 404
        closing = client.get("/json", headers={"Connection": "close"})
        assert closing.status_code == 200 and len(closing.json()["videos"]) == 200


def test_headers_and_body_leave_in_one_write(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[bytes] = []
    real_flush = CoalescingTransport.flush

    def recording(self: CoalescingTransport) -> None:
        held = self._held
        if held:
            written.append(b"".join(held))
        real_flush(self)

    monkeypatch.setattr(CoalescingTransport, "flush", recording)
    with httpx.Client(base_url=url) as client:
        r = client.get("/json")
    assert len(written) == 1  # one write: status line, headers and body
    assert written[0].startswith(b"HTTP/1.1 200 OK") and written[0].endswith(r.content)


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(request)
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    return reply


def test_a_request_uvicorn_cannot_parse_gets_the_json_error_body(url: str) -> None:
    """llhttp refuses a request line over ~64 KiB before the app sees it; uvicorn's own
    answer was a plain-text line, unlike every other 4xx."""
    long_line = b"GET /json?q=" + b"x" * 100_000 + b" HTTP/1.1\r\nhost: t\r\n\r\n"
    big_header = b"GET /json HTTP/1.1\r\nhost: t\r\nx-big: " + b"y" * 100_000 + b"\r\n\r\n"
    many = b"".join(b"x-h%d: %s\r\n" % (k, b"z" * 400) for k in range(200))
    many_headers = b"GET /json HTTP/1.1\r\nhost: t\r\n" + many + b"\r\n"
    for request in (long_line, big_header, many_headers, b"NOT HTTP AT ALL\r\n\r\n"):
        head, _, body = _raw(url, request).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        assert b"content-type: application/json" in head and b"connection: close" in head
        assert f"content-length: {len(body)}".encode() in head
        error = json.loads(body)["error"]
        assert error["code"] == "invalid_request" and error["status"] == 400
        assert "64 KiB" in error["message"] and error["details"] == {}
