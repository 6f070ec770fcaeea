"""Helpers shared by the moderation tests: deployments with policies, videos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from fyp.catalog.models import VideoIn
from fyp.config import load_config, write_config
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment

POLICIES: dict[str, dict[str, Any]] = {
    "us": {
        "banned_terms": ["赌博", "casino"],
        "banned_hashtags": ["约炮"],
        "review_terms": ["整容"],
        "blocked_categories": ["博彩"],
    },
    "eu": {
        "banned_terms": ["赌博"],
        "ineligible_categories": ["营销售卖"],
        "mature_terms": ["性感"],
        "maturity": {"mature": "restrict"},
    },
}


def with_policies(root: Path, policies: dict[str, dict[str, Any]]) -> Deployment:
    """A new deployment whose fyp.toml declares these regions and policies."""
    Deployment.init(root, list(policies)).close()
    config = load_config(root)
    regions = {n: replace(r, policy=policies[n]) for n, r in config.regions.items()}
    write_config(replace(config, regions=regions))
    return Deployment.open(root)


def video(video_id: str, caption: str = "今天天气很好我们去公园散步", **kw: Any) -> VideoIn:
    fields: dict[str, Any] = {
        "video_id": video_id,
        "creator_id": "a1",
        "caption": caption,
        "duration_ms": 15_000,
        "regions": ["us", "eu"],
    }
    fields.update(kw)
    return VideoIn(**fields)


def plays(d: Deployment, seed: int, n: int) -> None:
    """n random plays by the deployment's users of videos published to their region."""
    import random

    from fyp.events.ingest import Ingestor

    rng = random.Random(seed)
    catalogue = {r: [v.video_id for v in d.store(r).iter_videos()] for r in d.regions}
    users = [(u.user_id, r) for r in d.regions for u in d.store(r).iter_users()]
    events = []
    for k in range(n):
        user, region = rng.choice(users)
        if not catalogue[region]:
            continue
        events.append(
            {
                "event_id": f"e{seed}-{k}",
                "user_id": user,
                "video_id": rng.choice(catalogue[region]),
                "type": "play",
                "watch_ms": rng.choice([1_000, 20_000, 30_000]),
            }
        )
    ingestor = Ingestor(d)
    for start in range(0, len(events), 500):
        ingestor.ingest(events[start : start + 500])


def train(d: Deployment) -> None:
    """Train every region; the learned ranker is off: these tests are about which videos
    may appear, not their order, and it keeps generated deployments fast."""
    from fyp.models.training import TrainParams, train_and_publish

    params = TrainParams(ranker=False, als_iterations=4)
    for region in d.regions:
        train_and_publish(
            d.store(region), d.config.region_dir(region), params, consent=ConsentPolicy()
        )
