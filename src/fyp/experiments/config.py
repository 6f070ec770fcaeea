"""``[experiments.NAME]``: A/B tests of the ranking configuration on live traffic.

An experiment splits the users homed in its regions into variants by a hash of their id
(:mod:`fyp.experiments.assignment`); a variant overrides part of ``[ranking]`` (the
scorer, objective weights), of ``[feed.sources]`` (the candidate sources' quotas, in a
``sources`` table) and of ``[feed.rerank]`` (diversity and exploration, in a ``rerank``
table; ``exploration_share`` may also stand alone, as before). Users in no variant
are ``control``, served exactly as without the experiment. At most one experiment runs
in a region, so a user is in at most one variant.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from fyp.config import (
    SCORERS,
    RankingConfig,
    RegionConfig,
    check_keys,
    number,
    objective_weights,
)
from fyp.errors import ConfigError
from fyp.feed.settings import RerankParams, SourceQuotas

CONTROL = "control"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EXPERIMENT_KEYS = ("start", "end", "regions", "salt", "variants")
VARIANT_KEYS = ("share", "scorer", "objective_weights", "exploration_share", "sources", "rerank")
Shares = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Variant:
    """A variant's overrides; None (or no weights) keeps what control has."""

    name: str
    share: float
    scorer: str | None = None
    objective_weights: tuple[tuple[str, float], ...] = ()
    exploration_share: float | None = None
    sources: tuple[tuple[str, int], ...] = ()  # over [feed.sources]
    rerank: tuple[tuple[str, float], ...] = ()  # over [feed.rerank]

    def ranking(self, base: RankingConfig) -> RankingConfig:
        """``[ranking]`` as this variant's users are ranked with."""
        weights = {**dict(base.objective_weights), **dict(self.objective_weights)}
        return dataclasses.replace(
            base, scorer=self.scorer or base.scorer, objective_weights=tuple(weights.items())
        )

    def quotas(self, base: SourceQuotas) -> SourceQuotas | None:
        """``[feed.sources]`` as this variant's users are ranked with; None: control's."""
        return dataclasses.replace(base, **dict(self.sources)) if self.sources else None

    def reranking(self, base: RerankParams) -> RerankParams:
        """``[feed.rerank]`` as this variant's users are ranked with."""
        changed: dict[str, Any] = dict(self.rerank)
        if self.exploration_share is not None:
            changed["exploration_share"] = self.exploration_share
        return dataclasses.replace(base, **changed)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"share": self.share}
        if self.scorer is not None:
            out["scorer"] = self.scorer
        if self.objective_weights:
            out["objective_weights"] = dict(self.objective_weights)
        if self.exploration_share is not None:
            out["exploration_share"] = self.exploration_share
        if self.sources:
            out["sources"] = dict(self.sources)
        if self.rerank:
            out["rerank"] = dict(self.rerank)
        return out


@dataclass(frozen=True)
class Experiment:
    name: str
    start: datetime  # aware, UTC: the report counts events from then
    regions: tuple[str, ...]  # resolved: every declared region when the config names none
    salt: str
    variants: tuple[Variant, ...]  # in name order: they take consecutive hash ranges
    all_regions: bool = False  # ``regions`` left out (written back that way)
    end: datetime | None = None  # aware, UTC: from then everyone is served as control

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int | None:
        return None if self.end is None else int(self.end.timestamp() * 1000)

    def ended(self, now_ms: int) -> bool:
        """Whether the experiment is over at ``now_ms``: no arm, no new exposures."""
        end = self.end_ms
        return end is not None and now_ms >= end

    def running(self, now_ms: int) -> bool:
        """Whether its variants are served at ``now_ms``: from ``start`` until ``end``.
        Before and after, everyone is served (and ranked ahead) as control."""
        return self.start_ms <= now_ms and not self.ended(now_ms)

    @property
    def shares(self) -> Shares:
        """(variant, share) in name order: what ``assignment.pick`` splits by."""
        return tuple((v.name, v.share) for v in self.variants)

    @property
    def arms(self) -> list[str]:
        """Control first, then the variants."""
        return [CONTROL, *(v.name for v in self.variants)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": self.start.isoformat()}
        if self.end is not None:
            out["end"] = self.end.isoformat()
        if not self.all_regions:
            out["regions"] = list(self.regions)
        if self.salt != self.name:
            out["salt"] = self.salt
        out["variants"] = {v.name: v.to_dict() for v in self.variants}
        return out


def _name(what: str, value: str) -> str:
    if not NAME.fullmatch(value):
        raise ConfigError(
            f"invalid {what} name {value!r}: use 1-32 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return value


def _moment(section: str, key: str, value: Any) -> datetime:
    """A TOML date or date-time, or an ISO string of one; without an offset it is UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ConfigError(
            f"[{section}] {key} must be a date or date-time (e.g. 2025-03-01T00:00:00Z)",
            section=section,
            key=key,
        )
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _variant(section: str, name: str, raw: Any) -> Variant:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table", section=section)
    check_keys(section, raw, VARIANT_KEYS)
    if "share" not in raw:
        raise ConfigError(f"[{section}] needs a share (over 0, at most 1)", section=section)
    share = number(section, "share", raw["share"], 0, 1, open_low=True)
    scorer = raw.get("scorer")
    if scorer is not None and scorer not in SCORERS:
        raise ConfigError(f"[{section}] scorer must be one of {SCORERS}, got {scorer!r}")
    weights = objective_weights(f"{section}.objective_weights", raw.get("objective_weights", {}))
    explore = raw.get("exploration_share")
    if explore is not None:
        explore = number(section, "exploration_share", explore, 0, 1, open_low=False)
    sources = SourceQuotas.overrides(f"{section}.sources", raw.get("sources", {}))
    rerank = RerankParams.overrides(f"{section}.rerank", raw.get("rerank", {}))
    if explore is not None and "exploration_share" in rerank:
        raise ConfigError(
            f"[{section}] sets exploration_share twice (and in its rerank table): keep one",
            section=section,
            key="exploration_share",
        )
    return Variant(
        name, share, scorer, tuple(weights.items()), explore, _pairs(sources), _pairs(rerank)
    )


def _pairs(table: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A partial table as a variant keeps it: hashable, in key order."""
    return tuple(sorted(table.items()))


def _experiment(
    name: str, raw: Any, regions: Mapping[str, RegionConfig], ranking: RankingConfig
) -> Experiment:
    section = f"experiments.{name}"
    _name("experiment", name)
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table", section=section)
    check_keys(section, raw, EXPERIMENT_KEYS)
    if "start" not in raw:
        raise ConfigError(f"[{section}] needs a start (the date the report counts from)")
    start = _moment(section, "start", raw["start"])
    end = None if raw.get("end") is None else _moment(section, "end", raw["end"])
    if end is not None and end <= start:
        raise ConfigError(
            f"[{section}] end ({end.isoformat()}) must be after start ({start.isoformat()})",
            section=section,
            key="end",
        )
    named = raw.get("regions")
    if named is not None and (
        not isinstance(named, list) or not named or not all(isinstance(r, str) for r in named)
    ):
        raise ConfigError(f"[{section}] regions must be a list of region names (leave it out: all)")
    for region in named or ():
        if region not in regions:
            raise ConfigError(
                f"[{section}] regions names {region!r}, which is not a declared region "
                f"(declared: {', '.join(regions)})",
                region=region,
            )
    salt = raw.get("salt", name)
    if not isinstance(salt, str) or not salt:
        raise ConfigError(f"[{section}] salt must be a non-empty string, got {salt!r}")
    body = raw.get("variants")
    if not isinstance(body, dict) or not body:
        raise ConfigError(f"[{section}] needs at least one [{section}.variants.NAME] table")
    variants = []
    for variant_name in sorted(body):
        if _name("variant", variant_name) == CONTROL:
            raise ConfigError(
                f"[{section}] a variant may not be named {CONTROL!r}: users in no variant are"
            )
        variant = _variant(f"{section}.variants.{variant_name}", variant_name, body[variant_name])
        if variant.objective_weights and variant.ranking(ranking).scorer != "multi_objective":
            raise ConfigError(
                f"[{section}.variants.{variant_name}] objective_weights only change the "
                'multi_objective scorer: set scorer = "multi_objective" in the variant '
                "(or in [ranking])"
            )
        variants.append(variant)
    if sum(v.share for v in variants) > 1 + 1e-9:
        raise ConfigError(f"[{section}] the variants' shares add up to more than 1")
    return Experiment(
        name=name,
        start=start,
        regions=tuple(named or regions),
        salt=salt,
        variants=tuple(variants),
        all_regions=named is None,
        end=end,
    )


def parse_experiments(
    raw: Any, regions: Mapping[str, RegionConfig], ranking: RankingConfig
) -> tuple[Experiment, ...]:
    """Every ``[experiments.NAME]``, checked: at most one per region."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[experiments] must be a table, got {type(raw).__name__}")
    experiments = tuple(_experiment(n, body, regions, ranking) for n, body in raw.items())
    owner: dict[str, str] = {}
    for experiment in experiments:
        for region in experiment.regions:
            other = owner.setdefault(region, experiment.name)
            if other != experiment.name:
                raise ConfigError(
                    f"experiments {other!r} and {experiment.name!r} both run in region "
                    f"{region!r}: at most one experiment per region (give each its regions)",
                    region=region,
                )
    return experiments
