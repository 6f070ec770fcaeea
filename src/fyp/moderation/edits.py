"""Edited re-uploads of real captions, to measure re-upload detection honestly.

Someone re-uploading removed content changes the caption just enough to dodge an
exact match. :func:`reupload` applies one to three of the edits seen in practice, at
random but reproducibly (a seeded ``random.Random``):

- **cut**: 5-20 % of the text dropped from the start, the end or both;
- **pad**: a stock phrase ("完整版来了", "点赞关注不迷路", ...) added before or after;
- **punctuation and emoji**: one to five inserted anywhere, some punctuation dropped;
- **hashtag reorder**: the hashtags shuffled and moved to the front or the back.

Hashtags are always reshuffled, so every re-upload differs from its original. The
benchmark (``benchmarks/bench_moderation.py``) and the real-data tests use it: recall
is measured on these re-uploads, false positives on the untouched rest of the
catalogue.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fyp.moderation import dedup
from fyp.moderation.text import squeeze, strip_tags

EDITS = ("cut", "pad", "punct", "reorder")
EMOJI = ("😀", "😂", "🔥", "❤️", "👍", "🎉", "✨", "🙏", "💯", "😍")
PUNCT = tuple("，。！？、…~!?.,;：:")
PADDING = (
    "转发",
    "重新上传",
    "完整版来了",
    "点赞关注不迷路",
    "新版本",
    "搬运",
    "高清重制",
    "更新",
    "再发一次",
    "喜欢的点个赞",
)
_TAG = re.compile(r"[#＃][^\s#＃]+[#＃]?")


@dataclass(frozen=True)
class Reupload:
    original_id: str
    caption: str
    edits: tuple[str, ...]


def reupload(caption: str, rng: random.Random) -> tuple[str, tuple[str, ...]]:
    """An edited copy of ``caption`` and the edits applied."""
    tags = _TAG.findall(caption)
    body = _TAG.sub(" ", caption).strip()
    edits = tuple(sorted(rng.sample(EDITS, rng.randint(1, 3))))
    if "cut" in edits and len(body) > 4:
        k = max(1, int(len(body) * rng.uniform(0.05, 0.2)))
        side = rng.choice(("start", "end", "both"))
        if side == "start":
            body = body[k:]
        elif side == "end":
            body = body[:-k]
        else:
            body = body[k // 2 + 1 : len(body) - k // 2]
    if "pad" in edits:
        pad = rng.choice(PADDING)
        body = f"{pad} {body}" if rng.random() < 0.5 else f"{body} {pad}"
    if "punct" in edits:
        chars = list(body)
        for _ in range(rng.randint(1, 5)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(EMOJI + PUNCT))
        body = "".join(c for c in chars if not (c in PUNCT and rng.random() < 0.3))
    rng.shuffle(tags)
    if rng.random() < 0.5:
        return " ".join(tags) + " " + body, edits
    return body + " " + " ".join(tags), edits


def fingerprintable(caption: str, min_chars: int = 10) -> bool:
    """Enough text after tags, mentions and punctuation are stripped (``MIN_CHARS``
    is where fingerprints start; a margin keeps a cut re-upload above it)."""
    return len(squeeze(strip_tags(caption))) >= min_chars


@dataclass(frozen=True)
class DetectionResult:
    originals: int
    distractors: int
    recall: float
    false_positive_rate: float
    false_positives: int
    identical_text_false_positives: int  # distractors whose text equals an original's
    threshold: float
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def evaluate_detection(
    captions: Sequence[tuple[str, str, Sequence[str]]],
    n_originals: int,
    seed: int = 7,
    threshold: float = 0.5,
    min_chars: int = 10,
) -> DetectionResult:
    """Index ``n_originals`` sampled captions (video id, caption, hashtags) as removed
    videos; query one edited re-upload of each (recall) and every other caption
    unchanged (false positives)."""
    import time

    rng = random.Random(seed)
    eligible = [c for c in captions if fingerprintable(c[1], min_chars)]
    originals = rng.sample(eligible, min(n_originals, len(eligible)))
    chosen = {vid for vid, _, _ in originals}
    started = time.perf_counter()
    index = dedup.DuplicateIndex(threshold)
    for vid, caption, tags in originals:
        index.add(vid, dedup.signature(caption, tags), None, "rejected", None)
    hits = 0
    for vid, caption, tags in originals:
        edited, _ = reupload(caption, rng)
        found = index.matches("query", dedup.signature(edited, tags), None, None)
        hits += any(m.video_id == vid for m in found)
    texts = {squeeze(strip_tags(c)) for _, c, _ in originals}
    distractors = [c for c in captions if c[0] not in chosen]
    fp = same = 0
    for _, caption, tags in distractors:
        if index.matches("query", dedup.signature(caption, tags), None, None):
            fp += 1
            same += squeeze(strip_tags(caption)) in texts
    return DetectionResult(
        originals=len(originals),
        distractors=len(distractors),
        recall=hits / max(1, len(originals)),
        false_positive_rate=fp / max(1, len(distractors)),
        false_positives=fp,
        identical_text_false_positives=same,
        threshold=threshold,
        seconds=time.perf_counter() - started,
    )
