"""Per-app state shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from fyp.catalog.service import Catalog
from fyp.events.ingest import Ingestor
from fyp.regions.deployment import Deployment


@dataclass
class AppState:
    deployment: Deployment
    catalog: Catalog
    ingestor: Ingestor


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.fyp
    return app_state
