"""Which methods a path answers, decided once for the whole app (``fyp.access.routes``
holds the rule; this applies it to requests).

FastAPI routes answer only the methods they declare, and Starlette routes a request to
the first route whose path and method match. That left two gaps, closed here:

- **HEAD** (RFC 9110: a server that has GET should have HEAD; caches, load balancers
  and uptime checkers send it) was a 405 on every route but the probes. Now a HEAD is
  the GET of the same URL with its body dropped: same checks (the access check takes a
  HEAD as the GET it is, audited operator reads included), same status and headers
  (``Content-Length`` and ``Content-Type`` too), no effect a GET does not have. A route
  whose GET has an effect a HEAD must not have is marked
  :func:`fyp.access.routes.get_only` and answers 405: the For You feed
  (``fyp.serving.routers.feed``).
- **A literal segment under a parameter** of another method's route: ``GET
  /v1/moderation/jobs/claim`` reached "job ``claim``" (404 ``unknown_job``). A path a
  more concrete template matches belongs to that template alone (as OpenAPI matches
  concrete paths first), so it is a 405 naming the methods the path has; but not where
  the parameter takes ids the clients chose (:func:`fyp.access.routes.any_id`): ``PUT
  /v1/users/{user_id}/following/feed`` follows the creator ``feed`` (its GET is the
  Following tab), and the OpenAPI document declares it there (``fyp.serving.openapi``).

Every 405 comes from here, after the access check (a request no route serves needs only
a valid key, whatever it is), with ``Allow`` and the API's one error body. ``OPTIONS``
is declared by no route, so it is a 405 with ``Allow`` like any other undeclared method
(the API has no CORS; ``Allow`` is what an ``OPTIONS`` asks for).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from fyp.access.guard import route_path
from fyp.access.routes import RouteIndex
from fyp.serving.errors import method_not_allowed

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MethodsMiddleware:
    """Pure ASGI, between the access check and the router: a 405 for a path served with
    other methods, and a HEAD routed as the GET it asks about."""

    def __init__(self, app: ASGIApp, fyp_app: FastAPI) -> None:
        self.app = app
        self.routes = RouteIndex(fyp_app)  # built at the first request, with every route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], route_path(scope)
        matches = self.routes.match(method, path)
        if not matches:
            allowed = self.routes.allowed(path)
            if allowed:
                # labelled in the metrics by the path's template, as the router's 405 was
                scope["route"] = self.routes.match(allowed[0], path)[0].template
                await method_not_allowed(method, allowed)(scope, receive, send)
            else:  # the router's 404 (or its redirect to the path without a trailing /)
                await self.app(scope, receive, send)
            return
        if method != "HEAD" or any(m.template.head_route for m in matches):
            await self.app(scope, receive, send)
            return
        # a copy: the server reads the method of its own scope to drop the body of HEAD
        get = {**scope, "method": "GET"}
        try:
            await self.app(get, receive, headers_only(send))
        finally:  # what routing left there (the route, for the metrics' label)
            scope.update((k, v) for k, v in get.items() if k != "method")


def headers_only(send: Send) -> Send:
    """``send`` for the answer to a HEAD: the status and headers as they are (the
    ``Content-Length`` of the body a GET gets), then an empty body."""

    async def sending(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
        elif not message.get("more_body", False):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return sending


def install(app: FastAPI) -> None:
    """Apply the methods rule to ``app``'s requests: call before the access check is
    installed, so that the check runs first."""
    app.add_middleware(MethodsMiddleware, fyp_app=app)
