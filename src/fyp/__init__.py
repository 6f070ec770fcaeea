"""fyp — an open-source For You feed engine for short-video apps, with ringfenced regions.

The public API is what this module exports; everything else is internal and may change.
"""

from __future__ import annotations

__version__ = "0.1.0"

from fyp.catalog.models import User, UserIn, UserPatch, Video, VideoIn, VideoPatch
from fyp.catalog.service import Catalog
from fyp.config import DeploymentConfig, load_config
from fyp.errors import (
    AgeRestricted,
    AlreadyExists,
    BackupCorrupt,
    ClientError,
    ClusterError,
    ConfigError,
    Conflict,
    Forbidden,
    FypError,
    InvalidRequest,
    JobConflict,
    ModelError,
    MoveInProgress,
    MoveNotAllowed,
    NotADeployment,
    NotFound,
    PayloadTooLarge,
    PlacementRefused,
    ResidencyViolation,
    RunInProgress,
    SealBroken,
    ServerError,
    StorageError,
    StoreInUse,
    Unauthenticated,
    UnknownCreator,
    UnknownJob,
    UnknownRegion,
    UnknownUser,
    UnknownVideo,
    UnsupportedMediaType,
    ValidationFailed,
)
from fyp.events.ingest import BatchResult, EventResult, Ingestor
from fyp.events.schema import EventIn, EventType, PlayLabels, play_labels
from fyp.regions.deployment import Deployment
from fyp.storage import Store, open_store

__all__ = [
    "AgeRestricted",
    "AlreadyExists",
    "BackupCorrupt",
    "BatchResult",
    "Catalog",
    "ClientError",
    "ClusterError",
    "ConfigError",
    "Conflict",
    "Deployment",
    "DeploymentConfig",
    "EventIn",
    "EventResult",
    "EventType",
    "Forbidden",
    "FypError",
    "Ingestor",
    "InvalidRequest",
    "JobConflict",
    "ModelError",
    "MoveInProgress",
    "MoveNotAllowed",
    "NotADeployment",
    "NotFound",
    "PayloadTooLarge",
    "PlacementRefused",
    "PlayLabels",
    "ResidencyViolation",
    "RunInProgress",
    "SealBroken",
    "ServerError",
    "StorageError",
    "Store",
    "StoreInUse",
    "Unauthenticated",
    "UnknownCreator",
    "UnknownJob",
    "UnknownRegion",
    "UnknownUser",
    "UnknownVideo",
    "UnsupportedMediaType",
    "User",
    "UserIn",
    "UserPatch",
    "ValidationFailed",
    "Video",
    "VideoIn",
    "VideoPatch",
    "__version__",
    "load_config",
    "open_store",
    "play_labels",
]
