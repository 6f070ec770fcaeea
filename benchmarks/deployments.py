"""The deployment the feed and backup benchmarks share: KuaiRec-EAR imported, moderated."""

from __future__ import annotations

from pathlib import Path

from fyp.config import with_served_logs, write_config
from fyp.datasets.kuairec_ear import import_kuairec_ear
from fyp.moderation import Moderator
from fyp.regions.deployment import Deployment


def kuairec_deployment(
    directory: Path, data: Path, store: str | None = None, served_logs: list[str] | None = None
) -> Deployment:
    """A new two-region (us, eu) deployment with all of KuaiRec-EAR, every video moderated;
    the caller closes it. ``store``: a store URL with {region} (default: SQLite files).
    ``served_logs``: each region's served log, in region order (a URL with {region} once
    for both), on Redis (default: in the store)."""
    d = Deployment.init(directory, ["us", "eu"], store=store)
    if served_logs:
        urls = served_logs * 2 if len(served_logs) == 1 else served_logs
        d.close()
        write_config(with_served_logs(d.config, dict(zip(d.config.regions, urls, strict=True))))
        d = Deployment.open(directory)
    try:
        import_kuairec_ear(d, data)
        moderator = Moderator(d)
        for region in d.regions:
            moderator.run(region)
    except BaseException:
        d.close()
        raise
    return d
