"""The deployment the feed and backup benchmarks share: KuaiRec-EAR imported, moderated."""

from __future__ import annotations

from pathlib import Path

from fyp.datasets.kuairec_ear import import_kuairec_ear
from fyp.moderation import Moderator
from fyp.regions.deployment import Deployment


def kuairec_deployment(directory: Path, data: Path, store: str | None = None) -> Deployment:
    """A new two-region (us, eu) deployment with all of KuaiRec-EAR, every video moderated;
    the caller closes it. ``store``: a store URL with {region} (default: SQLite files)."""
    d = Deployment.init(directory, ["us", "eu"], store=store)
    try:
        import_kuairec_ear(d, data)
        moderator = Moderator(d)
        for region in d.regions:
            moderator.run(region)
    except BaseException:
        d.close()
        raise
    return d
