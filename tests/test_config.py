"""Deployment configuration: parsing, validation and the fyp.toml round trip."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fyp.config import (
    CONFIG_FILE,
    DeploymentConfig,
    FeedConfig,
    Limits,
    ModerationConfig,
    RegionConfig,
    ServingConfig,
    TrainingConfig,
    check_region_name,
    load_config,
    new_config,
    parse_config,
    write_config,
)
from fyp.errors import ConfigError, NotADeployment, UnknownRegion
from fyp.feed.settings import RerankParams, SourceQuotas

FEED_TABLES = ("sources", "rerank")  # [feed]'s sub-tables, each listed key by key


def minimal(**extra: Any) -> dict[str, Any]:
    return {"regions": {"us": {"store": "sqlite:///regions/us/store.sqlite"}}, **extra}


# -- loading -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotADeployment) as info:  # a path the caller gave: a client error
        load_config(tmp_path)
    assert info.value.details["path"] == str(tmp_path / CONFIG_FILE)
    assert info.value.status == 404


def test_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[regions.us\nstore = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path)


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).mkdir()
    with pytest.raises(NotADeployment):
        load_config(tmp_path)


def test_load_minimal(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(
        '[regions.us]\nstore = "sqlite:///s.sqlite"\n', encoding="utf-8"
    )
    config = load_config(tmp_path)
    assert config.root == tmp_path.resolve()
    assert config.name == tmp_path.resolve().name
    assert config.region_names == ["us"]
    assert config.region("us") == RegionConfig(name="us", store="sqlite:///s.sqlite")
    assert config.limits == Limits()


# -- parse errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"regions": {}},
        {"regions": "us"},
        {"regions": ["us"]},
        {"deployment": {"name": "x"}},
    ],
)
def test_no_regions(tmp_path: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        parse_config(tmp_path, raw)


@pytest.mark.parametrize(
    "name", ["US", "Us", "a b", "../x", "x/y", "", "1us", "_us", "us-east", "é", "a" * 33]
)
def test_bad_region_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid region name") as info:
        parse_config(tmp_path, {"regions": {name: {"store": "sqlite:///x.sqlite"}}})
    assert info.value.details == {"region": name}
    with pytest.raises(ConfigError):
        check_region_name(name)


@pytest.mark.parametrize("name", ["us", "eu_west", "a", "r2d2", "a" * 32])
def test_good_region_names(name: str) -> None:
    assert check_region_name(name) == name


def test_region_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        check_region_name("us\n")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({}, "needs a store URL"),
        ("sqlite:///x", "needs a store URL"),
        ({"store": "sqlite:///x", "backup_targets": "file://b"}, "backup_targets"),
        ({"store": "sqlite:///x", "backup_targets": [1]}, "backup_targets"),
        ({"store": "sqlite:///x", "policy": "strict"}, "policy"),
    ],
)
def test_bad_region_bodies(tmp_path: Path, body: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(tmp_path, {"regions": {"us": body}})


@pytest.mark.parametrize(
    "limits", [{"max_batchh": 10}, {"max_batch": 10, "colour": "red"}, {"unknown": 1}]
)
def test_unknown_limit_keys(tmp_path: Path, limits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"unknown key '\w+' in \[limits\]"):
        parse_config(tmp_path, minimal(limits=limits))


@pytest.mark.parametrize("key", sorted(Limits.__dataclass_fields__))
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits(tmp_path: Path, key: str, value: int) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        parse_config(tmp_path, minimal(limits={key: value}))


@pytest.mark.parametrize("value", ["abc", [1], 1.5, True])
def test_non_integer_limits(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError):
        parse_config(tmp_path, minimal(limits={"max_batch": value}))


@pytest.mark.parametrize("extra", [{"deployment": "x"}, {"limits": 5}])
def test_sections_that_are_not_tables(tmp_path: Path, extra: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config(tmp_path, minimal(**extra))


def test_limits_are_read(tmp_path: Path) -> None:
    config = parse_config(tmp_path, minimal(limits={"max_batch": 5, "max_watch_ms": 60_000}))
    assert config.limits == Limits(max_batch=5, max_watch_ms=60_000)
    assert config.limits.max_future_skew_s == Limits().max_future_skew_s


def test_region_order_is_kept(tmp_path: Path) -> None:
    raw = {"regions": {n: {"store": f"sqlite:///{n}.sqlite"} for n in ("zz", "aa", "mm")}}
    assert parse_config(tmp_path, raw).region_names == ["zz", "aa", "mm"]


def test_unknown_region_lookup(tmp_path: Path) -> None:
    config = parse_config(tmp_path, minimal())
    with pytest.raises(UnknownRegion) as info:
        config.region("eu")
    assert info.value.details == {"region": "eu", "regions": ["us"]}


def test_region_dir(tmp_path: Path) -> None:
    config = new_config(tmp_path, ["us"])
    assert config.region_dir("us") == tmp_path.resolve() / "regions" / "us"
    with pytest.raises(UnknownRegion):
        config.region_dir("eu")


# -- new_config and the round trip --------------------------------------------------------------


def test_new_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one region"):
        new_config(tmp_path, [])
    with pytest.raises(ConfigError, match="duplicate"):
        new_config(tmp_path, ["us", "eu", "us"])
    with pytest.raises(ConfigError, match="invalid region name"):
        new_config(tmp_path, ["us", "EU"])


def test_new_config_defaults(tmp_path: Path) -> None:
    config = new_config(tmp_path / "dep", ["us", "eu"])
    assert config.name == "dep"
    assert config.region_names == ["us", "eu"]
    us = config.region("us")
    assert us.store == "sqlite:///regions/us/store.sqlite"
    assert us.backup_targets == ("file://backups/us",)
    assert us.policy == {}
    assert config.limits == Limits()


def assert_same(a: DeploymentConfig, b: DeploymentConfig) -> None:
    assert a.root == b.root
    assert a.name == b.name
    assert a.region_names == b.region_names
    assert a.regions == b.regions
    assert a.limits == b.limits


def test_round_trip_new_config_to_toml_parse(tmp_path: Path) -> None:
    config = new_config(tmp_path, ["us", "eu", "ap_south"], name="prod")
    assert_same(parse_config(tmp_path, tomllib.loads(config.to_toml())), config)


def test_round_trip_with_custom_limits_and_policy(tmp_path: Path) -> None:
    config = DeploymentConfig(
        root=tmp_path.resolve(),
        name="custom",
        regions={
            "eu": RegionConfig(
                name="eu",
                store="sqlite:////abs/eu.sqlite?synchronous=full",
                backup_targets=("file://b1", "s3://bucket/eu"),
                policy={"min_creator_age": 16, "retention": {"events_days": 90}},
            ),
            "us": RegionConfig(name="us", store="sqlite:///us.sqlite"),
        },
        limits=Limits(max_batch=10, max_future_skew_s=1, max_watch_ms=2, max_duration_ms=3),
    )
    write_config(config)
    assert_same(load_config(tmp_path), config)


def test_write_config_creates_the_directory(tmp_path: Path) -> None:
    config = new_config(tmp_path / "a" / "b", ["us"])
    path = write_config(config)
    assert path == tmp_path.resolve() / "a" / "b" / CONFIG_FILE
    assert_same(load_config(tmp_path / "a" / "b"), config)


# -- [feed] ------------------------------------------------------------------------------
def test_feed_section_is_read_and_round_trips(tmp_path: Path) -> None:
    raw = {
        "seen_window_days": 7,
        "state_cache_users": 500,
        "proposal_cache_users": 0,
        "rank_ahead": 30,
    }
    config = parse_config(tmp_path, minimal(feed=raw))
    assert config.feed == FeedConfig(7.0, 500, 0, 30)
    assert config.feed.seen_window_ms == 7 * 86_400_000
    assert parse_config(tmp_path, tomllib.loads(config.to_toml())).feed == config.feed
    assert parse_config(tmp_path, minimal()).feed == FeedConfig()


@pytest.mark.parametrize(
    ("feed", "match"),
    [
        ({"window": 3}, "unknown key 'window' in \\[feed\\]"),
        ({"seen_window_days": 0}, "seen_window_days must be a number over 0"),
        ({"seen_window_days": True}, "seen_window_days must be a number over 0"),
        ({"state_cache_users": -1}, "state_cache_users must be an integer >= 0"),
        ({"proposal_cache_users": 2.5}, "proposal_cache_users must be an integer >= 0"),
        ({"proposal_cache_users": False}, "proposal_cache_users must be an integer >= 0"),
        ({"rank_ahead": -5}, "rank_ahead must be an integer >= 0"),
    ],
)
def test_bad_feed_settings_are_refused(tmp_path: Path, feed: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(tmp_path, minimal(feed=feed))


# -- [training] and unknown sections ------------------------------------------------------
def test_training_section_is_read_and_round_trips(tmp_path: Path) -> None:
    config = parse_config(tmp_path, minimal(training={"every_minutes": 15}))
    assert config.training == TrainingConfig(15.0)
    assert parse_config(tmp_path, tomllib.loads(config.to_toml())).training == config.training
    assert parse_config(tmp_path, minimal()).training == TrainingConfig(60.0)
    moderation = parse_config(tmp_path, minimal(moderation={"every_seconds": 5}))
    assert moderation.moderation == ModerationConfig(5.0)
    assert parse_config(tmp_path, tomllib.loads(moderation.to_toml())) == moderation
    off = parse_config(tmp_path, minimal(training={"every_minutes": 0}))
    assert off.training.every_minutes == 0


@pytest.mark.parametrize(
    ("training", "match"),
    [
        ({"every_minute": 3}, "'every_minute' in \\[training\\]; did you mean 'every_minutes'"),
        ({"every_minutes": -1}, "every_minutes must be a number at least 0"),
        ({"every_minutes": True}, "every_minutes must be a number at least 0"),
        ({"every_minutes": "hourly"}, "every_minutes must be a number at least 0"),
    ],
)
def test_bad_training_settings_are_refused(
    tmp_path: Path, training: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(tmp_path, minimal(training=training))


@pytest.mark.parametrize(
    ("moderation", "match"),
    [
        ({"every_second": 3}, "'every_second' in \\[moderation\\]; did you mean 'every_seconds'"),
        ({"every_seconds": -1}, "every_seconds must be a number at least 0"),
        ({"every_seconds": float("nan")}, "every_seconds must be a number at least 0"),
    ],
)
def test_bad_moderation_settings_are_refused(
    tmp_path: Path, moderation: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(tmp_path, minimal(moderation=moderation))


def test_a_misspelt_section_is_refused_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown sections in fyp\.toml: \['trainig'\]; did you mean 'training'\?",
    ):
        parse_config(tmp_path, minimal(trainig={"every_minutes": 5}))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            {"regions": {"us": {"store": "sqlite:///x", "backup_target": ["file://b"]}}},
            r"unknown key 'backup_target' in \[regions\.us\]; did you mean 'backup_targets'\?",
        ),
        (
            {"deployment": {"nmae": "x"}, "regions": {"us": {"store": "sqlite:///x"}}},
            r"unknown key 'nmae' in \[deployment\]; did you mean 'name'\?",
        ),
        (
            minimal(erasure={"retrain_within_hour": 2}),
            r"'retrain_within_hour' in \[erasure\]; did you mean 'retrain_within_hours'",
        ),
        (
            minimal(ranking={"objective_weights": {"likes": 1}}),
            r"unknown key 'likes' in \[ranking\.objective_weights\]; did you mean 'like'",
        ),
    ],
)
def test_an_unknown_key_in_any_table_is_refused_with_a_close_match(
    tmp_path: Path, raw: dict[str, Any], match: str
) -> None:
    """A misspelt key was ignored in [regions.NAME] and [deployment]: a region whose
    ``backup_target`` was misspelt passed ``fyp status`` with no backup target at all."""
    with pytest.raises(ConfigError, match=match):
        parse_config(tmp_path, raw)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("erasure", "retrain_within_hours"),
        ("erasure", "check_every_minutes"),
        ("training", "every_minutes"),
        ("feed", "seen_window_days"),
        ("ranking.objective_weights", "like"),
    ],
)
def test_a_float_setting_must_be_finite(tmp_path: Path, section: str, key: str, value: str) -> None:
    """TOML parses ``nan`` and ``inf``, and every ``<`` check lets nan through:
    ``retrain_within_hours = nan`` crashed ``fyp erasure erase`` halfway, rows deleted."""
    (tmp_path / "fyp.toml").write_text(
        f'[regions.us]\nstore = "sqlite:///x"\n\n[{section}]\n{key} = {value}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=rf"\[{re.escape(section)}\] {key} must be a number"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("erasure", "retrain_within_hours", 1e9),
        ("erasure", "check_every_minutes", 1e300),
        ("training", "every_minutes", 1e12),
        ("feed", "seen_window_days", 1e7),
        ("ranking.objective_weights", "share", -1e6),
    ],
)
def test_a_float_setting_must_be_in_range(
    tmp_path: Path, section: str, key: str, value: float
) -> None:
    (tmp_path / "fyp.toml").write_text(
        f'[regions.us]\nstore = "sqlite:///x"\n\n[{section}]\n{key} = {value!r}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="at most"):
        load_config(tmp_path)


def test_a_misspelt_policy_key_stops_every_command(tmp_path: Path) -> None:
    """It was found only by commands that moderate; `fyp train` or `fyp backup` ran on."""
    from fyp.regions.deployment import Deployment

    Deployment.init(tmp_path / "d", ["us"]).close()
    toml = tmp_path / "d" / "fyp.toml"
    text = toml.read_text(encoding="utf-8").replace(
        "[regions.us.policy]\n", '[regions.us.policy]\nbanned_term = ["x"]\n'
    )
    toml.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="banned_terms"):
        load_config(tmp_path / "d")


def test_the_settings_table_of_the_architecture_doc_is_every_setting() -> None:
    """docs/architecture.md lists each fyp.toml setting with its default: a setting added
    to fyp.config, or one removed, fails here until the table says so."""
    from fyp.config import OBJECTIVES, REGION_KEYS, ErasureConfig, RankingConfig

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text("utf-8")
    rows = re.findall(r"^\| `\[([a-z_.A-Z]+)\] ([a-z_]+)`([^|]*)\| ([^|]+) \|", doc, re.M)
    listed = {(table, key) for table, key, _, _ in rows}
    for table, _key, more, _ in rows:  # "`[t] a`, `b`, `c`" lists several keys of one table
        listed |= {(table, k) for k in re.findall(r"`([a-z_]+)`", more)}
    from fyp.moderation.reports import DEFAULTS as REPORT_DEFAULTS
    from fyp.regions.consent import KEYS as CONSENT_KEYS
    from fyp.sovereignty.move_policy import KEYS as MOVE_KEYS
    from fyp.sovereignty.retention import KEYS as RETENTION_KEYS

    expected = {("deployment", "name")} | {("regions.NAME", k) for k in REGION_KEYS}
    expected |= {("regions.NAME.policy.moves", k) for k in MOVE_KEYS}
    expected |= {("regions.NAME.policy.retention", k) for k in RETENTION_KEYS}
    expected |= {("regions.NAME.policy.consent", k) for k in CONSENT_KEYS}
    expected |= {("regions.NAME.policy.reports", k) for k in REPORT_DEFAULTS}
    sections = (
        ("limits", Limits),
        ("feed", FeedConfig),
        ("erasure", ErasureConfig),
        ("training", TrainingConfig),
        ("moderation", ModerationConfig),
        ("serving", ServingConfig),
    )
    for table, cls in sections:
        expected |= {(table, k) for k in cls.__dataclass_fields__ if k not in FEED_TABLES}
    expected |= {("feed.sources", k) for k in SourceQuotas.__dataclass_fields__}
    expected |= {("feed.rerank", k) for k in RerankParams.__dataclass_fields__}
    expected |= {("ranking", "scorer")} | {("ranking.objective_weights", k) for k in OBJECTIVES}
    from fyp.experiments.config import EXPERIMENT_KEYS, VARIANT_KEYS

    expected |= {("experiments.NAME", k) for k in EXPERIMENT_KEYS if k != "variants"}
    expected |= {("experiments.NAME.variants.VARIANT", k) for k in VARIANT_KEYS}
    assert listed == expected, (sorted(listed - expected), sorted(expected - listed))
    defaults = {(t, k): d.strip() for t, k, _, d in rows}
    for table, cls in (*sections, ("feed.sources", SourceQuotas), ("feed.rerank", RerankParams)):
        for key in cls.__dataclass_fields__:
            if cls is FeedConfig and key in FEED_TABLES:
                continue
            value = getattr(cls, key)
            shown = f"{value:g}" if isinstance(value, float) else str(value) or '`""`'
            assert defaults[table, key] == shown, (table, key, defaults[table, key], shown)
    assert defaults["ranking", "scorer"] == f"`{RankingConfig.scorer}`"
    for key, value in REPORT_DEFAULTS.items():
        assert defaults["regions.NAME.policy.reports", key].startswith(str(value)), key


def _with_consent_table(tmp_path: Path, body: str, table: str = "consent") -> Path:
    from fyp.regions.deployment import Deployment

    Deployment.init(tmp_path / "d", ["us"]).close()
    toml = tmp_path / "d" / "fyp.toml"
    toml.write_text(toml.read_text("utf-8") + f"\n[regions.us.policy.{table}]\n{body}\n", "utf-8")
    return tmp_path / "d"


def test_the_consent_table_sets_each_keys_default(tmp_path: Path) -> None:
    from fyp.regions.consent import consent_policy, effective

    config = load_config(_with_consent_table(tmp_path, "model_training = false"))
    policy = consent_policy(config, "us")
    assert policy.to_dict() == {"personalised_feed": True, "model_training": False}
    assert effective({}, policy, "model_training") is False  # opt-in: not without a yes
    assert effective({"model_training": True}, policy, "model_training") is True
    assert (
        effective(None, consent_policy(load_config(tmp_path / "d"), "us"), "model_training")
        is False
    )


def test_without_a_consent_table_users_are_learned_from_unless_they_object(
    tmp_path: Path,
) -> None:
    from fyp.regions.consent import consent_policy, effective
    from fyp.regions.deployment import Deployment

    Deployment.init(tmp_path / "d", ["us"]).close()
    policy = consent_policy(load_config(tmp_path / "d"), "us")
    assert effective({}, policy, "model_training") is True
    assert effective({"model_training": False}, policy, "model_training") is False


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("model_trainig = false", "did you mean 'model_training'"),
        ('model_training = "no"', "must be true or false"),
        ("model_training = 0", "must be true or false"),
    ],
)
def test_a_bad_consent_table_stops_every_command(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_with_consent_table(tmp_path, body))


def test_the_reports_table_sets_each_threshold(tmp_path: Path) -> None:
    from fyp.moderation.reports import ReportPolicy, parse_reports

    body = "review_reporters = 5\nhold_reporters = 0\nwindow_days = 30"
    config = load_config(_with_consent_table(tmp_path, body, "reports"))
    policy = parse_reports("us", config.region("us").policy)
    assert policy == ReportPolicy(review_reporters=5, hold_reporters=0, window_days=30)
    assert parse_reports("eu", {}).to_dict() == {
        "review_reporters": 3,
        "hold_reporters": 10,
        "window_days": 7,
    }


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("review_reporter = 3", "did you mean 'review_reporters'"),
        ("hold_at = 3", "unknown key 'hold_at'.*known keys: hold_reporters"),
        ('review_reporters = "3"', "must be a whole number from 1"),
        ("review_reporters = 2.5", "must be a whole number"),
        ("review_reporters = true", "must be a whole number"),
        ("review_reporters = 0", "must be a whole number from 1"),
        ("hold_reporters = -1", "must be a whole number from 0"),
        ("window_days = 0", "must be a whole number from 1 to 365"),
        ("window_days = 400", "from 1 to 365"),
        ("review_reporters = 5\nhold_reporters = 4", "at least review_reporters"),
    ],
)
def test_a_bad_reports_table_stops_every_command(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_with_consent_table(tmp_path, body, "reports"))
