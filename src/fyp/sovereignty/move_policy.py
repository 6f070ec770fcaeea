"""Which regions a region lets its users move to: ``[regions.R.policy.moves]``.

::

    [regions.us.policy.moves]
    allow_to = ["eu"]          # users homed in us may move their home to eu

A move hands the user's data to another jurisdiction, so it is the *source* region's
policy that must allow it, destination by destination; without the table no move is
allowed. The table sits in the region's policy beside moderation's keys (moderation
leaves sub-tables of other capabilities alone) and is checked whole when ``fyp.toml`` is
loaded: an unknown key, or a destination that is not a declared region (or the region
itself), stops every command.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fyp.config import DeploymentConfig, did_you_mean
from fyp.errors import ConfigError, MoveNotAllowed

TABLE = "moves"
KEYS = ("allow_to",)


def parse_moves(region: str, policy: dict[str, Any], declared: Collection[str]) -> tuple[str, ...]:
    """The destinations ``[regions.<region>.policy.moves]`` allows (none without it)."""
    raw = policy.get(TABLE, {})
    where = f"[regions.{region}.policy.{TABLE}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table", region=region)
    for key in raw:
        if key not in KEYS:
            raise ConfigError(
                f"unknown key {key!r} in {where}{did_you_mean(key, KEYS)} "
                f"(known keys: {', '.join(KEYS)})",
                region=region,
            )
    allow = raw.get("allow_to", [])
    if not isinstance(allow, list) or not all(isinstance(r, str) for r in allow):
        raise ConfigError(f"{where} allow_to must be a list of region names", region=region)
    for name in allow:
        if name == region:
            raise ConfigError(f"{where} allow_to names the region itself", region=region)
        if name not in declared:
            raise ConfigError(
                f"{where} allow_to names {name!r}, which is not a declared region "
                f"({', '.join(declared)})",
                region=region,
            )
    return tuple(dict.fromkeys(allow))


def allowed_moves(config: DeploymentConfig, region: str) -> tuple[str, ...]:
    return parse_moves(region, config.region(region).policy, config.regions)


def check_move_allowed(config: DeploymentConfig, source: str, dest: str) -> None:
    """Refuse (403 ``move_not_allowed``) unless the source's policy allows ``dest``."""
    allowed = allowed_moves(config, source)
    if dest not in allowed:
        raise MoveNotAllowed(
            f"region {source!r} does not allow moving users to {dest!r}: its policy "
            f"allows {list(allowed) or 'no moves'} ([regions.{source}.policy.moves] "
            "allow_to in fyp.toml)",
            source=source,
            destination=dest,
            allowed=list(allowed),
        )
