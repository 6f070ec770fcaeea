"""The two hottest routes without the framework: ``POST /v1/events`` (one event) and
``GET /v1/users/{id}/feed``.

A single event costs the store a few tens of microseconds, and a feed page served from
an order ranked ahead a few hundred; FastAPI's routing and request machinery around
them cost a large share of that. The app (``fyp.serving.app``) hands every request to
:class:`HotRoutes` first, which runs the same access check as the rest of the app and
answers exactly what the routes in ``fyp.serving.routers`` answer, with the same
validation, service call and JSON error shape; every other request goes on through
Starlette's middleware to the router, and the routes stay the documented (OpenAPI)
contract.
"""

from __future__ import annotations

import re
import time
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from pydantic_core import to_json
from starlette.types import Message, Receive, Scope, Send

from fyp.access.guard import PRINCIPAL, Access, route_path
from fyp.events.ingest import Ingestor
from fyp.feed.reasons import LANGS, accepted_lang, match_lang
from fyp.feed.service import DEFAULT_PAGE, MAX_PAGE, FeedService
from fyp.serving.errors import failure
from fyp.serving.metrics import ServerMetrics
from fyp.serving.routers.events import REGION_HEADER, ingest_one
from fyp.serving.routers.feed import language_headers

PATH = "/v1/events"
_JSON = [(b"content-type", b"application/json")]
_REGION_HEADER = REGION_HEADER.encode()


class HotRoutes:
    """Answers ``POST /v1/events`` (one event) and the plain ``GET /v1/users/{id}/feed``
    ahead of the whole Starlette stack (its error, telemetry and body-limit middleware
    and the router), after the same access check the rest of the app gets.

    The feed's fast path takes at most ``n`` (digits, 1..100), ``cursor`` and a
    supported ``lang``, each once, and reads ``Accept-Language``; anything else
    (``debug``, an invalid or repeated parameter, another method) is left to the route
    in ``fyp.serving.routers.feed``, which validates and answers it. ``__call__``
    returns False, having done nothing, for any request it leaves to the app."""

    def __init__(
        self, access: Access, feed: FeedService, ingestor: Ingestor, metrics: ServerMetrics
    ) -> None:
        self.access = access
        self.feed = feed
        self.ingestor = ingestor
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http":
            return False
        method, path = scope["method"], route_path(scope)  # under a proxy's prefix too
        started = time.perf_counter()
        answered: dict[str, str] = {}  # the headers of a successful answer
        if method == "POST" and path == PATH:
            answer, route = self._event, PATH
        elif method == "GET" and (match := _FEED_PATH.fullmatch(path)) is not None:
            params = _plain_feed_params(scope.get("query_string", b""))
            if params is None:
                return False
            n, cursor, lang = params
            lang = lang or _accepted(scope)  # None: the profile's language, else en
            feed = partial(self._feed, match.group(1), n, cursor, lang, answered)
            answer, route = feed, FEED_ROUTE
        else:
            return False
        headers: dict[str, str] = {}
        try:
            receive = await self.access.check(scope, receive)
            status, content = await answer(scope, receive)
            headers = answered
        except Exception as exc:  # answered and logged as the app's handlers do
            status, content, headers = failure(exc)
        await _respond(send, status, content, headers)
        self.metrics.request(route, method, status, time.perf_counter() - started)
        return True

    async def _event(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        body = await _body(receive)
        region = content_type = None
        for name, value in scope["headers"]:  # the first of a repeated one, as Starlette's
            if name == _REGION_HEADER and region is None:
                region = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        principal = scope.get(PRINCIPAL)
        allowed = None if principal is None or principal.all_regions else principal.regions
        return ingest_one(self.ingestor, body, content_type, region, allowed)

    async def _feed(
        self,
        user_id: str,
        n: int,
        cursor: str | None,
        asked: str | None,
        answered: dict[str, str],
        scope: Scope,
        receive: Receive,
    ) -> tuple[int, dict[str, Any]]:
        """``answered``: filled with the page's headers (its language)."""
        page = self.feed.feed(user_id, n=n, cursor=cursor)
        self.metrics.page(page.region, page.items, page.personalised)
        lang = page.language(asked)
        answered.update(_LANGUAGE_HEADERS[lang])
        return 200, page.to_dict(lang=lang)


_FEED_PATH = re.compile(r"/v1/users/([^/]+)/feed")
FEED_ROUTE = "/v1/users/{user_id}/feed"  # the route's template: the metrics' label
_ACCEPT_LANGUAGE = b"accept-language"
_LANGUAGE_HEADERS = {lang: language_headers(lang) for lang in LANGS}


def _accepted(scope: Scope) -> str | None:
    """The language ``Accept-Language`` prefers (None without one, or a blank one: as
    ``reasons.asked_lang``); the route reads only the first of repeated headers, and so
    does this."""
    for name, value in scope["headers"]:
        if name == _ACCEPT_LANGUAGE:
            return accepted_lang(value.decode("latin-1")) if value.strip() else None
    return None


def _plain_feed_params(query: bytes) -> tuple[int, str | None, str | None] | None:
    """``(n, cursor, lang)`` when the query is plain enough for the fast path, else None
    (an unsupported ``lang`` too: the route answers its 422)."""
    n, cursor, lang = DEFAULT_PAGE, None, None
    seen: set[str] = set()
    for name, value in _pairs(query.decode("latin-1")):
        if name in seen:
            return None
        seen.add(name)
        if name == "n" and value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_PAGE:
            n = int(value)
        elif name == "cursor":
            cursor = value
        elif name == "lang" and match_lang(value) is not None:
            lang = match_lang(value)  # cached
        else:
            return None
    return n, cursor, lang


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``; a query with nothing to decode (no
    ``%`` or ``+``, as an app's ``n=10&cursor=…``) is split directly, at a fifth of
    parse_qsl's cost, into the same pairs."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [(name, value) for name, _, value in (p.partition("=") for p in query.split("&") if p)]


async def _body(receive: Receive) -> bytes:
    """The whole body; ``FypApp`` caps it at ``[limits] max_body_bytes`` (413) as it does
    for every route, so the fast path answers as the route would."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, content: dict[str, Any], extra: dict[str, str]) -> None:
    body = to_json(content)  # pydantic-core's encoder: compact UTF-8, a few times json's speed
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
