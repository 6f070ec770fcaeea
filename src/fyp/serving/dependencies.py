"""Per-app state shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService
from fyp.moderation.review import Reviews
from fyp.moderation.service import Moderator
from fyp.regions.deployment import Deployment


@dataclass
class AppState:
    deployment: Deployment
    catalog: Catalog
    ingestor: Ingestor
    feed: FeedService
    moderator: Moderator
    reviews: Reviews


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.fyp
    return app_state
