"""The permission table: which roles may call each route, and where its regions come from.

Every route of the API has one entry, keyed by method and path template. A route
missing from the table is admin-only (fail closed); ``tests/access`` asserts that every
route of the app has an explicit entry, so a new route is a deliberate decision.

The regions a request touches come from its inputs, by name, in one place
(``fyp.access.guard``): ``{user_id}`` is the user's home region, ``{video_id}`` the
regions whose catalogue holds the video, ``{job_id}`` the region in the job id,
``{region}`` and a ``region`` query parameter name a region, and a rule may name a JSON
body field or a query parameter naming a user (``viewer_id``: their home region);
``{creator_id}`` places nothing (the route reads it in the ``{user_id}``'s
home region only). A path parameter of any other name cannot be placed, so the request needs
a key for every region. A rule marked ``unscoped`` touches no one region by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fyp.access.keys import OPERATOR_ROLES, ROLES


@dataclass(frozen=True)
class Rule:
    """Who may call a route, and how the regions it touches are found."""

    roles: frozenset[str]
    public: bool = False
    body: str | None = None
    """A JSON body field naming the region (string) or regions (list) the request touches."""
    body_optional: bool = False
    """When ``body`` is absent: True, the path decides; False, every region is touched."""
    selects: bool = False
    """A region named for the handler (``region_query``, or ``body``) is the only one the
    request touches, instead of every region holding ``{video_id}``; never a region the
    deployment does not declare (the video's regions are then checked)."""
    region_query: bool = False
    """The handler reads a ``region`` query parameter (which ``selects`` then trusts).
    On any other route a ``region`` query only adds a region to check: a takedown that
    reads its regions from the body once took a video down everywhere for a key of one
    region, because ``?region=`` of that key's region stood in for the video's."""
    video: Literal["all", "any"] = "all"
    """``any``: a key for one of the video's regions will do (identical public copies)."""
    operator_flag: str | None = None
    """A query flag (e.g. ``debug``) that makes the request an operator read."""
    unscoped: bool = False
    """The request names no region: no region check here (the handler scopes itself)."""
    user_query: str | None = None
    """A query parameter naming a user (e.g. the viewer of a video): their home region
    is touched too, as a ``{user_id}``'s is."""
    body_user: str | None = None
    """A JSON body field naming a user the request acts for (an appeal's appellant):
    their home region is touched too, and a user in no region cannot be placed (the same
    403 as one elsewhere: the answer never says whether the user exists)."""

    @property
    def operator_roles(self) -> frozenset[str]:
        return self.roles & OPERATOR_ROLES


def allow(*roles: str, **options: object) -> Rule:
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    return Rule(frozenset(roles), **options)  # type: ignore[arg-type]


PUBLIC = Rule(frozenset(), public=True, unscoped=True)
ADMIN_ONLY = allow("admin")
"""What a route missing from the table gets."""

READERS = ("admin", "auditor", "moderator")
"""Operators who may read a user's data; each read needs a reason and is audited."""

PERMISSIONS: dict[tuple[str, str], Rule] = {
    # ops and docs
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/v1/regions"): allow("admin", "auditor", "moderator", unscoped=True),
    ("GET", "/metrics"): allow("metrics", "admin", unscoped=True),
    # users
    ("POST", "/v1/users"): allow("ingest", "admin", body="home_region"),
    ("GET", "/v1/users/{user_id}"): allow(*READERS),
    ("PATCH", "/v1/users/{user_id}"): allow("ingest", "admin"),
    ("DELETE", "/v1/users/{user_id}"): allow("admin"),
    # a move touches the user's home region and the destination (the body's "to")
    ("POST", "/v1/users/{user_id}/move"): allow("admin", body="to"),
    ("GET", "/v1/users/{user_id}/events"): allow(*READERS),
    ("GET", "/v1/users/{user_id}/export"): allow("admin", "auditor"),
    ("GET", "/v1/users/{user_id}/feed"): allow("feed", "admin", "auditor", operator_flag="debug"),
    # following and blocked: the app shows and changes them; the creator is looked up in the user's
    # home region's catalogue only (``{creator_id}`` names no region by itself)
    ("GET", "/v1/users/{user_id}/following"): allow("feed", "ingest", *READERS),
    # the Following tab: served to the app like the For You feed (operators with a reason)
    ("GET", "/v1/users/{user_id}/following/feed"): allow("feed", "admin", "auditor"),
    # the guest feed: a region's feed for a viewer nobody knows (no user's data; no reason)
    ("GET", "/v1/regions/{region}/feed"): allow("feed", "admin", "auditor"),
    ("PUT", "/v1/users/{user_id}/following/{creator_id}"): allow("ingest", "admin"),
    ("DELETE", "/v1/users/{user_id}/following/{creator_id}"): allow("ingest", "admin"),
    ("GET", "/v1/users/{user_id}/blocked"): allow("feed", "ingest", *READERS),
    ("PUT", "/v1/users/{user_id}/blocked/{creator_id}"): allow("ingest", "admin"),
    ("DELETE", "/v1/users/{user_id}/blocked/{creator_id}"): allow("ingest", "admin"),
    # videos (public content; a copy per region it is published to)
    ("POST", "/v1/videos"): allow("ingest", "admin", body="regions"),
    # the app names the viewer (``viewer_id``) for an age-restricted video: a key of their region
    # not ``metrics``: a scraper names no video (nor user)
    ("GET", "/v1/videos/{video_id}"): allow(
        "feed",
        "ingest",
        *READERS,
        video="any",
        selects=True,
        region_query=True,
        user_query="viewer_id",
    ),
    ("PATCH", "/v1/videos/{video_id}"): allow(
        "ingest", "admin", body="regions", body_optional=True
    ),
    ("DELETE", "/v1/videos/{video_id}"): allow("ingest", "admin"),
    # events: the ingestor checks each event's user against the key's regions
    ("POST", "/v1/events"): allow("ingest", "admin", unscoped=True),
    ("POST", "/v1/events/batch"): allow("ingest", "admin", unscoped=True),
    # moderation
    ("POST", "/v1/moderation/runs"): allow("moderator", "admin", body="region"),
    ("GET", "/v1/moderation/videos/{video_id}"): allow("moderator", "admin", "auditor"),
    ("GET", "/v1/moderation/videos/{video_id}/replay"): allow(
        "moderator", "admin", "auditor", selects=True, region_query=True
    ),
    ("POST", "/v1/moderation/videos/{video_id}/takedown"): allow(
        "moderator", "admin", body="regions", body_optional=True, selects=True
    ),
    ("POST", "/v1/moderation/videos/{video_id}/appeals"): allow(
        "ingest", "moderator", "admin", body="region", selects=True, body_user="appellant_id"
    ),
    ("POST", "/v1/moderation/jobs/claim"): allow("moderator", "admin", body="region"),
    ("GET", "/v1/moderation/jobs"): allow("moderator", "admin", "auditor", region_query=True),
    ("GET", "/v1/moderation/jobs/{job_id}"): allow("moderator", "admin", "auditor"),
    ("POST", "/v1/moderation/jobs/{job_id}/decision"): allow("moderator", "admin"),
    ("GET", "/v1/moderation/audit/{region}/verify"): allow("auditor", "admin"),
}


def rule_for(method: str, path: str) -> Rule:
    """The route's rule; HEAD is a GET; a route missing from the table is admin-only."""
    if method == "HEAD":
        method = "GET"
    return PERMISSIONS.get((method, path), ADMIN_ONLY)
