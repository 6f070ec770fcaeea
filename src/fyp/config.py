"""Deployment configuration: the ``fyp.toml`` at the root of a deployment directory.

A deployment is a directory. Its config declares the regions (ringfenced cells); each
region names its store URL, where its backups may go, and a policy block that later
capabilities (moderation, retention, value weights) read. Relative ``sqlite:`` and
``file:`` paths are resolved against the deployment directory so a deployment can be
moved or carved out as a whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fyp.errors import ConfigError, InvalidRequest, NotADeployment, UnknownRegion
from fyp.feed.settings import RerankParams, SourceQuotas

if TYPE_CHECKING:
    from fyp.experiments.config import Experiment

CONFIG_FILE = "fyp.toml"
REGION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_region_name(name: str) -> str:
    """Region names end up in SQL CHECK constraints and paths, so they are strict."""
    if not isinstance(name, str) or not REGION_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid region name {name!r}: use 1-32 lowercase letters, digits or '_', "
            "starting with a letter",
            region=name,
        )
    return name


DAY_MS = 86_400_000


def did_you_mean(key: str, known: Collection[str]) -> str:
    """``; did you mean 'x'?`` for the known key closest to a misspelt one, or ''."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def policy_table(
    region: str, policy: Mapping[str, Any], table: str, known: Collection[str]
) -> dict[str, Any]:
    """A capability's sub-table of a region's policy (``[regions.R.policy.TABLE]``,
    empty when absent), checked to be a table of known keys."""
    raw = policy.get(table, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"[regions.{region}.policy.{table}] must be a table", region=region)
    check_keys(f"regions.{region}.policy.{table}", raw, known)
    return raw


def check_keys(section: str, raw: dict[str, Any], known: Collection[str]) -> None:
    """A misspelt key would silently leave its setting at the default (a backup target
    nobody backs up to, a limit that is not one): every unknown key is a ConfigError."""
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"unknown key {key!r} in [{section}]{did_you_mean(key, known)} "
                f"(known keys: {', '.join(sorted(known))})",
                section=section,
                key=key,
            )


def number(section: str, key: str, value: Any, low: float, high: float, *, open_low: bool) -> float:
    """A float setting: a TOML int or float, finite (``nan`` and ``inf`` parse as floats
    and pass every ``<`` check the wrong way) and in range."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not (low < value if open_low else low <= value) or value > high:
        bounds = f"{'over' if open_low else 'at least'} {low:g} and at most {high:g}"
        raise ConfigError(
            f"[{section}] {key} must be a number {bounds}, got {value!r}",
            section=section,
            key=key,
        )
    return float(value)


def seconds(section: str, key: str, raw: dict[str, Any], default: float) -> float:
    """A schedule's interval in seconds (0: off), a month at most."""
    return number(section, key, raw.get(key, default), 0, MAX_EVERY_MINUTES * 60, open_low=False)


def region_list(text: str, option: str = "--regions") -> list[str]:
    """Region names as a user typed them (``us,eu``): a mistake there is theirs to fix
    (a client error, exit 2), not a broken deployment config."""
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names:
        raise InvalidRequest(f"{option} names no region: give one or more, e.g. us,eu")
    for name in names:
        if not REGION_NAME.fullmatch(name):
            raise InvalidRequest(
                f"{option}: invalid region name {name!r}: use 1-32 lowercase letters, digits "
                "or '_', starting with a letter",
                region=name,
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidRequest(f"{option} names {', '.join(repeated)} more than once")
    return names


@dataclass(frozen=True)
class Limits:
    """Input limits that protect the store from absurd or hostile requests."""

    max_batch: int = 1000
    max_body_bytes: int = 1024 * 1024  # a request body over this is a 413, unread
    max_future_skew_s: int = 300
    max_watch_ms: int = 4 * 3600 * 1000
    max_duration_ms: int = 24 * 3600 * 1000

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Limits:
        check_keys("limits", raw, cls.__dataclass_fields__)
        for k, v in raw.items():
            if type(v) is not int or v <= 0:  # bool is not an int here
                raise ConfigError(f"[limits] {k} must be positive (an integer), got {v!r}")
        return cls(**raw)


SCORERS = ("value_model", "multi_objective")
MAX_WEIGHT = 1000.0
MAX_RETRAIN_HOURS = 24.0 * 365  # an erasure's retrain deadline: a year at most
MAX_EVERY_MINUTES = 60.0 * 24 * 30  # a background schedule: a month at most
MAX_SEEN_WINDOW_DAYS = 3650.0
OBJECTIVES = ("long_play", "like", "share", "follow", "skip")


def objective_weights(section: str, given: Any) -> dict[str, float]:
    """A table of objective weights (``[ranking.objective_weights]``, or an experiment
    variant's partial one): known objectives, finite, within ±``MAX_WEIGHT``."""
    if not isinstance(given, dict):
        raise ConfigError(f"[{section}] must be a table", section=section)
    check_keys(section, given, OBJECTIVES)
    return {
        name: number(section, name, w, -MAX_WEIGHT, MAX_WEIGHT, open_low=False)
        for name, w in given.items()
    }


@dataclass(frozen=True)
class RankingConfig:
    """``[ranking]``: which scorer ranks feeds, and the value of each objective.

    ``multi_objective`` ranks with the learned heads (sum of weight x P(objective));
    ``value_model`` (default) with engagement estimates of the region model. On the
    KuaiRec-EAR protocol the learned heads score lower (docs/benchmarks.md)."""

    scorer: str = "value_model"
    objective_weights: tuple[tuple[str, float], ...] = (
        ("long_play", 1.0),
        ("like", 1.0),
        ("share", 2.0),
        ("follow", 2.0),
        ("skip", -0.5),
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RankingConfig:
        check_keys("ranking", raw, ("scorer", "objective_weights"))
        scorer = raw.get("scorer", cls.scorer)
        if scorer not in SCORERS:
            raise ConfigError(f"[ranking] scorer must be one of {SCORERS}, got {scorer!r}")
        weights = dict(cls.objective_weights)
        weights.update(
            objective_weights("ranking.objective_weights", raw.get("objective_weights", {}))
        )
        return cls(scorer=scorer, objective_weights=tuple(weights.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "objective_weights": dict(self.objective_weights)}


@dataclass(frozen=True)
class ErasureConfig:
    """``[erasure]``: how soon a retrain must remove an erased user's share of aggregates
    (item vectors, co-engagement, popularity). ``fyp erasure process`` meets it."""

    retrain_within_hours: float = 24.0
    # how often `fyp serve` checks for pending erasures and, when the earliest deadline
    # is within half the window, retrains in a child process; 0 leaves it to cron
    check_every_minutes: float = 10.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ErasureConfig:
        check_keys("erasure", raw, ("retrain_within_hours", "check_every_minutes"))
        hours = raw.get("retrain_within_hours", cls.retrain_within_hours)
        every = raw.get("check_every_minutes", cls.check_every_minutes)
        return cls(
            retrain_within_hours=number(
                "erasure", "retrain_within_hours", hours, 0, MAX_RETRAIN_HOURS, open_low=True
            ),
            check_every_minutes=number(
                "erasure", "check_every_minutes", every, 0, MAX_EVERY_MINUTES, open_low=False
            ),
        )


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``: how often ``fyp serve`` retrains, in a child process, each region
    whose events or catalogue changed since its live model (``fyp train --if-changed``):
    until then a video uploaded after training reaches no feed. 0 leaves it to cron.
    ``ray``: the address of a Ray cluster that trains each region on a node labelled for
    it (``fyp.models.ray_executor``), for ``fyp train`` and so for that child too;
    empty: local processes."""

    every_minutes: float = 60.0
    ray: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingConfig:
        check_keys("training", raw, ("every_minutes", "ray"))
        every = raw.get("every_minutes", cls.every_minutes)
        ray = raw.get("ray", cls.ray)
        if not isinstance(ray, str) or ray != ray.strip():
            raise ConfigError(
                "[training] ray must be a Ray address (auto, HOST:PORT, ray://HOST:PORT) or "
                f"empty, got {ray!r}",
                section="training",
                key="ray",
            )
        return cls(
            every_minutes=number(
                "training", "every_minutes", every, 0, MAX_EVERY_MINUTES, open_low=False
            ),
            ray=ray,
        )


@dataclass(frozen=True)
class ModerationConfig:
    """``[moderation]``: how often ``fyp serve`` looks for videos no check has judged
    yet (new uploads, edits) or verdicts made under an older policy, and runs ``fyp
    moderate`` for those regions in a child process. Until then an upload stays pending,
    out of every feed. 0 leaves it to cron."""

    every_seconds: float = 30.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModerationConfig:
        check_keys("moderation", raw, ("every_seconds",))
        return cls(every_seconds=seconds("moderation", "every_seconds", raw, cls.every_seconds))


@dataclass(frozen=True)
class FeedConfig:
    """``[feed]``: how long a video shown to a user stays out of their feed (and how long
    the served log is kept); how many videos the pipeline ranks ahead per run (the next
    pages are served from that order while the user's events are unchanged; ``fyp
    train`` ranks every user ahead; 0 ranks only the page asked for); and how many users
    a serving process keeps in memory: built states (a few KB each), and the candidate
    sources' proposals with the order ranked from them (~10 KB each). 0 turns a cache
    off. ``[feed.sources]`` and ``[feed.rerank]``: the pipeline's stages
    (:mod:`fyp.feed.settings`)."""

    seen_window_days: float = 30.0
    state_cache_users: int = 100_000
    proposal_cache_users: int = 10_000
    rank_ahead: int = 50
    sources: SourceQuotas = field(default_factory=SourceQuotas)
    rerank: RerankParams = field(default_factory=RerankParams)

    @property
    def seen_window_ms(self) -> int:
        return int(self.seen_window_days * DAY_MS)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeedConfig:
        sized = ("rank_ahead", "state_cache_users", "proposal_cache_users")
        check_keys("feed", raw, ("seen_window_days", *sized, "sources", "rerank"))
        days = raw.get("seen_window_days", cls.seen_window_days)
        days = number("feed", "seen_window_days", days, 0, MAX_SEEN_WINDOW_DAYS, open_low=True)
        sizes: dict[str, int] = {}
        for key in sized:
            value = raw.get(key, getattr(cls, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"[feed] {key} must be an integer >= 0, got {value!r}")
            sizes[key] = value
        sources = SourceQuotas.from_dict("feed.sources", raw.get("sources", {}))
        rerank = RerankParams.from_dict("feed.rerank", raw.get("rerank", {}))
        return cls(seen_window_days=days, sources=sources, rerank=rerank, **sizes)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "sources": self.sources.to_dict(), "rerank": self.rerank.to_dict()}


@dataclass(frozen=True)
class ServingConfig:
    """``[serving]``: how often each ``fyp serve`` process looks at ``fyp.toml`` for an
    edit (its content's sha256; the deployment directory is shared, so one edit reaches
    every host) and applies what can change while it serves
    (:mod:`fyp.serving.reload`). 0 turns the watch off (SIGHUP still reloads). And how
    often it looks for the other side of a block or unblock that a request cut short
    left owed, and writes it (``settle_blocks_seconds``, :mod:`fyp.catalog.blocks`; 0:
    leave it to cron, ``fyp user blocks-settle``)."""

    config_check_seconds: float = 5.0
    settle_blocks_seconds: float = 60.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ServingConfig:
        check_keys("serving", raw, ("config_check_seconds", "settle_blocks_seconds"))
        every = seconds("serving", "config_check_seconds", raw, cls.config_check_seconds)
        settle = seconds("serving", "settle_blocks_seconds", raw, cls.settle_blocks_seconds)
        return cls(config_check_seconds=every, settle_blocks_seconds=settle)


REGION_KEYS = ("store", "backup_targets", "served_log", "policy")


@dataclass(frozen=True)
class RegionConfig:
    name: str
    store: str
    backup_targets: tuple[str, ...] = ()
    policy: dict[str, Any] = field(default_factory=dict)
    served_log: str | None = None  # None: the served log is in the store

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"store": self.store, "backup_targets": list(self.backup_targets)}
        if self.served_log is not None:
            out["served_log"] = self.served_log
        return {**out, "policy": self.policy}


@dataclass(frozen=True)
class DeploymentConfig:
    """The parsed ``fyp.toml`` of one deployment directory."""

    root: Path
    name: str
    regions: dict[str, RegionConfig]
    limits: Limits = Limits()
    ranking: RankingConfig = RankingConfig()
    erasure: ErasureConfig = ErasureConfig()
    training: TrainingConfig = TrainingConfig()
    moderation: ModerationConfig = ModerationConfig()
    feed: FeedConfig = FeedConfig()
    serving: ServingConfig = ServingConfig()
    experiments: tuple[Experiment, ...] = ()  # at most one per region

    def experiment_in(self, region: str) -> Experiment | None:
        """The experiment running in ``region``, if any."""
        return next((e for e in self.experiments if region in e.regions), None)

    def region(self, name: str) -> RegionConfig:
        try:
            return self.regions[name]
        except KeyError:
            raise UnknownRegion(
                f"region {name!r} is not declared in this deployment",
                region=name,
                regions=sorted(self.regions),
            ) from None

    @property
    def region_names(self) -> list[str]:
        """Regions in config order; the order is part of the documented home-region rule."""
        return list(self.regions)

    def resolve_url(self, url: str) -> str:
        """Make ``sqlite:///relative/path`` and ``file:relative`` URLs absolute under root."""
        for scheme in ("sqlite:///", "file://"):
            if url.startswith(scheme):
                rest = url[len(scheme) :]
                if rest.startswith("/") or rest.startswith(":memory:"):
                    return url
                return scheme + str((self.root / rest).resolve())
        return url

    def region_dir(self, name: str) -> Path:
        """Where a region keeps its local files (store, models, caches) by default."""
        return self.root / "regions" / self.region(name).name

    def to_toml(self) -> str:
        doc: dict[str, Any] = {
            "deployment": {"name": self.name},
            "limits": self.limits.__dict__,
            "ranking": self.ranking.to_dict(),
            "erasure": self.erasure.__dict__,
            "training": self.training.__dict__,
            "moderation": self.moderation.__dict__,
            "feed": self.feed.to_dict(),
            "serving": self.serving.__dict__,
            "regions": {r.name: r.to_dict() for r in self.regions.values()},
        }
        if self.experiments:
            doc["experiments"] = {e.name: e.to_dict() for e in self.experiments}
        return tomli_w.dumps(doc)


def default_region(name: str) -> RegionConfig:
    return RegionConfig(
        name=name,
        store=f"sqlite:///regions/{name}/store.sqlite",
        backup_targets=(f"file://backups/{name}",),
        policy={},
    )


def new_config(root: Path, regions: list[str], name: str | None = None) -> DeploymentConfig:
    if not regions:
        raise ConfigError("a deployment needs at least one region")
    if len(set(regions)) != len(regions):
        raise ConfigError(f"duplicate region names in {regions}")
    cells = {check_region_name(r): default_region(r) for r in regions}
    return DeploymentConfig(root=root.resolve(), name=name or root.resolve().name, regions=cells)


def load_config(root: Path) -> DeploymentConfig:
    return read_config(root)[0]


def read_config(root: Path) -> tuple[DeploymentConfig, str]:
    """The parsed ``fyp.toml`` and the sha256 of the bytes parsed: what a serving
    process has in force, and how it tells an edit (:mod:`fyp.serving.reload`)."""
    path = root / CONFIG_FILE
    if not path.is_file():  # a path the caller gave: their mistake, not a broken deployment
        raise NotADeployment(
            f"{path} not found: is {root} a fyp deployment? create one with `fyp init {root}`",
            path=str(path),
        )
    data = path.read_bytes()
    return parse_config_bytes(root, data), hashlib.sha256(data).hexdigest()


def parse_config_bytes(root: Path, data: bytes) -> DeploymentConfig:
    """``fyp.toml``'s content parsed and checked whole (a ConfigError otherwise)."""
    path = root / CONFIG_FILE
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", path=str(path)) from exc
    return parse_config(root, raw)


def backup_target_path(root: Path, url: str) -> Path | None:
    """The directory a ``file://`` backup target names (relative to ``root``); None otherwise."""
    if not url.startswith("file://"):
        return None
    rest = url[len("file://") :]
    return Path(rest).resolve() if rest.startswith("/") else (root / rest).resolve()


def check_backup_targets(root: Path, regions: dict[str, RegionConfig]) -> None:
    """A backup target belongs to one region: two regions sharing one (or one nested in
    the other's) would put each region's backups where the other's operators read."""
    seen: list[tuple[str, str, Path | None]] = []
    for name, region in regions.items():
        for url in region.backup_targets:
            path = backup_target_path(root, url)
            for other, other_url, other_path in seen:
                if other == name:
                    continue
                nested = (
                    path is not None
                    and other_path is not None
                    and (path.is_relative_to(other_path) or other_path.is_relative_to(path))
                )
                if nested or url == other_url:
                    raise ConfigError(
                        f"backup target {url!r} of region {name!r} overlaps {other_url!r} of "
                        f"region {other!r}: every region needs backup targets of its own",
                        region=name,
                        other_region=other,
                    )
            seen.append((name, url, path))


def served_log_url(name: str, raw: Any) -> str | None:
    """A region's ``served_log`` URL (``{region}`` in it names the region), or None."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ConfigError(
            f"[regions.{name}] served_log must be a Redis URL, got {raw!r} "
            "(leave it out to keep the served log in the region's store)",
            region=name,
        )
    from fyp.storage.redis_url import parse_redis_url

    url = raw.replace("{region}", name)
    try:
        parse_redis_url(url)
    except ConfigError as exc:
        raise ConfigError(f"[regions.{name}] served_log: {exc.message}", region=name) from exc
    return url


def check_served_logs(regions: dict[str, RegionConfig]) -> None:
    """A served log server (database) belongs to one region, like its store: two URLs
    naming one host and port (or one Sentinel), service and database are one."""
    from fyp.storage.redis_url import parse_redis_url

    owners: dict[tuple[str, str, int, str, int], str] = {}
    for name, region in regions.items():
        if region.served_log is None:
            continue
        for place in parse_redis_url(region.served_log).places():
            other = owners.setdefault(place, name)
            if other != name:
                raise ConfigError(
                    f"served_log of region {name!r} is the one of region {other!r}: every "
                    "region needs a served log of its own (another server or database number)",
                    region=name,
                    other_region=other,
                )


def with_served_logs(config: DeploymentConfig, urls: dict[str, str]) -> DeploymentConfig:
    """``config`` with the regions of ``urls`` keeping their served log there (checked as
    when ``fyp.toml`` is loaded); write it with :func:`write_config`."""
    regions = {
        name: (
            cell
            if name not in urls
            else dataclasses.replace(cell, served_log=served_log_url(name, urls[name]))
        )
        for name, cell in config.regions.items()
    }
    check_served_logs(regions)
    return dataclasses.replace(config, regions=regions)


def parse_config(root: Path, raw: dict[str, Any]) -> DeploymentConfig:
    regions_raw = raw.get("regions")
    if not isinstance(regions_raw, dict) or not regions_raw:
        raise ConfigError("fyp.toml must declare at least one [regions.NAME] table")
    regions: dict[str, RegionConfig] = {}
    for name, body in regions_raw.items():
        check_region_name(name)
        if not isinstance(body, dict) or "store" not in body:
            raise ConfigError(f"[regions.{name}] needs a store URL")
        check_keys(f"regions.{name}", body, REGION_KEYS)
        targets = body.get("backup_targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ConfigError(f"[regions.{name}] backup_targets must be a list of URLs")
        policy = body.get("policy", {})
        if not isinstance(policy, dict):
            raise ConfigError(f"[regions.{name}.policy] must be a table")
        from fyp.moderation.policy import parse_policy

        parse_policy(name, policy)  # a misspelt policy key stops every command, not only moderation
        regions[name] = RegionConfig(
            name=name,
            store=str(body["store"]),
            backup_targets=tuple(targets),
            policy=policy,
            served_log=served_log_url(name, body.get("served_log")),
        )
    check_backup_targets(root, regions)
    check_served_logs(regions)
    from fyp.moderation.reports import parse_reports
    from fyp.regions.consent import parse_consent
    from fyp.sovereignty.move_policy import parse_moves
    from fyp.sovereignty.retention import parse_retention

    for name, cell in regions.items():  # a move to a region nobody declared stops every command
        parse_moves(name, cell.policy, regions)
        parse_consent(name, cell.policy)
        parse_retention(name, cell.policy)
        parse_reports(name, cell.policy)
    deployment = raw.get("deployment", {})
    limits = raw.get("limits", {})
    ranking = raw.get("ranking", {})
    erasure = raw.get("erasure", {})
    training = raw.get("training", {})
    moderation = raw.get("moderation", {})
    feed = raw.get("feed", {})
    serving = raw.get("serving", {})
    sections = {
        "deployment": deployment,
        "limits": limits,
        "ranking": ranking,
        "erasure": erasure,
        "training": training,
        "moderation": moderation,
        "feed": feed,
        "serving": serving,
    }
    known = {*sections, "regions", "experiments"}
    unknown = sorted(set(raw) - known)
    if unknown:  # a misspelt section would otherwise be ignored without a word
        raise ConfigError(
            f"unknown sections in fyp.toml: {unknown}{did_you_mean(unknown[0], known)} "
            f"(known: {sorted(known)})"
        )
    for section, value in sections.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{section}] must be a table, got {type(value).__name__}")
    check_keys("deployment", deployment, ("name",))
    ranked = RankingConfig.from_dict(ranking)
    from fyp.experiments.config import parse_experiments

    return DeploymentConfig(
        root=root.resolve(),
        name=str(deployment.get("name", root.resolve().name)),
        regions=regions,
        limits=Limits.from_dict(limits),
        ranking=ranked,
        erasure=ErasureConfig.from_dict(erasure),
        training=TrainingConfig.from_dict(training),
        moderation=ModerationConfig.from_dict(moderation),
        feed=FeedConfig.from_dict(feed),
        serving=ServingConfig.from_dict(serving),
        experiments=parse_experiments(raw.get("experiments", {}), regions, ranked),
    )


def write_config(config: DeploymentConfig) -> Path:
    config.root.mkdir(parents=True, exist_ok=True)
    path = config.root / CONFIG_FILE
    path.write_text(config.to_toml(), encoding="utf-8")
    return path
