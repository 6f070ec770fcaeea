"""Per-app state shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService
from fyp.moderation.review import Reviews
from fyp.moderation.service import Moderator
from fyp.regions.background import ChildScheduler
from fyp.regions.deployment import Deployment
from fyp.serving.metrics import ServerMetrics
from fyp.serving.reload import ConfigReloader


@dataclass
class AppState:
    deployment: Deployment
    catalog: Catalog
    ingestor: Ingestor
    feed: FeedService
    moderator: Moderator
    reviews: Reviews
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    schedules: list[ChildScheduler] = field(default_factory=list)
    """The background children ``fyp serve`` started (their counts go to /metrics)."""
    reloader: ConfigReloader | None = None
    """Applies edits of ``fyp.toml`` while serving (``fyp.serving.reload``)."""


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.fyp
    return app_state
