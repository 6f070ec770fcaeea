"""The For You feed route. Like the event routes, it answers with pre-encoded JSON:
FastAPI's response encoder would cost a noticeable share of a feed request."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from fyp.access.routes import get_only
from fyp.feed.reasons import LANGS, asked_lang
from fyp.feed.service import DEFAULT_PAGE, MAX_PAGE
from fyp.serving.dependencies import AppState
from fyp.serving.openapi import BAD_CURSOR, BAD_LANG, answers
from fyp.serving.responses import FeedPage
from fyp.storage.base import Store

router = APIRouter(prefix="/v1/users", tags=["feed"])

# the feeds' shared parameters (For You, and the Following tab: routers/following.py)
INCLUDE_DOC = (
    "`video`: each item also carries its video (caption, hashtags, creator, duration, "
    "attributes: as `GET /v1/videos/{video_id}`), read in one query from the user's home "
    "region, so an app needs no request per video. `null` for a video deleted after the "
    "page was made."
)
LANG_DOC = (
    f"Language of each item's `reason`: one of {', '.join(LANGS)}, or a tag that falls back "
    "to one (`en-GB`: `en`; `zh-CN`, `zh-SG`, `zh`: `zh-Hans`; `zh-TW`, `zh-HK`, `zh-MO`: "
    "`zh-Hant`); case-insensitive. Any other value: 422. Without it, the `Accept-Language` "
    "header's most preferred supported language (q-values), else the user's profile "
    "`language` if it falls back to a supported one, else `en`."
)
ACCEPT_LANGUAGE_DOC = (
    "Used when `lang` is absent; an unsupported one means `en` (not the profile's language)."
)


@router.get(
    "/{user_id}/feed",
    responses=answers(404, 503, ok=FeedPage, also={400: BAD_CURSOR, 422: BAD_LANG}),
)
@get_only  # a HEAD is a 405: see below
async def feed(
    request: Request,
    user_id: str,
    n: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="How many videos."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
    debug: bool = Query(False, description="Include what each filter removed and why."),
    include: Literal["video"] | None = Query(None, description=INCLUDE_DOC),
    lang: str | None = Query(None, description=LANG_DOC),
    accept_language: str | None = Header(None, description=ACCEPT_LANGUAGE_DOC),
) -> Response:
    """The next videos for the user, each with its score, source and reason.

    Learned only from the user's home region; videos on earlier pages never repeat.
    Each reason comes as text in the page's `lang` (`reason`) and as a stable code with
    parameters (`explanation`) for clients that localise it themselves. A user whose
    `personalised_feed` consent is off (their own, else their home region's default) gets
    the feed not based on profiling (`personalised: false`).

    No `HEAD` (a 405 with `Allow: GET`), unlike every other GET route: asking for a page
    records it as served (its videos never come again), so a HEAD answered as the GET
    would hide a page that nobody received, and one that made no page could not answer
    as the GET would (its status, its `Content-Length`). Probes have `/healthz` and
    `/readyz`."""
    s: AppState = request.app.state.fyp
    asked = asked_lang(lang, accept_language)  # before a page is served and recorded
    page = s.feed.feed(user_id, n=n, cursor=cursor, debug=debug)
    s.metrics.page(page.region, page.items, page.personalised)
    language = page.language(asked)
    answer = page.to_dict(debug=debug, lang=language)
    if include == "video":
        with_videos(answer["items"], s.deployment.store(page.region))
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json", headers=language_headers(language))


def with_videos(items: list[dict[str, Any]], store: Store) -> None:
    """Put each item's video beside it: one read for the page, from the region that
    made it (every video on the page is in that region's catalogue and eligible there)."""
    videos = store.get_videos(item["video_id"] for item in items)
    for item in items:
        video = videos.get(item["video_id"])
        item["video"] = None if video is None else video.model_dump(mode="json")


def language_headers(lang: str) -> dict[str, str]:
    """A feed's headers: the reasons' language, and that it varies with the request's."""
    return {"Content-Language": lang, "Vary": "Accept-Language"}
