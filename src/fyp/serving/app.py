"""The HTTP API: ``create_app(deployment)`` returns a FastAPI app serving it.

Handlers are ``async`` and call the (fast, synchronous) stores directly: one worker
process serialises store access on its event loop, which keeps latency predictable.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

from fyp import __version__
from fyp.access.guard import install as install_access_control
from fyp.access.guard import key_regions, route_path
from fyp.access.routes import RouteIndex
from fyp.catalog.service import Catalog
from fyp.config import CONFIG_FILE, DeploymentConfig, read_config
from fyp.errors import PayloadTooLarge
from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService
from fyp.moderation import ModerationEligibility, Moderator, Reviews
from fyp.regions.deployment import Deployment
from fyp.serving.dependencies import AppState, state
from fyp.serving.errors import error_response, install_error_handlers
from fyp.serving.fastpath import HotRoutes
from fyp.serving.methods import install as install_methods
from fyp.serving.metrics import ServerMetrics
from fyp.serving.openapi import answers, install_openapi
from fyp.serving.reload import ConfigReloader
from fyp.serving.responses import Health, Regions
from fyp.serving.routers import events, feed, following, guest, moderation, ops, users, videos


class FypApp(FastAPI):
    """FastAPI, with the hot routes (``fyp.serving.fastpath``) answered before its stack
    (~5 % of a feed page's server CPU), unless FastAPI's own OpenTelemetry support is
    on: then they too go through the stack, to get their spans and metrics. That is
    decided at the first request, so a telemetry provider is set up before serving."""

    hot: HotRoutes | None = None
    metrics: ServerMetrics | None = None
    _hot_on: bool | None = None
    _routes: RouteIndex | None = None  # built at the first request refused before routing
    max_body_bytes: int = 1024 * 1024

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._hot_on is None and scope["type"] == "http":
            telemetry = getattr(self, "_native_telemetry", None)  # not in older FastAPI
            self._hot_on = not (telemetry is not None and telemetry.enabled())
        if scope["type"] == "http":
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                started = time.perf_counter()
                await _too_large(declared, self.max_body_bytes, scope, receive, send)
                if self.metrics is not None:  # answered before routing: matched here
                    route = self._template(scope)
                    elapsed = time.perf_counter() - started
                    self.metrics.request(route, scope["method"], 413, elapsed)
                return
            if declared is None and scope["method"] in _BODY_METHODS:  # chunked: counted
                receive = _capped(receive, self.max_body_bytes)
        hot = self.hot if self._hot_on else None
        if hot is not None and await hot(scope, receive, send):
            return  # counted by HotRoutes
        if scope["type"] != "http" or self.metrics is None:
            await super().__call__(scope, receive, send)
            return
        await self._counted(scope, receive, send, self.metrics)

    def _template(self, scope: Scope) -> str:
        """The route template a request would reach ("other" if none): what metrics
        label it by, never the raw path."""
        if self._routes is None:
            self._routes = RouteIndex(self)
        matches = self._routes.match(scope["method"], route_path(scope))
        return matches[0].template.path if matches else "other"

    async def _counted(
        self, scope: Scope, receive: Receive, send: Send, metrics: ServerMetrics
    ) -> None:
        """The app's answer, counted by route template (never the raw path: it holds
        user ids) and status."""
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            metrics.request(route, scope["method"], status, time.perf_counter() - started)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(size: int, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    error = PayloadTooLarge(
        f"request body of {size:,} bytes is over the limit of {limit:,} ([limits] max_body_bytes)",
        limit=limit,
        size=size,
    )
    await error_response(error)(scope, receive, send)


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` for a body of undeclared length: past ``limit`` bytes it raises
    PayloadTooLarge, which the error handlers answer with a 413."""
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(
                    f"request body is over the limit of {limit:,} bytes ([limits] max_body_bytes)",
                    limit=limit,
                )
        return message

    return capped


def config_sha256(root: Path) -> str:
    """The sha256 of ``fyp.toml`` as it is now ("" if it cannot be read)."""
    try:
        return hashlib.sha256((root / CONFIG_FILE).read_bytes()).hexdigest()
    except OSError:
        return ""


def _tell_schedules(s: AppState, old: DeploymentConfig, new: DeploymentConfig) -> None:
    """The schedules of a reloaded config: each wakes if what it runs for changed."""
    for schedule in s.schedules:
        schedule.config_changed(old, new)


def create_app(deployment: Deployment | str | Path) -> FastAPI:
    """An app serving ``deployment``; given a path, the app opens it and closes it on shutdown."""
    owned = not isinstance(deployment, Deployment)
    if not isinstance(deployment, Deployment):
        config, sha256 = read_config(Path(deployment))
        deployment = Deployment(config)
    else:
        sha256 = config_sha256(deployment.config.root)
    window_ms = deployment.config.feed.seen_window_ms
    for store in deployment.stores.values():
        store.start_background_maintenance(served_window_ms=window_ms)
    opened = deployment

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reloader.start(asyncio.get_running_loop())  # fyp.toml edits apply while serving
        try:
            yield
        finally:
            reloader.stop()
        if owned:
            opened.close()

    app = FypApp(
        lifespan=lifespan,
        title="fyp",
        version=__version__,
        summary="For You feed engine with ringfenced regions",
        strict_content_type=False,  # a body without a Content-Type is read as JSON
    )
    app.max_body_bytes = deployment.config.limits.max_body_bytes
    moderator = Moderator(deployment)  # a bad [regions.*.policy] fails here, at start-up
    app.state.fyp = AppState(
        deployment=deployment,
        catalog=Catalog(deployment),
        ingestor=Ingestor(deployment),
        feed=FeedService(
            deployment, eligibility=ModerationEligibility(deployment), reload_in_background=True
        ),
        moderator=moderator,
        reviews=Reviews(moderator),
    )
    app.state.fyp.feed.warm()  # models and catalogue snapshots in memory before any request
    reloader = ConfigReloader(deployment, [moderator, app.state.fyp.feed], sha256)
    reloader.listeners.append(partial(_tell_schedules, app.state.fyp))
    app.state.fyp.reloader = reloader
    install_error_handlers(app)
    install_openapi(app)
    # hot routes first: the router tries routes in order, and every event and feed
    # request would otherwise first be matched against every users and videos route
    app.include_router(events.router)
    app.include_router(feed.router)
    app.include_router(guest.router)
    app.include_router(users.router)
    app.include_router(following.router)
    app.include_router(videos.router)
    app.include_router(moderation.router)
    app.include_router(ops.router)  # /readyz

    # HEAD routes of their own, so the document lists HEAD for the probes (uptime
    # monitors and load balancers send it); every other GET route answers HEAD too
    # (fyp.serving.methods), but the feed's.
    health: dict[str, Any] = {"tags": ["ops"], "response_model": None}
    health["responses"] = {200: {"model": Health}}

    @app.get("/healthz", **health)
    @app.head("/healthz", **health)  # a route each: one operation id per method
    async def healthz(s: AppState = Depends(state)) -> dict[str, Any]:
        """Liveness and per-region store schema versions (readiness: ``/readyz``)."""
        return {
            "status": "ok",
            "version": __version__,
            "regions": {
                r: {"schema": st.schema_version()} for r, st in s.deployment.stores.items()
            },
        }

    @app.get(
        "/v1/regions",
        tags=["ops"],
        response_model=None,
        responses=answers(ok=Regions),
    )
    async def regions(request: Request, s: AppState = Depends(state)) -> dict[str, Any]:
        """Row counts of the stores of the regions the key may see."""
        visible = key_regions(request)
        return {
            "regions": {
                r: {
                    "users": st.count_users(),
                    "videos": st.count_videos(),
                    "events": st.count_events(),
                }
                for r, st in s.deployment.stores.items()
                if visible is None or r in visible
            }
        }

    # Last, once every route exists: the methods each path answers, and before them
    # (installed after: the outer one) the check of each route against fyp.access.policy.
    install_methods(app)
    access = install_access_control(app, deployment)
    app.metrics = app.state.fyp.metrics
    app.metrics.app = app.state.fyp
    app.hot = HotRoutes(access, app.state.fyp.feed, app.state.fyp.ingestor, app.metrics)
    return app
