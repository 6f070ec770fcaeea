"""A feed page as the service returns it, and as it is answered: language-neutral until
``to_dict(lang=...)`` renders each video's reason (``fyp.feed.reasons``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fyp.experiments.arms import Arm
from fyp.feed.pool import RemovedLog
from fyp.feed.reasons import DEFAULT_LANG, Reason


@dataclass(slots=True)
class FeedItem:
    video_id: str
    position: int
    score: float
    source: str
    why: Reason  # the reason, coded: rendered per language by ``to_dict``

    @property
    def reason(self) -> str:
        """The reason in English, as fyp served it before reasons had codes."""
        return self.why.text(DEFAULT_LANG)

    def to_dict(self, lang: str = DEFAULT_LANG) -> dict[str, Any]:
        why = self.why
        return {
            "video_id": self.video_id,
            "position": self.position,
            "score": self.score,
            "source": self.source,
            "reason": why.text(lang),
            "explanation": {"code": why.code, "params": why.params},
        }


@dataclass
class FeedPage:
    user_id: str
    region: str
    model_version: str
    items: list[FeedItem]
    cursor: str
    removed_log: RemovedLog
    experiment: Arm | None = None  # None: the user's home region runs no experiment
    # False: the non-profiled feed (the user's personalised_feed consent is off)
    personalised: bool = True
    profile_lang: str | None = None  # the supported language of the user's profile, if any

    @property
    def removed(self) -> list[dict[str, str]]:
        """Every candidate a filter removed, with the stage and the reason."""
        return self.removed_log.to_dicts()

    def language(self, asked: str | None) -> str:
        """The reasons' language: the one the request asked for (``?lang=``, else
        ``Accept-Language``), else the profile's, else ``en``."""
        return asked or self.profile_lang or DEFAULT_LANG

    def to_dict(self, debug: bool = False, lang: str | None = None) -> dict[str, Any]:
        """The answer, reasons in ``lang`` (one of ``fyp.feed.reasons.LANGS``; None:
        the profile's language, else ``en``)."""
        lang = self.language(lang)
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "region": self.region,
            "model_version": self.model_version,
            **page_fields(self.items, self.cursor, lang, self.personalised),
        }
        if self.experiment is not None:
            out["experiment"] = self.experiment.to_dict()
        if debug:
            out["removed"] = self.removed
        return out


def page_fields(
    items: list[FeedItem], cursor: str, lang: str, personalised: bool
) -> dict[str, Any]:
    """What every feed page answers after naming whose and which model's it is (a user's,
    a guest's: :mod:`fyp.feed.guest`)."""
    return {
        "lang": lang,
        "items": [i.to_dict(lang) for i in items],
        "next_cursor": cursor,
        # nothing eligible is left that the viewer has not seen (the seen window, the cursor)
        "end_of_feed": not items,
        "personalised": personalised,
    }
