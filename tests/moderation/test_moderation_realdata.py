"""Moderation on real KuaiRec data: the import/demo path, captions, re-upload detection."""

from __future__ import annotations

from pathlib import Path

import pytest
from moderation_helpers import train
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.datasets.demo import sample_dir
from fyp.datasets.kuairec import CAPTIONS, read_captions
from fyp.datasets.kuairec_ear import DATASET, import_kuairec_ear
from fyp.feed.service import FeedService
from fyp.moderation import ModerationEligibility, Moderator
from fyp.moderation.edits import evaluate_detection
from fyp.regions.deployment import Deployment

runner = CliRunner()


def test_a_fresh_import_is_pending_until_fyp_moderate(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    with Deployment.init(root, ["us", "eu"]) as d:
        import_kuairec_ear(d, sample_dir(), parallel=False)
        train(d)
        user = next(d.store("us").iter_labels(DATASET, "test")).user_id
        service = FeedService(d, eligibility=ModerationEligibility(d))
        assert service.feed(user, n=10, record=False).items == []
    result = runner.invoke(app, ["moderate", str(root)])
    assert result.exit_code == 0, result.output
    assert "region us: 1,348 verdicts" in result.output
    with Deployment.open(root) as d:
        page = FeedService(d, eligibility=ModerationEligibility(d)).feed(user, n=10, record=False)
        assert len(page.items) == 10  # imported videos (no creator id) are allowed by default
        counts = Moderator(d).cell("us").mod.count_by_state()
        assert counts["approved"] > 0.98 * sum(counts.values())


@pytest.mark.realdata
def test_real_captions_moderate_without_rule_failures(shared_data: Path) -> None:
    videos = read_captions(shared_data / "kuairec" / CAPTIONS)
    from fyp.moderation import PolicyEngine, parse_policy
    from fyp.moderation.models import ModerationInput, cover_texts

    engine = PolicyEngine(parse_policy("us", {"banned_terms": ["赌博"]}))
    sample = sorted(videos.values(), key=lambda v: int(v.video_id))[::5]
    states: dict[str, int] = {}
    for info in sample:
        item = ModerationInput(
            info.video_id,
            "us",
            caption=info.caption,
            cover_texts=cover_texts(info.attributes),
            hashtags=tuple(info.hashtags),
            categories=tuple(info.categories),
            creator="imported",
        )
        verdict = engine.evaluate(item)
        assert not verdict.failures, (info.video_id, verdict.failures)
        states[verdict.state.value] = states.get(verdict.state.value, 0) + 1
    assert states["approved"] > 0.97 * len(sample)


@pytest.mark.realdata
def test_reuploads_of_real_captions_are_found(shared_data: Path) -> None:
    videos = read_captions(shared_data / "kuairec" / CAPTIONS)
    captions = [(v.video_id, v.caption, v.hashtags) for v in videos.values()]
    result = evaluate_detection(captions, n_originals=500, seed=11)
    assert result.originals == 500 and result.distractors == len(captions) - 500
    assert result.recall >= 0.95
    assert result.false_positive_rate <= 0.01
