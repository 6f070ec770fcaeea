"""The fyp error tree.

Every error fyp raises on purpose is a :class:`FypError`. Client errors (the caller
can fix the request) and server errors (the caller cannot) are separate branches, so
the HTTP layer maps them in one place (:func:`http_status`) and the CLI prints them
the same way. Each error has a stable machine-readable ``code``; the JSON body is
always ``{"error": {"code", "message", "status", "details"}}``.

    FypError
    ├── ClientError                      4xx — the request is wrong
    │   ├── InvalidRequest               400 malformed body, bad parameter
    │   ├── Unauthenticated              401 missing or unknown API key
    │   ├── Forbidden                    403 key lacks the scope
    │   │   ├── ResidencyViolation       403 would put data outside its home region
    │   │   ├── MoveNotAllowed           403 the region's policy does not allow that move
    │   │   └── AgeRestricted            403 an 18+ video for a viewer not certainly 18
    │   ├── NotFound                     404
    │   │   ├── UnknownUser
    │   │   ├── UnknownVideo
    │   │   ├── UnknownRegion
    │   │   ├── UnknownJob               (a review job id)
    │   │   ├── UnknownCreator           (none of their videos is published in the region)
    │   │   └── NotADeployment           (a directory without fyp.toml)
    │   ├── Conflict                     409 the current state does not allow it
    │   │   ├── AlreadyExists            the id is taken (or names another event)
    │   │   ├── JobConflict              a review job or video in no state for the request
    │   │   ├── MoveInProgress           another move of the user is unfinished
    │   │   ├── RunInProgress            another run of scheduled work holds its lock
    │   │   └── StoreInUse               a restore while the store is open elsewhere
    │   ├── PayloadTooLarge              413 batch or body over the configured limit
    │   ├── UnsupportedMediaType         415 a body that is not declared as JSON
    │   └── ValidationFailed             422 well-formed but invalid values
    └── ServerError                      5xx — fyp or its environment is wrong
        ├── ConfigError                  500 deployment config is invalid
        ├── StorageError                 503 the store failed or is unavailable
        │   └── SealBroken               a sealed stream does not open (key, bytes)
        │       └── BackupCorrupt        a backup's checksums, MAC or seal do not hold
        ├── ModelError                   503 no usable model artifact
        └── ClusterError                 503 the training cluster (Ray) is unreachable or failed
            └── PlacementRefused         no live node may process the region's data

Every class is defined here (tests/test_errors.py checks codes and this tree against
them), so one ``except`` of a branch catches all of it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FypError(Exception):
    """Base of every deliberate fyp error."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The one JSON error shape used by the API, the CLI's ``--json`` and batch results."""
        return {
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "details": self.details,
        }


class ClientError(FypError):
    status = 400
    code = "client_error"


class InvalidRequest(ClientError):
    status = 400
    code = "invalid_request"


class Unauthenticated(ClientError):
    status = 401
    code = "unauthenticated"


class Forbidden(ClientError):
    status = 403
    code = "forbidden"


class ResidencyViolation(Forbidden):
    """A write or read that would move a user's data out of their home region."""

    code = "residency_violation"


class MoveNotAllowed(Forbidden):
    """The source region's policy (``[regions.R.policy.moves] allow_to``) does not allow
    moving users to that region."""

    code = "move_not_allowed"


class AgeRestricted(Forbidden):
    """An ``age_restricted`` video asked for by link (``GET /v1/videos/{id}``, a feed
    key) without a viewer certainly 18: the app can show an "age-restricted" screen
    where a 404 would say the video is gone. It tells no more than the video's public
    rating; a video barred for any other reason stays a 404."""

    code = "age_restricted"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class NotADeployment(NotFound):
    """The directory given holds no fyp.toml (a CLI argument, exit 2)."""

    code = "not_a_deployment"


class UnknownUser(NotFound):
    code = "unknown_user"


class UnknownVideo(NotFound):
    code = "unknown_video"


class UnknownRegion(NotFound):
    code = "unknown_region"


class UnknownJob(NotFound):
    code = "unknown_job"


class UnknownCreator(NotFound):
    code = "unknown_creator"


class Conflict(ClientError):
    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class JobConflict(Conflict):
    """The job or video is not in a state that allows the request."""

    code = "moderation_conflict"


class MoveInProgress(Conflict):
    """An unfinished move of the user to another region: finish it first (running the
    move again finishes it)."""

    code = "move_in_progress"


class RunInProgress(Conflict):
    """Another run of the same scheduled work (training, moderation, erasure processing)
    holds its lock: a server's schedule, or the command started elsewhere."""

    code = "run_in_progress"


class StoreInUse(Conflict):
    """The region's store is open in another process: stop the server first."""

    code = "store_in_use"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(ClientError):
    status = 422
    code = "validation_failed"


class ServerError(FypError):
    status = 500
    code = "server_error"


class ConfigError(ServerError):
    status = 500
    code = "config_error"


class StorageError(ServerError):
    status = 503
    code = "storage_error"


class SealBroken(StorageError):
    """A sealed stream failed to open: wrong key, or changed, reordered or cut bytes."""

    code = "seal_broken"


class BackupCorrupt(SealBroken):
    """A backup whose checksums, MAC or seal do not hold: nothing is restored from it."""

    code = "backup_corrupt"


class ModelError(ServerError):
    status = 503
    code = "model_unavailable"


class ClusterError(ServerError):
    status = 503
    code = "cluster_error"


class PlacementRefused(ClusterError):
    """No live cluster node is labelled for the region: its training is refused, never
    run elsewhere (fail closed)."""

    code = "placement_refused"


def invalid_cursor() -> InvalidRequest:
    """400 for a ``cursor`` that is not a ``next_cursor`` the route gave (as far as the
    route can tell: the For You cursor is checked for shape only, docs/architecture.md
    "Errors"): the same body on every paged route, naming the parameter in
    ``details.field`` as the tree's other field errors do."""
    return InvalidRequest("cursor is not a next_cursor this route gave", field="cursor")


def http_status(error: BaseException) -> int:
    """HTTP status for any exception: the error's own for fyp errors, 500 otherwise."""
    return error.status if isinstance(error, FypError) else 500


def error_body(error: BaseException) -> dict[str, Any]:
    """The JSON body for any exception; unexpected ones never leak internals."""
    if isinstance(error, FypError):
        return {"error": error.to_dict()}
    return {
        "error": {
            "code": "internal_error",
            "message": "internal server error",
            "status": 500,
            "details": {},
        }
    }
