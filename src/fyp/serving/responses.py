"""The bodies the API answers with, as models for its OpenAPI document.

The routes that return these build their dicts (or pre-encoded JSON) themselves: a
``response_model`` would validate and re-encode every answer, a noticeable share of a
feed request. So the models are only documentation, published with
``responses={200: {"model": ...}}``; ``tests/serving/test_openapi.py`` checks real
answers against them, field for field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import BaseModel, Field, create_model

from fyp.catalog.models import Video
from fyp.events import schema
from fyp.feed import guest
from fyp.feed.reasons import CODES, LANGS
from fyp.sovereignty.erasure import Receipt


class Error(BaseModel):
    """What went wrong; ``code`` is stable, ``message`` is for people."""

    code: str = Field(description="Stable machine-readable code, e.g. `unknown_user`.")
    message: str
    status: int = Field(description="The HTTP status, repeated.")
    details: dict[str, Any] = Field(
        description="Context for the code. A 422 lists `problems`: `{field, problem}` "
        "each, `field` the value's path from the request's root: `body.<field>` (list "
        "items by index, e.g. `body.events.3.ts`), `query.<name>`, `path.<name>` or "
        "`header.<name>` (lower case)."
    )


class ErrorBody(BaseModel):
    """Every error the API answers with, 4xx and 5xx alike."""

    error: Error


def _codes() -> str:
    return "; ".join(
        f"`{c.name}`"
        + (f" ({', '.join(f'`{p}`' for p in c.params)})" if c.params else "")
        + f': {c.about}, e.g. "{c.en}"'
        for c in CODES.values()
    )


class Explanation(BaseModel):
    """Why the video is here, for clients that localise it themselves: a stable code
    and its parameters (strings). A client that does not know a code shows `reason`."""

    code: str = Field(description=f"One of: {_codes()}.")
    params: dict[str, str] = Field(
        description="The code's parameters, by name (empty for a code without any)."
    )


INCLUDED_VIDEO = (
    "Only with `include=video`: the video, as `GET /v1/videos/{video_id}` gives it (`null` "
    "if it was deleted after the page was made)."
)


class FeedItem(BaseModel):
    video_id: str
    position: int = Field(description="0-based position on the page.")
    score: float
    source: str = Field(description="The candidate source that proposed the video.")
    reason: str = Field(
        description="Why the video is here, for people, in the page's `lang` (in `en` the "
        "text fyp always served)."
    )
    explanation: Explanation
    video: Video | None = Field(default=None, description=INCLUDED_VIDEO)


class Removed(BaseModel):
    video_id: str
    stage: str = Field(description="The filter that removed the candidate.")
    reason: str


class Experiment(BaseModel):
    name: str = Field(description="The experiment (`[experiments.NAME]` of fyp.toml).")
    variant: str = Field(
        description="The user's variant; `control` is served as without the experiment."
    )


class FeedPage(BaseModel):
    user_id: str
    region: str = Field(description="The user's home region, the only one the feed learns from.")
    model_version: str
    lang: Literal[LANGS] = Field(  # type: ignore[valid-type]
        description="The language of the items' `reason` (from `lang`, else "
        "`Accept-Language`, else the user's profile `language` when it falls back to a "
        "supported one, else `en`); also the `Content-Language` header."
    )
    items: list[FeedItem]
    next_cursor: str = Field(description="Pass as `cursor` for the next page.")
    end_of_feed: bool = Field(
        description="True when the page is empty: every eligible video was shown to the user "
        "within the seen window (`[feed] seen_window_days`); new uploads and events may refill "
        "it later."
    )
    personalised: bool = Field(
        description="False: the feed not based on profiling (EU DSA Art. 38), served because "
        "the user's `personalised_feed` consent is off (`consents` of the profile; where the "
        "user recorded none, their home region's default, `[regions.NAME.policy.consent]`). "
        "Its videos are the region's popular and new ones, scored by regional popularity "
        "alone (reasons `not_personalised`, `new_not_personalised`); only what the user was "
        "shown or acted on in the seen window, what they marked not interested, and their "
        "region and age (availability, age gates) are read. No experiment variant applies."
    )
    experiment: Experiment | None = Field(
        default=None,
        description="Only when the user's home region runs an experiment: which one, and "
        "the variant that ranked this page.",
    )
    removed: list[Removed] | None = Field(
        default=None, description="Only with `debug=true`: what each filter removed."
    )


class GuestFeedPage(BaseModel):
    region: str = Field(description="The region asked for: its catalogue, its moderation states.")
    model_version: str
    lang: Literal[LANGS] = Field(  # type: ignore[valid-type]
        description="The language of the items' `reason` (from `lang`, else "
        "`Accept-Language`, else `en`: a guest has no profile); also the `Content-Language` "
        "header."
    )
    items: list[FeedItem]
    next_cursor: str = Field(
        description="Pass as `cursor` for the next page: it remembers the last "
        f"{guest.MEMORY} videos served in this session (none comes again within them), and "
        f"is at most {guest.MAX_CURSOR_CHARS} characters. An edited cursor, or one of "
        "another region or of a user's feed, is a 400."
    )
    end_of_feed: bool = Field(
        description="True when the page is empty: every eligible video the cursor remembers "
        "was shown."
    )
    personalised: Literal[False] = Field(
        description="Always false: the feed not based on profiling, the same for every guest "
        "with the same cursor (reasons `not_personalised`, `new_not_personalised`)."
    )


class EventResult(BaseModel):
    event_id: str | None = Field(description="As sent; null when it was not a string.")
    status: Literal["stored", "duplicate", "rejected"]
    region: str | None = Field(
        default=None, description="The user's home region, where the event is stored."
    )
    error: Error | None = Field(
        default=None,
        description="Why the event was rejected; a 5xx status (`storage_error`: its region's "
        "store failed) means it was not stored for the server's reason: retry it.",
    )


class BatchResult(BaseModel):
    stored: int
    duplicate: int
    rejected: int
    results: list[EventResult] = Field(description="One per event, in the order sent.")


def _fields_of(name: str, kind: type, doc: str, **more: Any) -> type[BaseModel]:
    """A model with the fields of a named tuple or dataclass (and ``more``), so the
    document follows the type the answer is made from."""
    fields: dict[str, Any] = {k: (v, ...) for k, v in get_type_hints(kind).items()}
    return create_model(name, __doc__=doc, **fields, **more)


if TYPE_CHECKING:
    StoredEvent = BaseModel
    DeletionReceipt = BaseModel
else:
    StoredEvent = _fields_of(
        "StoredEvent", schema.StoredEvent, "An event as stored, with its play labels."
    )
    DeletionReceipt = _fields_of(
        "DeletionReceipt",
        Receipt,
        "Signed by the home region's receipts key; names the user only by pseudonym.",
        erased_at=(str, ...),
        retrain_deadline=(str | None, ...),
    )


class UserEvents(BaseModel):
    user_id: str
    region: str
    events: list[StoredEvent] = Field(description="Newest first.")


class UserErasure(BaseModel):
    user_id: str
    deleted: dict[str, int] = Field(description="Rows removed, per kind.")
    receipt: DeletionReceipt


class MoveReceiptBody(BaseModel):
    """Signed by the source region's receipts key; names the user only by the source's
    pseudonym. ``moved``: what the destination holds of the user, per kind; ``removed``:
    what this run removed from the source."""

    move_id: str
    pseudonym: str
    from_: str = Field(alias="from")
    to: str
    moved_at_ms: int
    moved_at: str
    moved: dict[str, int]
    removed: dict[str, int]
    artifacts: dict[str, list[str]]
    retrain_required: bool
    retrain_deadline_ms: int | None
    retrain_deadline: str | None
    signature: str


class UserMove(BaseModel):
    user_id: str
    receipt: MoveReceiptBody


class VideoDeletion(BaseModel):
    video_id: str
    deleted_from: list[str] = Field(description="The regions whose catalogues held it.")


class ExportManifest(BaseModel):
    sections: dict[str, int] = Field(description="How many entries each section holds.")
    regions_read: list[str] = Field(
        description="The regions whose stores the export read (the home region always)."
    )
    regions_not_read: list[str] = Field(
        description="Regions the key does not reach: the user's uploads and appeals there "
        "are not in this export (a key for every region exports them)."
    )


class ExportedModel(BaseModel):
    region: str
    version: str | None
    trained_at: str | None = None
    learned_from: bool
    vector: list[float] | None


class UserExport(BaseModel):
    """Everything held about the user (rows as their stores hold them)."""

    format: str
    user_id: str
    home_region: str
    exported_at_ms: int
    exported_at: str
    manifest: ExportManifest
    profile: dict[str, Any]
    events: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    served: list[dict[str, Any]]
    experiment_exposures: list[dict[str, Any]] = Field(
        description="Each experiment the user was served under: its arm (`variant`) and "
        "the first page's time (`exposed_at_ms`)."
    )
    following: list[dict[str, Any]] = Field(
        description="The creators the user follows (`creator_id`, `since_ms`), oldest first."
    )
    follow_actions: list[dict[str, Any]] = Field(
        description="The user's latest follow or unfollow of each creator (`creator_id`, "
        "`acted_ms`, `following`), oldest first: a follow or unfollow event older than it "
        "changes nothing."
    )
    blocked: list[dict[str, Any]] = Field(
        description="The creators the user blocked (`creator_id`, `since_ms`), oldest first."
    )
    blocks_owed: list[dict[str, Any]] = Field(
        description="The user's blocks and unblocks of a creator in another region whose "
        "side there is still to be written (`creator_id`, `since_ms`; normally none, or "
        "gone within a minute), oldest first."
    )
    videos: list[dict[str, Any]]
    appeals: list[dict[str, Any]]
    model: ExportedModel


class RegionCounts(BaseModel):
    users: int
    videos: int
    events: int


class Regions(BaseModel):
    regions: dict[str, RegionCounts] = Field(description="The regions the key may see.")


class StoreVersion(BaseModel):
    schema_: int = Field(alias="schema", description="The store's schema version.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    regions: dict[str, StoreVersion]


class FollowBody(BaseModel):
    creator_id: str
    since_ms: int = Field(description="When the user started following (epoch ms).")


class FollowAnswer(FollowBody):
    user_id: str
    following: bool = Field(description="True: the user follows the creator now.")


class FollowingPage(BaseModel):
    user_id: str
    region: str = Field(description="The user's home region, which keeps the follows.")
    following: list[FollowBody] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class BlockAnswer(FollowBody):
    user_id: str
    blocked: bool = Field(description="True: the user has blocked the creator now.")


class BlockedPage(BaseModel):
    user_id: str
    region: str = Field(description="The user's home region, which keeps the blocks.")
    blocked: list[FollowBody] = Field(description="Newest first; `since_ms`: when blocked.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class FollowingTabItem(BaseModel):
    video_id: str
    creator_id: str = Field(description="A creator the user follows.")
    created_at_ms: int = Field(description="When the video was published: the tab's order.")
    position: int = Field(description="0-based position on the page.")
    reason: str = Field(description="Why the video is here, in the page's `lang`.")
    explanation: Explanation = Field(description="Always the code `followed_creator`.")
    video: Video | None = Field(default=None, description=INCLUDED_VIDEO)


class FollowingTabPage(BaseModel):
    user_id: str
    region: str = Field(description="The user's home region: its catalogue, its moderation states.")
    lang: Literal[LANGS] = Field(  # type: ignore[valid-type]
        description="The language of the items' `reason`, chosen as on the For You feed; "
        "also the `Content-Language` header."
    )
    items: list[FollowingTabItem] = Field(
        description="Newest first (`created_at_ms`, then `video_id`)."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end. A page cut short "
        "by a failed moderation check has one too (the next page tries those videos again)."
    )
