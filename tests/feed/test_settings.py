"""``[feed.sources]`` and ``[feed.rerank]`` in fyp.toml (``fyp.feed.settings``): parsed
and checked whole, the defaults the pipeline had before, and a variant's overrides."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fyp.config import FeedConfig, load_config, new_config, parse_config, write_config
from fyp.errors import ConfigError
from fyp.experiments.config import parse_experiments
from fyp.feed.candidates import (
    CategoryInterest,
    CoEngagement,
    EmbeddingRetrieval,
    Following,
    Fresh,
    Trending,
    configured_sources,
    default_sources,
)
from fyp.feed.impersonal import impersonal_pipeline
from fyp.feed.settings import MAX_QUOTA, SOURCE_NAMES, RerankParams, SourceQuotas


def config(tmp_path: Path, **feed: Any) -> Any:
    raw = {"regions": {"us": {"store": "sqlite:///regions/us/store.sqlite"}}, "feed": feed}
    return parse_config(tmp_path, raw)


def refused(tmp_path: Path, **feed: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, **feed)
    return info.value


def test_nothing_set_is_the_pipeline_as_it_was(tmp_path: Path) -> None:
    """The defaults are the quotas and re-ranker the pipeline was tuned with: a
    deployment that sets nothing ranks exactly as before (and the KuaiRec figures)."""
    feed = config(tmp_path).feed
    assert feed.sources == SourceQuotas() and feed.rerank == RerankParams()
    made = [(type(s), s.quota) for s in default_sources()]
    assert made == [
        (CoEngagement, 200),
        (EmbeddingRetrieval, 200),
        (Trending, 300),
        (Following, 50),
        (Fresh, 30),
        (CategoryInterest, 90),
    ]
    fresh = next(s for s in default_sources() if isinstance(s, Fresh))
    assert fresh.max_impressions == 50
    assert RerankParams() == RerankParams(0.5, 0.9, 0.2, 4, 0.0, 0.05)
    assert [s.name for s in default_sources()] == list(SOURCE_NAMES)


def test_quotas_and_rerank_settings_are_read(tmp_path: Path) -> None:
    feed = config(
        tmp_path,
        sources={"trending": 400, "fresh": 0, "fresh_max_impressions": 10},
        rerank={"exploration_share": 0.2, "tag_window": 0, "floor": 1},
    ).feed
    assert feed.sources == replace(SourceQuotas(), trending=400, fresh=0, fresh_max_impressions=10)
    assert feed.rerank == replace(RerankParams(), exploration_share=0.2, tag_window=0, floor=1.0)
    sources = configured_sources(feed.sources)
    assert "fresh" not in [s.name for s in sources]  # 0: not asked at all
    assert next(s.quota for s in sources if s.name == "trending") == 400
    # the feed not based on profiling takes trending's and fresh's quotas
    impersonal = impersonal_pipeline(feed.rerank, feed.sources)
    assert [(s.name, s.quota) for s in impersonal.sources] == [("trending", 400)]
    assert impersonal.rerank.exploration_share == 0.2


@pytest.mark.parametrize(
    ("feed", "table", "key", "says"),
    [
        ({"sources": {"trendy": 3}}, "feed.sources", "trendy", "did you mean 'trending'"),
        ({"sources": {"trending": -1}}, "feed.sources", "trending", "integer >= 0"),
        ({"sources": {"fresh": 2.5}}, "feed.sources", "fresh", "integer >= 0"),
        ({"sources": {"fresh": True}}, "feed.sources", "fresh", "integer >= 0"),
        ({"sources": {"embedding": "10"}}, "feed.sources", "embedding", "integer >= 0"),
        ({"sources": {"trending": MAX_QUOTA + 1}}, "feed.sources", "trending", "at most"),
        ({"sources": {"fresh_max_impressions": -5}}, "feed.sources", "fresh_max_impressions", ""),
        ({"rerank": {"exploration_share": 1.5}}, "feed.rerank", "exploration_share", "at most 1"),
        ({"rerank": {"creator_decay": -0.1}}, "feed.rerank", "creator_decay", "at least 0"),
        ({"rerank": {"floor": float("nan")}}, "feed.rerank", "floor", "a number"),
        ({"rerank": {"tag_window": -1}}, "feed.rerank", "tag_window", "integer >= 0"),
        ({"rerank": {"tag_window": 2.0}}, "feed.rerank", "tag_window", "integer >= 0"),
        ({"rerank": {"explore": 0.1}}, "feed.rerank", "explore", "unknown key"),
    ],
)
def test_a_wrong_setting_is_a_config_error_naming_it(
    tmp_path: Path, feed: dict[str, Any], table: str, key: str, says: str
) -> None:
    error = refused(tmp_path, **feed)
    assert error.details.get("section") == table and error.details.get("key") == key
    assert f"[{table}]" in error.message and key in error.message and says in error.message


def test_a_sources_or_rerank_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    assert "[feed.sources] must be a table" in refused(tmp_path, sources=300).message
    assert "[feed.rerank] must be a table" in refused(tmp_path, rerank=[0.1]).message


def test_the_settings_round_trip_through_fyp_toml(tmp_path: Path) -> None:
    base = new_config(tmp_path, ["us"])
    tuned = FeedConfig.from_dict({"sources": {"following": 0}, "rerank": {"tag_decay": 0.5}})
    write_config(replace(base, feed=tuned))
    assert load_config(tmp_path).feed == tuned
    written = (tmp_path / "fyp.toml").read_text("utf-8")
    assert "[feed.sources]" in written and "[feed.rerank]" in written


@given(
    st.fixed_dictionaries(
        {},
        optional={k: st.integers(0, MAX_QUOTA) for k in SourceQuotas.__dataclass_fields__},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            **{k: st.floats(0, 1) for k in ("creator_decay", "floor", "exploration_share")},
            "tag_window": st.integers(0, 50),
        },
    ),
)
def test_any_valid_table_sets_exactly_its_keys(
    sources: dict[str, int], rerank: dict[str, Any]
) -> None:
    """Each key given takes its value, every other keeps its default; and the sources
    made from it are the six in order, less those at 0, with their quotas."""
    feed = FeedConfig.from_dict({"sources": sources, "rerank": rerank})
    assert feed.sources.to_dict() == {**SourceQuotas().to_dict(), **sources}
    assert feed.rerank.to_dict() == {**RerankParams().to_dict(), **rerank}
    quotas = feed.sources.to_dict()
    made = [(s.name, s.quota) for s in configured_sources(feed.sources)]
    assert made == [(n, quotas[n]) for n in SOURCE_NAMES if quotas[n] > 0]


# -- a variant's overrides ------------------------------------------------------------


def variant(tmp_path: Path, **body: Any) -> Any:
    regions = config(tmp_path).regions
    raw = {"x": {"start": "2025-01-01", "variants": {"b": {"share": 0.5, **body}}}}
    return parse_experiments(raw, regions, config(tmp_path).ranking)[0].variants[0]


def test_a_variant_overrides_part_of_each_table(tmp_path: Path) -> None:
    v = variant(tmp_path, sources={"fresh": 0}, rerank={"exploration_share": 0.3})
    base = replace(SourceQuotas(), trending=400)  # the deployment's, under the variant's
    assert v.quotas(base) == replace(base, fresh=0)
    assert v.reranking(RerankParams(tag_window=2)) == RerankParams(
        tag_window=2, exploration_share=0.3
    )
    assert v.to_dict() == {
        "share": 0.5,
        "sources": {"fresh": 0},
        "rerank": {"exploration_share": 0.3},
    }
    plain = variant(tmp_path, exploration_share=0.2)  # as before: the share alone
    assert plain.quotas(base) is None  # control's sources
    assert plain.reranking(RerankParams()) == RerankParams(exploration_share=0.2)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"sources": {"trend": 1}}, "unknown key 'trend' in [experiments.x.variants.b.sources]"),
        ({"sources": {"fresh": -1}}, "[experiments.x.variants.b.sources] fresh must be"),
        ({"rerank": {"floor": 2}}, "[experiments.x.variants.b.rerank] floor must be"),
        ({"rerank": 0.1}, "[experiments.x.variants.b.rerank] must be a table"),
        (
            {"exploration_share": 0.1, "rerank": {"exploration_share": 0.2}},
            "sets exploration_share twice",
        ),
    ],
)
def test_a_wrong_override_is_refused(tmp_path: Path, body: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        variant(tmp_path, **body)
    assert says in info.value.message
