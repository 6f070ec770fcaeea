"""The server moderates new uploads itself: no operator cron is needed.

An upload, an edit or a restored video is ``pending`` (out of every feed) until the
automated checks judge it, and a policy change leaves the verdicts made under the old
policy in force until a run re-judges them. ``fyp serve`` starts a
:class:`ModerationScheduler`: every ``[moderation] every_seconds`` it asks each region,
in the serving process (one ``LIMIT 1`` query, one seek in the index of report events
for users' reports since the last run, plus the audit log's policy entries), whether a
run is needed, and runs ``fyp moderate --region R`` for those in a child
process at a lower CPU priority (``fyp.regions.background``), holding the region's
``.schedule-moderation.lock``: of several hosts, one moderates a region at a time. The
run writes through the region's writer lock like any other writer; the feed reads the
new verdicts from the store on its next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fyp.config import DeploymentConfig
from fyp.moderation.policy import parse_policy
from fyp.regions.background import ChildScheduler, schedule_lock

log = logging.getLogger("fyp.moderation")


class ModerationScheduler(ChildScheduler):
    """Background check-and-moderate loop of one serving process. ``reason(region)``
    says why a region needs a run, or None (``Moderator.run_reason``)."""

    name = "fyp-moderation"
    config: DeploymentConfig

    def __init__(
        self,
        config: DeploymentConfig,
        reason: Callable[[str], str | None],
        policy: Callable[[str], str] | None = None,
    ) -> None:
        """``policy(region)``: the digest of the moderation policy this process has in
        force (``Moderator.policy_digest``): the child judges only under that one, so
        an edit of ``fyp.toml`` this process refused is not applied by its child."""
        super().__init__(config.moderation.every_seconds)
        self.config = config
        self.reason = reason
        self.policy = policy

    def config_changed(self, old: DeploymentConfig, new: DeploymentConfig) -> None:
        """A changed moderation policy makes its region's verdicts stale: re-judge them
        now rather than at the end of the interval."""
        super().config_changed(old, new)
        if any(
            parse_policy(r, old.region(r).policy).digest()
            != parse_policy(r, new.region(r).policy).digest()
            for r in new.region_names
        ):
            self.wake()

    def due(self) -> list[str]:
        """The regions that need a run. A region whose store cannot be read now is left
        for the next round (logged): its videos stay pending, which is the safe side."""
        regions = []
        for region in self.config.region_names:
            try:
                why = self.reason(region)
            except Exception as exc:  # a store that is down must not stop the others
                log.error(
                    "%s: cannot tell whether region %s needs a run: %s", self.name, region, exc
                )
                continue
            if why is not None:
                log.info("%s: region %s: %s", self.name, region, why)
                regions.append(region)
        return regions

    def tick(self) -> bool:
        """Run ``fyp moderate`` for each region that needs it; True if all that ran
        succeeded (False when none was due)."""
        cfg = self.config
        ok = [  # a lock per region: hosts may moderate different regions at once
            self.run_child(
                "moderate",
                str(cfg.root),
                "--region",
                region,
                *(() if self.policy is None else ("--policy-digest", self.policy(region))),
                lock=schedule_lock(cfg.region_dir(region), "moderation"),
            )
            for region in self.due()
        ]
        return bool(ok) and all(ok)
