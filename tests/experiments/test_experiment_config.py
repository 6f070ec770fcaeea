"""``[experiments.NAME]``: parsing, validation and the fyp.toml round trip."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fyp.config import RankingConfig, parse_config
from fyp.errors import ConfigError
from fyp.experiments.config import Variant


def deployment(experiments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    regions = {r: {"store": f"sqlite:///{r}.sqlite"} for r in ("us", "eu", "ap")}
    return {"regions": regions, "experiments": experiments, **extra}


def one(variants: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"exp": {"start": "2025-03-01", "variants": variants, **more}}


MO = {"scorer": "multi_objective"}


def test_a_full_experiment_is_read(tmp_path: Path) -> None:
    raw = one(
        {
            "b_more_likes": {"share": 0.25, **MO, "objective_weights": {"like": 3}},
            "a_explore": {"share": 0.1, "exploration_share": 0.2},
        },
        regions=["us", "eu"],
        salt="s1",
    )
    config = parse_config(tmp_path, deployment(raw))
    (exp,) = config.experiments
    assert exp.start == datetime(2025, 3, 1, tzinfo=UTC)
    assert exp.regions == ("us", "eu") and exp.salt == "s1"
    assert [v.name for v in exp.variants] == ["a_explore", "b_more_likes"]  # name order
    assert exp.shares == (("a_explore", 0.1), ("b_more_likes", 0.25))
    assert exp.arms == ["control", "a_explore", "b_more_likes"]
    explore, likes = exp.variants
    assert explore == Variant("a_explore", 0.1, None, (), 0.2)
    # a partial table: the other weights are [ranking]'s
    weights = dict(likes.ranking(config.ranking).objective_weights)
    assert weights == {**dict(RankingConfig.objective_weights), "like": 3.0}
    assert likes.ranking(config.ranking).scorer == "multi_objective"
    assert explore.ranking(config.ranking) == config.ranking
    assert config.experiment_in("us") is exp and config.experiment_in("ap") is None


def test_defaults_all_regions_and_the_name_as_salt(tmp_path: Path) -> None:
    config = parse_config(tmp_path, deployment(one({"b": {"share": 0.5}})))
    (exp,) = config.experiments
    assert exp.regions == ("us", "eu", "ap") and exp.all_regions and exp.salt == "exp"


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2025-03-01T12:30:00Z", datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),
        ("2025-03-01T12:30:00+02:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
        ("2025-03-01 12:30", datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),  # naive: UTC
    ],
)
def test_start_is_an_iso_date_or_time_in_utc(
    tmp_path: Path, start: str, expected: datetime
) -> None:
    raw = {"exp": {"start": start, "variants": {"b": {"share": 0.5}}}}
    assert parse_config(tmp_path, deployment(raw)).experiments[0].start == expected


def test_a_toml_date_time_is_a_start_too(tmp_path: Path) -> None:
    text = (
        '[regions.us]\nstore = "sqlite:///x"\n[experiments.exp]\nstart = 2025-03-01T08:00:00Z\n'
        "[experiments.exp.variants.b]\nshare = 0.5\n"
    )
    config = parse_config(tmp_path, tomllib.loads(text))
    assert config.experiments[0].start == datetime(2025, 3, 1, 8, tzinfo=UTC)


def test_end_is_optional_and_read_like_start(tmp_path: Path) -> None:
    config = parse_config(tmp_path, deployment(one({"b": {"share": 0.5}})))
    (exp,) = config.experiments
    assert exp.end is None and exp.end_ms is None and not exp.ended(2**62)
    raw = one({"b": {"share": 0.5}}, end="2025-03-08T12:00:00+02:00")
    (exp,) = parse_config(tmp_path, deployment(raw)).experiments
    assert exp.end == datetime(2025, 3, 8, 10, tzinfo=UTC)
    assert exp.end_ms == 1_741_428_000_000  # 2025-03-08T10:00:00Z
    assert not exp.ended(exp.end_ms - 1) and exp.ended(exp.end_ms)  # over from end on
    text = (
        '[regions.us]\nstore = "sqlite:///x"\n[experiments.exp]\nstart = 2025-03-01\n'
        "end = 2025-03-15\n[experiments.exp.variants.b]\nshare = 0.5\n"
    )
    (exp,) = parse_config(tmp_path, tomllib.loads(text)).experiments
    assert exp.end == datetime(2025, 3, 15, tzinfo=UTC)


def test_round_trip(tmp_path: Path) -> None:
    raw = one(
        {"b": {"share": 0.3, **MO, "objective_weights": {"skip": -2}, "exploration_share": 0}},
        regions=["eu"],
        salt="x",
        end="2025-04-01T06:00:00Z",
    )
    raw |= {"other": {"start": "2025-01-01T00:00:00+00:00", "regions": ["us"], "variants": {}}}
    raw["other"]["variants"] = {"c": {"share": 1.0}}
    config = parse_config(tmp_path, deployment(raw))
    again = parse_config(tmp_path, tomllib.loads(config.to_toml()))
    assert again.experiments == config.experiments
    everywhere = parse_config(tmp_path, deployment(one({"b": {"share": 0.5}})))
    assert "regions" not in tomllib.loads(everywhere.to_toml())["experiments"]["exp"]


def test_a_deployment_without_experiments_has_none(tmp_path: Path) -> None:
    config = parse_config(tmp_path, {"regions": {"us": {"store": "sqlite:///x"}}})
    assert config.experiments == () and config.experiment_in("us") is None
    assert "experiments" not in tomllib.loads(config.to_toml())


@pytest.mark.parametrize(
    ("experiments", "match"),
    [
        ({"exp": {"variants": {"b": {"share": 0.5}}}}, r"\[experiments\.exp\] needs a start"),
        (one({"b": {"share": 0.5}}, start="soon"), r"start must be a date or date-time"),
        (one({"b": {"share": 0.5}}, end="later"), r"\] end must be a date or date-time"),
        (
            one({"b": {"share": 0.5}}, end="2025-03-01"),
            r"end \(2025-03-01T00:00:00\+00:00\) "
            r"must be after start \(2025-03-01T00:00:00\+00:00\)",
        ),
        (one({"b": {"share": 0.5}}, end="2025-03-01T01:00:00+02:00"), r"must be after start"),
        (one({"b": {"share": 0.5}}, ends="2025-04-01"), r"unknown key 'ends'.*did you mean 'end'"),
        (one({"b": {"share": 0.5}}, strat=1), r"unknown key 'strat'.*did you mean 'start'"),
        (one({"b": {"share": 0.5}}, regions=["mars"]), r"'mars', which is not a declared region"),
        (one({"b": {"share": 0.5}}, regions=[]), r"regions must be a list of region names"),
        (one({"b": {"share": 0.5}}, salt=""), r"salt must be a non-empty string"),
        (one({}), r"needs at least one \[experiments\.exp\.variants\.NAME\]"),
        (one({"b": {}}), r"\[experiments\.exp\.variants\.b\] needs a share"),
        (one({"b": {"share": 0}}), r"share must be a number over 0 and at most 1"),
        (one({"b": {"share": 1.5}}), r"share must be a number over 0"),
        (one({"b": {"share": float("nan")}}), r"share must be a number"),
        (one({"b": {"share": 0.6}, "c": {"share": 0.5}}), r"add up to more than 1"),
        (one({"control": {"share": 0.5}}), r"may not be named 'control'"),
        (one({"B": {"share": 0.5}}), r"invalid variant name 'B'"),
        ({"Exp": one({"b": {"share": 0.5}})["exp"]}, r"invalid experiment name 'Exp'"),
        (one({"b": {"share": 0.5, "shares": 1}}), r"unknown key 'shares'.*did you mean 'share'"),
        (one({"b": {"share": 0.5, "scorer": "magic"}}), r"scorer must be one of"),
        (
            one({"b": {"share": 0.5, **MO, "objective_weights": {"likes": 1}}}),
            r"unknown key 'likes' in \[experiments\.exp\.variants\.b\.objective_weights\]; "
            "did you mean 'like'",
        ),
        (
            one({"b": {"share": 0.5, **MO, "objective_weights": {"like": 1e6}}}),
            r"\[experiments\.exp\.variants\.b\.objective_weights\] like must be a number",
        ),
        (
            one({"b": {"share": 0.5, **MO, "objective_weights": 3}}),
            r"objective_weights\] must be a table",
        ),
        (
            one({"b": {"share": 0.5, "objective_weights": {"like": 2}}}),
            r"objective_weights only change the multi_objective scorer",
        ),
        (one({"b": {"share": 0.5, "exploration_share": 2}}), r"exploration_share must be"),
        (
            {
                "one": one({"b": {"share": 0.5}}, regions=["us", "eu"])["exp"],
                "two": one({"b": {"share": 0.5}}, regions=["eu"])["exp"],
            },
            r"experiments 'one' and 'two' both run in region 'eu': at most one experiment",
        ),
        (
            {"one": one({"b": {"share": 0.5}})["exp"], "two": one({"b": {"share": 0.5}})["exp"]},
            r"both run in region 'us'",
        ),
        ({"exp": "x"}, r"\[experiments\.exp\] must be a table"),
    ],
)
def test_bad_experiments_are_refused(
    tmp_path: Path, experiments: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(tmp_path, deployment(experiments))


def test_objective_weights_are_fine_when_ranking_uses_the_heads_already(tmp_path: Path) -> None:
    raw = one({"b": {"share": 0.5, "objective_weights": {"like": 2}}})
    config = parse_config(tmp_path, deployment(raw, ranking={"scorer": "multi_objective"}))
    assert dict(config.experiments[0].variants[0].objective_weights) == {"like": 2.0}


def test_experiments_in_disjoint_regions_may_run_together(tmp_path: Path) -> None:
    raw = {
        "one": one({"b": {"share": 0.5}}, regions=["us"])["exp"],
        "two": one({"b": {"share": 0.5}}, regions=["eu", "ap"])["exp"],
    }
    config = parse_config(tmp_path, deployment(raw))
    assert [config.experiment_in(r).name for r in ("us", "eu", "ap")] == ["one", "two", "two"]  # type: ignore[union-attr]
