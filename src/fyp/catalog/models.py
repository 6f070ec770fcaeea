"""Users and videos as the API and the stores see them."""

from __future__ import annotations

import difflib
import math
import time
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)
from pydantic_core import to_json

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]
REGION_MARK = "x-fyp-region"
"""Marks a region name in the OpenAPI document, which lists the deployment's regions
there (``fyp.serving.openapi``): any other is a 422."""
Region = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$"),
    Field(json_schema_extra={REGION_MARK: True}),
]
Short = Annotated[str, StringConstraints(max_length=64)]
Caption = Annotated[
    str,
    StringConstraints(max_length=4000),
    AfterValidator(lambda s: unicodedata.normalize("NFC", s)),
]
CURRENT_YEAR = time.gmtime().tm_year
MAX_DURATION_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _unique(values: list[str]) -> list[str]:
    """NFC-normalise, strip, drop empties and repeats, keep first-seen order."""
    seen: dict[str, None] = {}
    for v in values:
        v = unicodedata.normalize("NFC", v).strip()
        if v:
            seen.setdefault(v, None)
    return list(seen)


def _hashtags(values: list[str]) -> list[str]:
    # "#搞笑", "＃搞笑" and "搞笑" are one hashtag.
    return _unique([v.strip().lstrip("#＃") for v in values])


MAX_ATTRIBUTES_DEPTH = 16
MAX_ATTRIBUTES_BYTES = 64 * 1024


def _attributes(value: dict[str, Any]) -> dict[str, Any]:
    """What the app keeps about a user or video, as given, within bounds: a 300-deep
    object broke the JSON encoder (a 500) and a 60 MB one was stored; a non-finite
    number would have been stored as null."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()  # depth: objects and arrays around this node, itself too
        if isinstance(node, dict | list) and depth > MAX_ATTRIBUTES_DEPTH:
            raise ValueError(f"attributes nest deeper than {MAX_ATTRIBUTES_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("attributes may not hold NaN or Infinity")
    size = len(to_json(value))
    if size > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes take {size:,} bytes of JSON, over {MAX_ATTRIBUTES_BYTES:,}")
    return value


Attributes = Annotated[dict[str, Any], AfterValidator(_attributes)]


def _consents(value: dict[str, bool]) -> dict[str, bool]:
    """A key that nearly spells one fyp honours is a mistake: ``personalized_feed`` was
    stored and honoured by nothing, so the user's choice silently did not hold. Keys of
    the app's own (``ads``) are kept, each change on record like any consent's."""
    from fyp.regions.consent import KEYS

    for key in value:
        close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.8)
        if key not in KEYS and close:
            raise ValueError(
                f"unknown consent {key!r}: did you mean {close[0]!r}? (fyp honours "
                f"{', '.join(KEYS)}; other keys are the app's own, stored as given)"
            )
    return value


Consents = Annotated[dict[Short, StrictBool], AfterValidator(_consents)]
Label = Annotated[str, StringConstraints(max_length=100)]
Labels = Annotated[list[Label], AfterValidator(_unique)]
Hashtags = Annotated[list[Label], AfterValidator(_hashtags)]
Regions = Annotated[list[Region], AfterValidator(_unique), Field(min_length=1)]
DurationMs = Annotated[int, Field(gt=0, le=MAX_DURATION_MS)]


class MoveIn(BaseModel):
    """Where to move a user's home region (``POST /v1/users/{id}/move``)."""

    model_config = ConfigDict(extra="forbid")

    to: Region


class UserPatch(BaseModel):
    """Fields a user may change; the home region changes only by a move
    (``POST /v1/users/{id}/move``)."""

    model_config = ConfigDict(extra="forbid")

    birth_year: int | None = Field(default=None, ge=1900, le=CURRENT_YEAR)
    country: Short | None = None
    language: Short | None = None
    consents: Consents | None = Field(
        default=None,
        description="What the user consented to (true) or refused (false), by key; a key "
        "not recorded takes the home region's default (`[regions.NAME.policy.consent]`). "
        "`personalised_feed`: false serves the feed not based on profiling (the page says "
        "`personalised: false`), from the very next page. null clears every key. Values "
        "are JSON booleans; a key that nearly spells one fyp honours (`personalized_feed`) "
        "is refused (422), other keys are the app's own, kept as given.",
    )
    attributes: Attributes | None = None


class UserIn(UserPatch):
    user_id: Id
    home_region: Region


class User(UserIn):
    consents: dict[Short, bool] | None = None  # as stored (a key since retired stays readable)
    created_at_ms: int
    updated_at_ms: int

    def age(self, at_year: int = CURRENT_YEAR) -> int | None:
        return age_of(self.birth_year, at_year)


def age_of(birth_year: int | None, at_year: int = CURRENT_YEAR) -> int | None:
    """A user's age from their birth year (None: not given)."""
    return None if birth_year is None else at_year - birth_year


def _without_nulls(schema: dict[str, Any]) -> None:
    """A patch's document: each field may be omitted, never null (as validated)."""
    for name, field in schema.get("properties", {}).items():
        options = [o for o in field.get("anyOf", []) if o != {"type": "null"}]
        if len(options) == 1:
            rest = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
            schema["properties"][name] = {**options[0], **rest}


class VideoPatch(BaseModel):
    """Omit a field to leave it unchanged; null is refused (no video field may be empty)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_without_nulls)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None)
            if nulls:
                raise ValueError(f"null is not allowed for {nulls}; omit a field to keep it")
        return data

    caption: Caption | None = None
    hashtags: Hashtags | None = None
    categories: Labels | None = None
    tags: Labels | None = None
    duration_ms: DurationMs | None = None
    regions: Regions | None = None
    attributes: Attributes | None = None


class VideoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: Id
    creator_id: Id | None = None
    caption: Caption = ""
    hashtags: Hashtags = []
    categories: Labels = []
    tags: Labels = []
    duration_ms: DurationMs
    regions: Regions
    attributes: Attributes = {}


ERASED_NAME = "[erased]"
"""What replaces a user's id in a record that must keep its row (a review job, a video's
creator)."""
ELSEWHERE_NAME = "[elsewhere]"
"""What replaces, in a region's records, the id of a user who lives in another region
(a user who moved away, or the inviter of a user who moved in): the region must not
name them, but they were not erased."""


class Video(VideoIn):
    # a stored video keeps its row when its creator is erased or moves away: the
    # document says what the id becomes (the fuzzer found "[elsewhere]" undocumented)
    creator_id: Id | Literal["[erased]", "[elsewhere]"] | None = Field(
        default=None,
        description="The uploader; `[erased]` once they were erased (`[elsewhere]`: in a "
        "copy an older fyp renamed when its creator moved away; a move now keeps the name).",
    )
    created_at_ms: int
    updated_at_ms: int
