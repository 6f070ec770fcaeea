"""Which variant of an experiment a user is in: a pure function of the salt and the id.

``sha256(salt + ":" + user_id)`` read as a number in [0, 1); the variants, in name order,
take consecutive ranges from 0 (each as wide as its share), the rest is control. So:

- the same user is in the same variant on every request, process and host;
- a variant's users stay in it when a variant whose name sorts after every existing one
  is added, or the last variant's share grows: those take users from control only (a
  variant added *before* others in name order, or a share changed before the last,
  shifts the ranges after it: a new experiment, in effect; so does a new salt);
- experiments with different salts split users independently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fyp.experiments.config import CONTROL, Experiment

_SCALE = float(2**53)  # 53 bits: every such fraction is a float, and below 1


def position(salt: str, user_id: str) -> float:
    """Where the user falls in [0, 1) for ``salt``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _SCALE


def pick(point: float, shares: Sequence[tuple[str, float]]) -> str:
    """The variant whose range holds ``point``, or control; ``shares`` in name order."""
    edge = 0.0
    for name, share in shares:
        edge += share
        if point < edge:
            return name
    return CONTROL


def variant_of(experiment: Experiment, user_id: str) -> str:
    """The user's variant (or ``control``), ignoring where the user is homed."""
    return pick(position(experiment.salt, user_id), experiment.shares)
