"""The feed pipeline's tunable stages: how many candidates each source proposes
(``[feed.sources]``) and the re-ranker's diversity and exploration (``[feed.rerank]``).

A deployment sets them in ``fyp.toml``; an experiment's variant may override part of
either (``[experiments.NAME.variants.VARIANT] sources`` and ``rerank``, partial tables
over the deployment's). The defaults are the values the pipeline was tuned with on
KuaiRec-EAR, so a deployment that sets nothing ranks as before. Kept apart from the
stages themselves (no numpy) so that :mod:`fyp.config` can parse them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from fyp.errors import ConfigError

SOURCE_NAMES = ("co_engagement", "embedding", "trending", "following", "fresh", "category_interest")
"""The profiled feed's candidate sources (``CandidateSource.name``), in pipeline order."""
MAX_QUOTA = 100_000
"""A source's quota at most: every proposal is filtered and scored on each page ranked
live, so a quota past a catalogue's size only costs (and is most likely a typo)."""


def _table(section: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(raw).__name__}", section=section)
    return raw


def _count(section: str, key: str, value: Any, high: int | None) -> int:
    """An integer setting >= 0 (and at most ``high``); a bool is not one."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 0
        or (high is not None and value > high)
    ):
        bound = "" if high is None else f" and at most {high:,}"
        raise ConfigError(
            f"[{section}] {key} must be an integer >= 0{bound}, got {value!r}",
            section=section,
            key=key,
        )
    return value


class _Table:
    """A settings table of ``fyp.toml``, checked key by key (:meth:`_value`); a variant
    gives a partial one (:meth:`overrides`) over the deployment's."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def _value(cls, section: str, key: str, value: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def overrides(cls, section: str, raw: Any) -> dict[str, Any]:
        """A (partial) table of these settings, checked: known keys, each in its range."""
        table = _table(section, raw)
        from fyp.config import check_keys

        check_keys(section, table, cls.__dataclass_fields__)
        return {key: cls._value(section, key, value) for key, value in table.items()}

    @classmethod
    def from_dict(cls, section: str, raw: Any) -> Self:
        return cls(**cls.overrides(section, raw))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SourceQuotas(_Table):
    """``[feed.sources]``: per candidate source, how many videos it proposes for a page
    ranked live (0 turns the source off: it is not asked at all); and the most
    impressions a video may have had for ``fresh`` to propose it (recent videos with few
    impressions: the exploration slots draw from them, so ``fresh = 0`` turns
    exploration off too)."""

    co_engagement: int = 200
    embedding: int = 200
    trending: int = 300
    following: int = 50
    fresh: int = 30
    category_interest: int = 90
    fresh_max_impressions: int = 50

    @classmethod
    def _value(cls, section: str, key: str, value: Any) -> int:
        return _count(section, key, value, None if key == "fresh_max_impressions" else MAX_QUOTA)


@dataclass(frozen=True)
class RerankParams(_Table):
    """``[feed.rerank]``: the diversity re-ranker's penalties and the exploration share
    (:mod:`fyp.feed.rerank`)."""

    creator_decay: float = 0.5
    # Mild: the tag window below already keeps look-alikes apart. On KuaiRec-EAR's
    # train->valid split (scripts/ear_valid_split.py) 0.8 cost 7-20 % of NDCG@10
    # against 1.0 (off); 0.9 is within 1 % of off and still spreads categories.
    category_decay: float = 0.9
    floor: float = 0.2
    # a candidate sharing a tag with one of the last ``tag_window`` videos (shown on this
    # page or watched just before) is multiplied by ``tag_decay``: no run of look-alikes.
    # 0 (since session 11, was 0.5) makes it a rule, not a penalty: a look-alike is shown
    # only when nothing else is left. With the weight of a session's own likes
    # (ValueWeights.fresh_category) a halved look-alike often still won; offline NDCG@10
    # is the same for any decay up to 0.8 (session 4) and was 0.6466 at 0 and 0.5
    tag_window: int = 4
    tag_decay: float = 0.0
    exploration_share: float = 0.05

    def __post_init__(self) -> None:
        # penalties are factors of at most 1: the re-ranker's scan relies on it
        for name in SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.tag_window < 0:
            raise ConfigError(f"tag_window must be at least 0, got {self.tag_window}")

    @classmethod
    def _value(cls, section: str, key: str, value: Any) -> float | int:
        if key == "tag_window":
            return _count(section, key, value, None)
        from fyp.config import number

        return number(section, key, value, 0, 1, open_low=False)


SHARES = ("creator_decay", "category_decay", "floor", "tag_decay", "exploration_share")
"""The re-ranker's settings that are factors or shares: 0 to 1."""
