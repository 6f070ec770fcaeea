"""Pinyin and homophone matching on the real KuaiRec captions: what fires, and its price.

    python scripts/pinyin_matches.py [--data ../shared/data] [--repeats 5] [--sample 12]

Reads the 10,728 captions of ``kuairec/kuairec_caption_category.csv`` (CC BY-SA 4.0)
with ``fyp.datasets.kuairec`` and matches a realistic term list in every text the term
rules read (caption, cover texts, hashtag field):

- the terms of the moderation benchmark's policy (``benchmarks.bench_moderation``:
  赌博 网赌 毒品 casino, hashtags 约炮 裸聊, 整容, 性感), the Chinese terms of the lexicon
  classifier (``fyp.moderation.classifier.LEXICON``), and a few more common banned ones
  (:data:`EXTRA`);
- also: how many captions hold Latin words at all (``@mentions`` aside), and which of
  the 30,000 most frequent English words spell a term in pinyin (when wordfreq is
  installed; it is not a dependency of fyp);
- once as the rules match today (``match_pinyin`` off), once with pinyin and homophones
  (``pinyin=True``), and twice more with the homophone rule loosened, to count what
  its two conditions leave out: homophones that keep none of the term's characters
  (``anchored=False``), and homophone runs inside ordinary words (no word check).

Prints JSON: how many captions match by each new way, per term, a sample of the matches
with the text around them (to be judged by a person), and the matching cost per caption
with and without pinyin, for the term matcher alone (the whole list) and for
``PolicyEngine.evaluate`` with the benchmark's policy (CPU time in this process, median
of ``--repeats`` passes taken in turns, after a warm-up pass that loads jieba, OpenCC
and pypinyin).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_moderation import POLICY  # noqa: E402

from fyp.moderation import pinyin  # noqa: E402
from fyp.moderation.classifier import LEXICON  # noqa: E402
from fyp.moderation.models import ModerationInput  # noqa: E402
from fyp.moderation.text import TermMatcher, prepare, segment, strip_mentions  # noqa: E402

EXTRA = ("枪支", "嫖娼", "卖淫", "代孕", "传销", "翻墙", "法轮功", "台独")
NEW_WAYS = ("pinyin", "homophone")
_LETTERS = re.compile("[A-Za-z]{2}")


def term_list() -> list[str]:
    lexicon = [t for terms in LEXICON.values() for t in terms]
    policy = [
        t
        for key in ("banned_terms", "banned_hashtags", "review_terms", "mature_terms")
        for t in POLICY.get(key, [])
    ]
    return list(dict.fromkeys([*policy, *lexicon, *EXTRA]))


def inputs_of(data: Path) -> list[ModerationInput]:
    from fyp.datasets.kuairec import CAPTIONS, read_captions
    from fyp.moderation.models import cover_texts

    videos = read_captions(data / "kuairec" / CAPTIONS).values()
    return [
        ModerationInput(
            info.video_id,
            "us",
            caption=info.caption,
            cover_texts=cover_texts(info.attributes),
            hashtags=tuple(info.hashtags),
            creator="imported",
        )
        for info in sorted(videos, key=lambda v: int(v.video_id))
    ]


def context(texts: tuple[str, ...], term: str, how: str) -> str:
    """The piece of text the match came from, for a person to judge."""
    flat = [prepare(t).flat for t in texts if t]
    if how != "pinyin":
        sounds = pinyin.PinyinTerms({term: term}, anchored=False)
        for line in "\n".join(flat).split("\n"):
            for start in range(len(line)):
                window = line[start : start + len(term)]
                if sounds.in_chinese(window):
                    return f"{window} … {line[max(0, start - 8) : start + len(term) + 8]}"
    whole = " / ".join(t for t in texts if t)
    return re.sub(r"\s+", " ", whole)[:80]


def variant(terms: list[str], anchored: bool, words: bool) -> TermMatcher:
    """A matcher with the homophone rule changed: what the shipped rules leave out."""
    matcher = TermMatcher(terms, pinyin=True)
    keys = matcher._sounds.terms
    matcher._sounds = pinyin.PinyinTerms(keys, anchored, segment if words else None)
    return matcher


def engines() -> dict[str, Callable[[ModerationInput], object]]:
    """``PolicyEngine.evaluate`` with the benchmark's policy, ``match_pinyin`` off and on."""
    from fyp.moderation import PolicyEngine, parse_policy

    return {
        name: PolicyEngine(parse_policy("us", {**POLICY, "match_pinyin": on})).evaluate
        for name, on in (("off", False), ("on", True))
    }


def timed(
    works: dict[str, Callable[[ModerationInput], object]],
    inputs: list[ModerationInput],
    repeats: int,
) -> dict[str, float]:
    """Median CPU milliseconds a caption of each work over every input. The works take
    turns within each pass (a shared machine's load falls on both alike), each with the
    text caches emptied; a first pass warms up (jieba, OpenCC, pypinyin loaded)."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for pass_ in range(repeats + 1):
        for name, work in works.items():
            prepare.cache_clear()
            started = time.process_time()
            for item in inputs:
                work(item)
            if pass_:
                times[name].append(time.process_time() - started)
    return {k: round(1000 * statistics.median(v) / len(inputs), 4) for k, v in times.items()}


def english_words(terms: list[str], top: int = 30_000) -> dict[str, str] | None:
    """Which of the ``top`` most frequent English words (wordfreq, when installed: it is
    no dependency of fyp) spell a term in pinyin: the Latin side's false positives in
    English text, which KuaiRec has little of."""
    try:
        import wordfreq
    except ImportError:
        return None
    from fyp.moderation.textfold import fold

    sounds = pinyin.PinyinTerms({fold(t): t for t in terms})
    hits = {w: sounds.whole(fold(w)) for w in wordfreq.top_n_list("en", top)}
    return {w: hit[0] for w, hit in hits.items() if hit is not None and hit[1] == "pinyin"}


def run(data: Path, repeats: int, sample: int) -> dict[str, Any]:
    terms = term_list()
    inputs = inputs_of(data)
    plain, shipped = TermMatcher(terms), TermMatcher(terms, pinyin=True)
    # homophones the shipped rule leaves out: without the own-character or the word rule
    loose = {
        "homophone, none of the term's characters": variant(terms, False, True),
        "homophone, inside an ordinary word": variant(terms, True, False),
    }
    ways = (*NEW_WAYS, *loose)
    counts: dict[str, Counter[str]] = {w: Counter() for w in ways}
    captions: dict[str, set[str]] = {w: set() for w in ways}
    examples: dict[str, list[dict[str, str]]] = {w: [] for w in ways}
    changed = 0
    for item in inputs:
        texts = (*item.texts(hashtags=False), *item.hashtags)
        before = plain.matches(*item.texts(hashtags=False), hashtags=item.hashtags)
        after = shipped.matches(*item.texts(hashtags=False), hashtags=item.hashtags)
        changed += {t: h for t, h in after.items() if h not in NEW_WAYS} != before
        rows = [(t, h) for t, h in after.items() if h in NEW_WAYS]
        for name, matcher in loose.items():
            found = matcher.matches(*item.texts(hashtags=False), hashtags=item.hashtags)
            rows += [(t, name) for t, h in found.items() if h == "homophone" and t not in after]
        for term, how in rows:
            counts[how][term] += 1
            captions[how].add(item.video_id)
            if len(examples[how]) < sample:
                where = context(texts, term, how)
                examples[how].append({"video": item.video_id, "term": term, "text": where})

    def matching(matcher: TermMatcher) -> Callable[[ModerationInput], object]:
        return lambda item: matcher.matches(*item.texts(hashtags=False), hashtags=item.hashtags)

    matchers = {"off": TermMatcher(terms), "on": TermMatcher(terms, pinyin=True)}
    return {
        "captions": len(inputs),
        "terms": terms,
        "captions_matched": {w: len(v) for w, v in captions.items()},
        "matches_per_term": {w: dict(c.most_common()) for w, c in counts.items()},
        "other_matches_changed": changed,
        "captions_with_latin_words": sum(
            any(_LETTERS.search(strip_mentions(t)) for t in (*i.texts(hashtags=False), *i.hashtags))
            for i in inputs
        ),
        "english_words_spelling_a_term": english_words(terms),
        "examples": examples,
        "matcher_ms_per_caption": timed(
            {k: matching(m) for k, m in matchers.items()}, inputs, repeats
        ),
        "engine_ms_per_caption": timed(engines(), inputs, repeats),
        "pinyin_version": pinyin.version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample", type=int, default=12)
    args = parser.parse_args()
    print(json.dumps(run(args.data, args.repeats, args.sample), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
