"""Find a request's route template before the app routes it, so the check runs first.

The index is built from the app's own routes (their path templates, compiled with
Starlette's ``compile_path``, the regex the router itself matches with) and bucketed
by method, number of segments and literal last segment, so a lookup tries few regexes. It is never
laxer than the router: when several templates match, the request must pass the rule of
each; when none does, the router has no handler for it either (it answers 404 or 405,
which the check lets through once the key is valid).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from re import Pattern
from typing import Any, NamedTuple

import fastapi.routing
from fastapi import FastAPI
from starlette.routing import compile_path

from fyp.access.policy import Rule, rule_for


@dataclass(frozen=True)
class Template:
    method: str
    path: str
    rule: Rule
    regex: Pattern[str]


class Match(NamedTuple):
    template: Template
    params: dict[str, str]


Bucket = tuple[str, int, str | None]
"""Method, number of ``/``, and the last segment when it is literal (None: a parameter)."""


def _bucket(method: str, path: str) -> Bucket:
    if ":path}" in path:  # a {name:path} parameter spans segments: always tried
        return method, -1, None
    last = path.rsplit("/", 1)[-1]
    return method, path.count("/"), None if "{" in last else last


def app_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """``(method, path template)`` of every route the app serves, included routers too."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Any = iterate(app.routes) if iterate is not None else app.routes
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str):
            for method in sorted(methods or {"GET"}):
                yield method, path


class RouteIndex:
    """The app's route templates, bucketed; rebuilt when the app gains routes."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._routes: list[Any] = []
        self._size = -1
        self._candidates: dict[Bucket, tuple[Template, ...]] = {}
        self._spanning: dict[str, tuple[Template, ...]] = {}

    def build(self) -> None:
        """Per bucket, every template that could match a path in it, in route order."""
        buckets: dict[Bucket, list[Template]] = defaultdict(list)
        for method, path in dict.fromkeys(app_routes(self.app)):
            if method == "HEAD":
                continue  # served by the GET route, and checked as one
            regex, _, _ = compile_path(path)
            buckets[_bucket(method, path)].append(
                Template(method, path, rule_for(method, path), regex)
            )
        spanning = {m: tuple(ts) for (m, n, _), ts in buckets.items() if n < 0}
        candidates: dict[Bucket, tuple[Template, ...]] = {}
        for (m, n, last), ts in buckets.items():
            if n >= 0:
                open_ = buckets.get((m, n, None), []) if last is not None else []
                candidates[m, n, last] = (*ts, *open_, *spanning.get(m, ()))
        self._candidates, self._spanning = candidates, spanning
        self._routes = self.app.router.routes
        self._size = len(self._routes)

    def templates(self) -> list[Template]:
        if self._size != len(self._routes):
            self.build()
        return list(dict.fromkeys(t for ts in self._candidates.values() for t in ts))

    def match(self, method: str, path: str) -> list[Match]:
        """Every template the request matches (path and method), in route order."""
        if self._size != len(self._routes):
            self.build()
        if method == "HEAD":
            method = "GET"
        slashes = path.count("/")
        candidates = self._candidates.get((method, slashes, path[path.rfind("/") + 1 :]))
        if candidates is None:
            candidates = self._candidates.get((method, slashes, None)) or self._spanning.get(
                method, ()
            )
        found: list[Match] = []
        for t in candidates:
            m = t.regex.match(path)
            if m is not None:
                found.append(Match(t, m.groupdict()))
        return found

    def allowed(self, path: str) -> list[str]:
        """The methods some route serves ``path`` with: a 405's ``Allow`` (Starlette's
        names only the first route that matched the path, e.g. GET of GET, PATCH and
        DELETE ``/v1/users/{user_id}``)."""
        if self._size != len(self._routes):
            self.build()
        methods = {m for m, _, _ in self._candidates} | set(self._spanning)
        return [m for m in sorted(methods) if self.match(m, path)]
