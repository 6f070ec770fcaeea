"""Region policies: parsing, defaults, and a clear ConfigError for any unknown key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from moderation_helpers import with_policies

from fyp.errors import ConfigError
from fyp.moderation import parse_policy
from fyp.moderation.policy import DEFAULT_MATURITY, KNOWN_KEYS


def test_defaults() -> None:
    p = parse_policy("us", {})
    assert p.min_creator_age == 16
    assert p.creator_age_unknown == "deny" and p.unknown_creator == "imported"
    assert p.maturity == DEFAULT_MATURITY and p.auto_approve
    assert p.banned_terms == () and len(p.digest()) == 16


def test_values_are_read_and_deduplicated() -> None:
    p = parse_policy(
        "eu",
        {
            "banned_terms": ["赌博", " 赌博 ", "casino"],
            "min_creator_age": 18,
            "duplicate_threshold": 1,
            "maturity": {"mature": "restrict"},
            "auto_approve": False,
            "retention": {"days": 30},  # another capability's sub-table: its own keys
        },
    )
    assert p.banned_terms == ("赌博", "casino")
    assert p.min_creator_age == 18 and p.duplicate_threshold == 1.0
    assert p.maturity == {**DEFAULT_MATURITY, "mature": "restrict"}
    assert p.digest() != parse_policy("eu", {}).digest()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"banned_term": ["x"]}, "did you mean 'banned_terms'"),
        ({"blocklist": ["x"]}, "unknown moderation policy key 'blocklist'"),
        ({"maturty": {"mature": "reject"}}, "did you mean 'maturity'"),
        # a misspelt capability sub-table would silently leave its settings off
        ({"retension": {"events_days": 30}}, "did you mean 'retention'"),
        ({"consents": {"model_training": False}}, "did you mean 'consent'"),
        ({"privacy": {"x": 1}}, "unknown moderation policy key 'privacy'"),
        ({"retention": 30}, "unknown moderation policy key 'retention'"),
        ({"banned_terms": "赌博"}, "must be a list of non-empty strings"),
        ({"banned_terms": [""]}, "must be a list of non-empty strings"),
        ({"min_creator_age": 13}, "between 16 and 120"),
        ({"min_creator_age": True}, "must be an integer"),
        ({"duplicate_threshold": 0}, "between 0.05 and 1.0"),
        ({"unknown_creator": "maybe"}, "must be one of"),
        ({"auto_approve": "yes"}, "true or false"),
        ({"maturity": {"teen": "approve"}}, "unknown maturity levels"),
        ({"maturity": {"mature": "hide"}}, "the action must be one of"),
        ({"maturity": "strict"}, "must be a table"),
    ],
)
def test_bad_policies_are_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_policy("us", raw)
    assert "[regions.us.policy" in err.value.message


def test_unknown_key_message_lists_known_keys() -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy("us", {"bogus": 1})
    for key in KNOWN_KEYS:
        assert key in err.value.message
    assert err.value.details == {"region": "us", "key": "bogus"}


def test_a_bad_fyp_toml_fails_when_the_deployment_opens(tmp_path: Path) -> None:
    """Before anything runs (moderation, the server, or any other command)."""
    with pytest.raises(ConfigError, match="typo_key"):
        with_policies(tmp_path / "d", {"us": {"banned_terms": ["x"], "typo_key": 1}})


def test_every_policy_key_is_in_the_docs_policy_example() -> None:
    """docs/moderation.md ("Policy") and the module docstring show every key a policy
    table may hold, and no other: a key added to RegionPolicy fails here until both do."""
    import fyp.moderation.policy as module

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "moderation.md").read_text("utf-8")
    block = doc.split("## Policy", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    for text in (block, module.__doc__ or ""):
        shown = set(re.findall(r"^\s*([a-z_]+) = ", text, re.M))
        shown |= {"maturity"} if "policy.maturity]" in text else set()
        shown -= set(DEFAULT_MATURITY)  # the [...policy.maturity] table's own keys
        assert shown == set(KNOWN_KEYS), (
            sorted(shown - set(KNOWN_KEYS)),
            sorted(set(KNOWN_KEYS) - shown),
        )
