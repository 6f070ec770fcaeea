"""``[regions.NAME.policy.consent]``: the region defaults of users' consents, checked when
``fyp.toml`` is loaded, and the effective consent of a user."""

from __future__ import annotations

from pathlib import Path

import pytest

from fyp.config import load_config
from fyp.errors import ConfigError
from fyp.moderation.policy import parse_policy
from fyp.regions.consent import (
    DEFAULTS,
    MODEL_TRAINING,
    PERSONALISED_FEED,
    ConsentPolicy,
    consent_policy,
    effective,
    parse_consent,
)


def config_with(tmp_path: Path, table: str) -> Path:
    (tmp_path / "fyp.toml").write_text(
        '[regions.us]\nstore = "sqlite:///x"\n\n[regions.eu]\nstore = "sqlite:///y"\n\n'
        f"[regions.us.policy]\nbanned_terms = []\n\n{table}",
        encoding="utf-8",
    )
    return tmp_path


def test_the_default_is_personalised_when_the_region_says_nothing(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, ""))
    assert consent_policy(config, "us").default(PERSONALISED_FEED) is True
    assert DEFAULTS == {PERSONALISED_FEED: True, MODEL_TRAINING: True}


def test_a_region_default_is_read_beside_moderations_keys(tmp_path: Path) -> None:
    table = "[regions.us.policy.consent]\npersonalised_feed = false\n"
    config = load_config(config_with(tmp_path, table))
    assert consent_policy(config, "us").default(PERSONALISED_FEED) is False
    assert consent_policy(config, "eu").default(PERSONALISED_FEED) is True
    parse_policy("us", config.region("us").policy)  # moderation leaves the sub-table alone


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (
            "personalized_feed = false\n",
            "unknown key 'personalized_feed'.*did you mean 'personalised_feed'",
        ),
        ("ads = true\n", "unknown key 'ads'.*known keys: model_training, personalised_feed"),
        ('personalised_feed = "no"\n', "personalised_feed must be true or false"),
        ("personalised_feed = 0\n", "personalised_feed must be true or false"),
    ],
)
def test_a_bad_consent_table_stops_every_command(tmp_path: Path, table: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(config_with(tmp_path, f"[regions.us.policy.consent]\n{table}"))


def test_a_consent_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[regions.us.policy.consent\] must be a table"):
        parse_consent("us", {"consent": True})


@pytest.mark.parametrize(
    ("recorded", "default", "want"),
    [
        (None, True, True),
        ({}, False, False),
        ({"ads": False}, True, True),  # another key says nothing of this one
        ({PERSONALISED_FEED: False}, True, False),  # the user's own answer decides
        ({PERSONALISED_FEED: True}, False, True),
    ],
)
def test_the_users_own_answer_decides_else_the_regions_default(
    recorded: dict[str, bool] | None, default: bool, want: bool
) -> None:
    policy = ConsentPolicy({PERSONALISED_FEED: default})
    assert effective(recorded, policy, PERSONALISED_FEED) is want
