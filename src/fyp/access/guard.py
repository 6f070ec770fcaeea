"""The one place every request is checked: key, role, regions, and operator reads.

:func:`install` puts a pure ASGI middleware in front of the app. It finds the route's
template and path parameters itself (``fyp.access.routes``), looks the rule up in the
permission table (``fyp.access.policy``) and the key in memory (``fyp.access.ring``):
a few microseconds for a cached key, where a FastAPI dependency on every route cost
tens (``benchmarks/bench_auth.py`` measures both).

A request is refused with 401 ``unauthenticated`` when its key is missing, malformed,
unknown or revoked, and 403 ``forbidden`` when the key lacks the route's role or one of
the regions the request touches (``fyp.access.policy`` says how they are found). A key
for only some regions also gets 403, never 404, for a user or video that is in none of
them, so it cannot learn whether the object exists elsewhere. A request no route serves
needs only a valid key: the router's 404 or 405 says nothing about data.

When an operator (``admin``, ``moderator``, ``auditor``) reads or changes a user's data
(what :func:`audited` names on a route with ``{user_id}``; a key holding any operator role
is a person's, even where a service role beside it grants the route), the
request must say why in ``X-Fyp-Reason``; an entry naming the key, the route, the
user's pseudonym and the reason is appended to the audit log of the user's home region
before the handler runs, so no such read goes unrecorded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request

from fyp.access.keys import OPERATOR_ROLES
from fyp.access.policy import PERMISSIONS, Rule, rule_for
from fyp.access.ring import KeyRing, Principal
from fyp.access.routes import RouteIndex
from fyp.audit.log import AuditLog
from fyp.errors import Forbidden, FypError, InvalidRequest
from fyp.regions.deployment import REQUEST_REGIONS, Deployment
from fyp.serving.errors import error_response
from fyp.serving.inputs import refuse_nul
from fyp.sovereignty.ledger import user_pseudonym

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PRINCIPAL = "fyp.principal"
"""Where the checked key is left in the ASGI scope for handlers."""
REASON_HEADER = "X-Fyp-Reason"
MAX_REASON = 500
_FALSE = frozenset({"", "0", "off", "f", "false", "n", "no"})


class Access:
    """Checks requests against the keys and the permission table; writes operator reads."""

    def __init__(self, deployment: Deployment, app: FastAPI) -> None:
        self.deployment = deployment
        self.keys = KeyRing(deployment)
        self.routes = RouteIndex(app)
        self.declared = frozenset(deployment.regions)
        self._audit: dict[str, AuditLog] = {}

    async def check(self, scope: Scope, receive: Receive) -> Receive:
        """Raise 401/403/400, or leave the principal in ``scope`` and return ``receive``
        (replaying the body when the check had to read it)."""
        method: str = scope.get("method", "GET")
        path = route_path(scope)
        matches = self.routes.match(method, path)
        if not matches:
            # no route serves this: the router answers 404, 405 (the path with another
            # method) or a redirect to the path without its trailing slash, whatever the
            # key's roles. None of these names any data; only a valid key learns them
            self.keys.authenticate(_credentials(scope)[0])
            return receive
        if len(matches) == 1 and matches[0].template.rule.public:
            return receive
        token, reason = _credentials(scope)
        principal = self.keys.authenticate(token)
        scope[PRINCIPAL] = principal
        # a route found stale later (a user moved meanwhile) is re-checked against it
        REQUEST_REGIONS.set(None if principal.all_regions else frozenset(principal.regions))
        body: bytes | None = None
        audit: tuple[Rule, str, str, str] | None = None  # rule, route, user, action
        for template, params in matches:
            # named as the route's method: a HEAD is answered as its GET, errors included
            rule, route, routed = template.rule, template.path, template.method
            if rule.public:
                continue
            # the role: a flag like ?debug=true makes the request an operator's
            if rule.operator_flag and _flag(scope, rule.operator_flag):
                allowed, operator, via = rule.operator_roles, True, f" with {rule.operator_flag}"
            else:
                allowed, via = rule.roles, ""
                # a key holding a person's role is a person's: what a service role beside it
                # grants, it still reads as an operator (with a reason, audited)
                operator = bool(
                    principal.roles & OPERATOR_ROLES
                ) or principal.service_roles.isdisjoint(allowed)
            if principal.roles.isdisjoint(allowed):
                raise Forbidden(
                    f"{routed} {route}{via} needs one of the roles {sorted(allowed)}; "
                    f"key {principal.key_id} has {sorted(principal.roles)}",
                    key_id=principal.key_id,
                )
            refuse_nul(params, "path")  # before any store looks it up
            if not principal.all_regions and not rule.unscoped:
                if (rule.body is not None or rule.body_user is not None) and body is None:
                    body = await _read_body(receive)
                    receive = _replay(body, receive)
                try:
                    self._check_regions(principal, rule, routed, route, scope, params, body)
                except Forbidden:
                    if (
                        "user_id" not in params
                        and not _named_users(scope, rule)
                        and rule.body_user is None
                    ):
                        raise
                    # judged by a cached route: once more by the stores, as another
                    # process may have erased the user and the id been taken elsewhere
                    self._check_regions(principal, rule, routed, route, scope, params, body, True)
            action = audited(method, route) if operator and audit is None else None
            if action is not None and "user_id" in params:
                audit = (rule, route, params["user_id"], action)
        if audit is not None:
            self._audit_read(principal, method, *audit, reason)
        return receive

    def _check_regions(
        self,
        principal: Principal,
        rule: Rule,
        method: str,
        route: str,
        scope: Scope,
        params: dict[str, str],
        body: bytes | None,
        fresh: bool = False,
    ) -> None:
        """Refuse unless every region the request touches is one of the key's (``fresh``:
        users' home regions asked of the stores, not the route cache)."""
        d = self.deployment
        regions: set[str] = set()
        any_of: list[list[str]] = []
        placed = True  # False: some input names no region (or an object in none)
        explicit: set[str] = set()
        if _maybe(scope, b"region"):  # a region named the handler may ignore: checked only
            (explicit if rule.region_query else regions).update(_query(scope, "region"))
        if rule.body is not None:
            named = _body_regions(body or b"", rule.body)
            if isinstance(named, set):
                explicit |= named
            elif named is not None or not rule.body_optional:
                placed = False  # unreadable, or absent where absent means every region
        for name, value in params.items():
            if name == "user_id":
                home = d.locate_users((value,), fresh).get(value)
                placed = placed and home is not None
                regions.add(home or "")
            elif name == "video_id":
                if rule.selects and explicit and explicit <= self.declared:
                    continue  # the named region is the only one touched
                held = d.locate_video(value)
                placed = placed and bool(held)
                if rule.video == "any":
                    any_of.append(held)
                else:
                    regions.update(held)
            elif name == "region":
                regions.add(value)
            elif name == "creator_id":
                continue  # looked up in the user's home region only (placed by user_id)
            elif name == "job_id":
                region, dash, number = value.rpartition("-")
                placed = placed and bool(dash) and number.isdigit()
                regions.add(region)
            else:
                placed = False  # an id this table cannot place: fail closed
        if rule.body_user is not None:  # e.g. an appellant: their home, as for a {user_id}
            named = _body_regions(body or b"", rule.body_user)
            if isinstance(named, set) and len(named) == 1:
                (value,) = named
                refuse_nul(value, f"body.{rule.body_user}")
                home = d.locate_users((value,), fresh).get(value)
                placed = placed and home is not None
                regions.add(home or "")
            elif named is not None:
                placed = False  # not one user id: fail closed (the handler would 422)
        users = _named_users(scope, rule)
        if users:  # e.g. the viewer of a video: their home region, as for a {user_id}
            for value in users:
                refuse_nul(value, f"query.{rule.user_query}")  # before any store looks it up
            homes = d.locate_users(users, fresh)
            for value in users:
                placed = placed and value in homes
                regions.add(homes.get(value, ""))
        regions |= explicit
        regions.discard("")
        # a region outside the key's counts unless it is not declared (the handler 404s)
        outside = not regions <= principal.regions and bool(
            (regions - principal.regions) & self.declared
        )
        if (
            not placed
            or not (regions or any_of)  # nothing placed the request: every region
            or outside
            or (any_of and any(principal.regions.isdisjoint(held) for held in any_of))
        ):
            raise Forbidden(
                f"key {principal.key_id} is scoped to {sorted(principal.regions)}; "
                f"{method} {route} with these parameters touches data "
                "outside them (or in no region it may see)",
                key_id=principal.key_id,
                key_regions=sorted(principal.regions),
            )

    # -- operator reads --------------------------------------------------------------
    def _audit_read(
        self,
        principal: Principal,
        method: str,
        rule: Rule,
        route: str,
        user_id: str,
        action: str,
        reason: str | None,
    ) -> None:
        """Append the access to the audit log of the user's home region, or refuse it."""
        why = (reason or "").strip()
        if not why:
            raise InvalidRequest(
                f"reading a user's data as an operator needs a reason: send the "
                f"{REASON_HEADER} header (e.g. '{REASON_HEADER}: support ticket 4411')",
                header=REASON_HEADER,
            )
        if len(why) > MAX_REASON:
            raise InvalidRequest(f"{REASON_HEADER} is over {MAX_REASON} characters")
        region = self.deployment.locate_users((user_id,)).get(user_id)
        if region is None:
            return  # no such user: nothing is read (the handler answers 404)
        log = self._audit.get(region)
        if log is None:
            log = self._audit[region] = AuditLog(self.deployment.store(region))
        log.append(
            f"key:{principal.key_id}",
            action,
            user_pseudonym(self.deployment.config, region, user_id),
            {
                "key_id": principal.key_id,
                "key_name": principal.name,
                "roles": sorted(principal.roles),
                "route": f"{method} {route}",
                "reason": why,
            },
        )


AUDITED = {
    "GET": "user_data.read",
    "HEAD": "user_data.read",
    "PATCH": "user_data.update",
    "PUT": "user_data.update",
    "DELETE": "user_data.update",
}
"""Methods on a user's routes that an operator must give a reason for: a PATCH answers
with the whole profile, so it is a read as well as a change; a PUT or DELETE of what a
user follows or blocks acts for the user and its answer tells what they did (a 409:
they block that creator)."""
USER_ROUTE = "/v1/users/{user_id}"


def audited(method: str, route: str) -> str | None:
    """The audit action of an operator's ``method`` on ``route``, or None. Not the user
    itself deleted (an erasure: its ledger entry and signed receipt are its record) nor
    created elsewhere (a move keeps its own entries)."""
    action = AUDITED.get(method.upper())
    if action is None or not route.startswith(USER_ROUTE):
        return None
    if method.upper() in ("PUT", "DELETE") and not route.startswith(USER_ROUTE + "/"):
        return None
    return action


class AccessMiddleware:
    """Pure ASGI, ahead of routing: an app-level dependency would cost far more per request."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                receive = await self.access.check(scope, receive)
            except FypError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI, deployment: Deployment) -> Access:
    """Check every request to ``app`` (call once, before the app starts)."""
    access = Access(deployment, app)
    access.routes.build()
    app.state.access = access
    app.add_middleware(AccessMiddleware, access=access)
    return access


def principal(request: Request) -> Principal | None:
    """The checked key of this request (None on public routes)."""
    found: Principal | None = request.scope.get(PRINCIPAL)
    return found


def key_regions(request: Request) -> frozenset[str] | None:
    """The regions the request's key is limited to; None when it reaches every region."""
    p = principal(request)
    return None if p is None or p.all_regions else p.regions


# -- request parsing (no more than the check needs) ------------------------------------
def _credentials(scope: Scope) -> tuple[str | None, str | None]:
    token = reason = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
        elif name == b"x-api-key":
            token = token or value.decode("latin-1").strip()
        elif name == b"x-fyp-reason":
            reason = value.decode("utf-8", "replace")
    return token, reason


def route_path(scope: Scope) -> str:
    """The path the router matches (Starlette's rule): without the root path it is under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _query(scope: Scope, name: str) -> list[str]:
    """Every value of a query parameter (a repeated one counts each time)."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return [v for k, v in pairs if k == name]


def _maybe(scope: Scope, name: bytes) -> bool:
    """Cheap pre-test: can the query string hold ``name`` (also percent-encoded)?"""
    query: bytes = scope.get("query_string", b"")
    return name in query or b"%" in query


def _named_users(scope: Scope, rule: Rule) -> list[str]:
    """Every user the request names in the rule's ``user_query`` parameter (each value
    of a repeated one: the check is never laxer than the handler's parsing)."""
    name = rule.user_query
    if name is None or not _maybe(scope, name.encode()):
        return []
    return _query(scope, name)


def _flag(scope: Scope, name: str) -> bool:
    """Whether a boolean query flag may be on; anything but a plain "off" counts as on,
    so the check is never laxer than the handler's parsing."""
    if not _maybe(scope, name.encode()):
        return False
    return any(v.strip().lower() not in _FALSE for v in _query(scope, name))


def _body_regions(body: bytes, field: str) -> set[str] | bool | None:
    """Regions a JSON body names in ``field``: a set, None when absent, False when unreadable."""
    try:
        data = json.loads(body)
    except ValueError:
        return None  # the handler refuses a body that is not JSON before doing anything
    if not isinstance(data, dict) or data.get(field) is None:
        return None
    value = data[field]
    if isinstance(value, str):
        return {value}
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return set(value)
    return False


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


_REASON_PARAM = {
    "name": REASON_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": MAX_REASON},
    "description": "Why an operator reads or changes this user's data, e.g. a support "
    "ticket. Required (else 400) when the key acts as an operator: its roles that grant "
    "the route are only admin, moderator or auditor (on the feed, always with "
    "`debug=true`). Recorded in the audit log of the user's home region; service keys "
    "(feed, ingest) need not send it.",
}


def document_access(schema: dict[str, Any]) -> None:
    """Put the checks above in an OpenAPI document: how to send a key (and that public
    routes need none), and where an operator read needs ``X-Fyp-Reason``."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "fyp key"}
    schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    schema["security"] = [{"bearer": []}, {"apiKey": []}]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            rule = rule_for(method.upper(), path)
            if rule.public:
                operation["security"] = []
            elif (
                (method.upper(), path) in PERMISSIONS
                and audited(method, path)
                and rule.operator_roles
            ):
                operation.setdefault("parameters", []).append(_REASON_PARAM)
