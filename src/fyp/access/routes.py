"""Find a request's route template before the app routes it, so the check runs first.

The index is built from the app's own routes (their path templates, compiled with
Starlette's ``compile_path``, the regex the router itself matches with) and bucketed
by method, number of segments and literal last segment, so a lookup tries few regexes. It is never
laxer than the router: when several templates match, the request must pass the rule of
each; when none does, the router has no handler for it either (it answers 404 or 405,
which the check lets through once the key is valid).

It is also the app's rule for methods (``fyp.serving.methods`` answers by it):

- A path a more concrete template matches belongs to that template alone, as OpenAPI
  matches concrete paths before templated ones: ``/v1/moderation/jobs/claim`` is not the
  job ``claim`` of ``GET /v1/moderation/jobs/{job_id}`` (the server makes job ids,
  ``us-12``: none is ``claim``), so a GET of it is a 405. But for a route marked
  :func:`any_id`, whose parameter takes ids the clients chose (a creator's user id), a
  literal there is one of its values: ``PUT /v1/users/{user_id}/following/feed`` follows
  the creator ``feed``, while a GET of that path stays the Following tab; the OpenAPI
  document declares those methods under the literal path (:func:`taken_literals`).
- HEAD is answered wherever GET is, by the GET route (and checked as a GET), unless the
  route's handler is marked :func:`get_only`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from re import Pattern
from typing import Any, NamedTuple, TypeVar

import fastapi.routing
from fastapi import FastAPI
from starlette.routing import compile_path

from fyp.access.policy import PERMISSIONS, Rule, rule_for

GET_ONLY = "__fyp_get_only__"
ANY_ID = "__fyp_any_id__"
F = TypeVar("F")


def get_only(endpoint: F) -> F:
    """Mark a GET route's handler as not answering HEAD (a 405 naming GET): for a GET
    with an effect a HEAD must not have, as serving the feed records the page as shown."""
    setattr(endpoint, GET_ONLY, True)
    return endpoint


def any_id(endpoint: F) -> F:
    """Mark a route whose path parameter takes any id a client chose (``Id``: a user or
    video id), so that no literal segment of another route's path is kept from it: a
    user may be called ``feed``, and be followed like any other. The other route keeps
    its own methods on that path; the two must share none (tests/serving check it)."""
    setattr(endpoint, ANY_ID, True)
    return endpoint


@dataclass(frozen=True)
class Template:
    method: str
    path: str
    rule: Rule
    regex: Pattern[str]
    head: bool = False
    """A GET template that answers HEAD too."""
    head_route: bool = False
    """The app has a HEAD route of its own for this path (``/healthz``): HEAD goes to it."""
    shadowed: tuple[Pattern[str], ...] = ()
    """The regexes of more concrete templates: a path they match is not this one's."""


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
    for method, path, _ in _endpoints(app):
        yield method, path


def _endpoints(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Any = iterate(app.routes) if iterate is not None else app.routes
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str):
            for method in sorted(methods or {"GET"}):
                yield method, path, getattr(route, "endpoint", None)


_PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")  # {name}: any one segment


class TakenLiteral(NamedTuple):
    """A method of a route marked :func:`any_id` that serves another route's more concrete
    path too, its parameters fixed there to that path's literals: ``PUT
    /v1/users/{user_id}/following/feed`` is ``PUT .../following/{creator_id}`` with
    ``creator_id`` = ``feed``."""

    method: str
    general: str
    path: str
    values: dict[str, str]


def taken_literals(app: FastAPI) -> list[TakenLiteral]:
    """Every method the app serves on a concrete path through a route that takes any id
    (so the OpenAPI document, which matches concrete paths first, can declare it there)."""
    endpoints = list(_endpoints(app))
    paths = list(dict.fromkeys(path for _, path, _ in endpoints))
    taken = []
    for method, general, endpoint in endpoints:
        if method == "HEAD" or not getattr(endpoint, ANY_ID, False):
            continue
        for path in (p for p in paths if _within(p, general)):
            pairs = zip(path.split("/"), general.split("/"), strict=True)
            values = {y[1:-1]: x for x, y in pairs if _PARAM.match(y) and not _PARAM.match(x)}
            taken.append(TakenLiteral(method, general, path, values))
    return taken


def operation_rule(method: str, path: str) -> Rule:
    """The rule the access check applies to an operation of the OpenAPI document: the
    path's own entry, or, for a concrete path declared for a route that takes any id
    (``PUT .../following/feed`` follows the creator ``feed``), that general route's."""
    if method == "HEAD" or (method, path) in PERMISSIONS:
        return rule_for(method, path)
    general = [p for m, p in PERMISSIONS if m == method and _within(path, p)]
    return PERMISSIONS[(method, general[0])] if len(general) == 1 else rule_for(method, path)


def _within(concrete: str, general: str) -> bool:
    """Whether every path ``concrete`` matches is matched by ``general`` too, segment by
    segment, and ``concrete`` is the more concrete: it has a literal where ``general``
    has a ``{name}``. (Templates spanning segments, or with typed parameters, are never
    either; the app has none.)"""
    a, b = concrete.split("/"), general.split("/")
    if len(a) != len(b) or concrete == general or ":" in concrete + general:
        return False
    literal_over_param = False
    for x, y in zip(a, b, strict=True):
        if _PARAM.match(y):
            literal_over_param |= not _PARAM.match(x)
        elif x != y:
            return False  # a literal of general's that concrete lacks (or another one)
    return literal_over_param


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
        endpoints = list(_endpoints(self.app))
        heads = {path for method, path, _ in endpoints if method == "HEAD"}
        paths = list(dict.fromkeys(path for _, path, _ in endpoints))
        buckets: dict[Bucket, list[Template]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        for method, path, endpoint in endpoints:
            if method == "HEAD" or (method, path) in seen:
                continue  # HEAD: served by the GET route, and checked as one
            seen.add((method, path))
            regex, _, _ = compile_path(path)
            takes_any = getattr(endpoint, ANY_ID, False)  # its values include every literal
            within = [] if takes_any else [compile_path(p)[0] for p in paths if _within(p, path)]
            template = Template(
                method,
                path,
                rule_for(method, path),
                regex,
                head=method == "GET" and (path in heads or not getattr(endpoint, GET_ONLY, False)),
                head_route=method == "GET" and path in heads,
                shadowed=tuple(within),
            )
            buckets[_bucket(method, path)].append(template)
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
        """Every template the request matches (path and method), in route order; HEAD
        matches the GET templates that answer it."""
        if self._size != len(self._routes):
            self.build()
        head = method == "HEAD"
        if head:
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
            if m is None or (head and not t.head):
                continue
            if t.shadowed and any(s.match(path) for s in t.shadowed):
                continue  # a more concrete template's path
            found.append(Match(t, m.groupdict()))
        return found

    def allowed(self, path: str) -> list[str]:
        """The methods some route serves ``path`` with, HEAD among them where it is
        answered: a 405's ``Allow`` (Starlette's named only the first route that matched
        the path, e.g. GET of GET, PATCH and DELETE ``/v1/users/{user_id}``)."""
        if self._size != len(self._routes):
            self.build()
        methods = {m for m, _, _ in self._candidates} | set(self._spanning) | {"HEAD"}
        return [m for m in sorted(methods) if self.match(m, path)]
