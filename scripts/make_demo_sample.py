"""Cut the bundled demo sample (src/fyp/datasets/sample/) from the real KuaiRec data.

Deterministic: the same input gives byte-identical output. Usage::

    python scripts/make_demo_sample.py [--data ../shared/data] [--out src/fyp/datasets/sample]

``--data`` holds ``kuairec-ear/interactions.csv`` and the ``kuairec/`` side tables. The cut
(also written to ATTRIBUTION.md, which the licence requires to say what was changed):

1. 300 test users: a seeded random sample of the users that have test rows (the
   fully observed small-matrix users).
2. 600 videos among the test videos: the 500 with the most interaction rows (all splits,
   all users), then 100 more drawn with the same seed from the remaining test videos.
3. 700 training users: a seeded random sample of the other users that have train or
   valid rows on those 600 videos.
4. Rows: the test rows of the test users on the 600 videos; every train/valid row of the
   test users (in KuaiRec-EAR these never touch test videos, so without them the test
   users would have no history); the train/valid rows of the training users on the 600
   videos. File order is kept.
5. Side tables: the rows of exactly the sampled users, and of the videos in the rows plus
   the four videos whose caption holds a bare carriage return (kept so the sample
   exercises that parsing edge case). Side-table lines are copied byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import shutil
from collections import Counter
from pathlib import Path

SEED = 20220218  # arXiv:2202.10842 was submitted in February 2022
N_TEST_USERS = 300
N_TOP_VIDEOS = 500
N_FILL_VIDEOS = 100
N_TRAIN_USERS = 700
ROOT = Path(__file__).resolve().parents[1]
SIDE = ("user_features.csv", "item_categories.csv", "kuairec_caption_category.csv")


def read_interactions(path: Path) -> list[tuple[str, str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        assert header == ["split", "user_id", "video_id"], header
        return [(s, u, v) for s, u, v in reader]


def side_lines(path: Path) -> tuple[str, dict[str, str]]:
    """Header and ``{id: raw line}``: records end in LF only (bare CRs are field data)."""
    text = path.read_bytes().decode("utf-8")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines[0], {line.split(",", 1)[0]: line for line in lines[1:]}


def cut(data: Path) -> tuple[list[tuple[str, str, str]], set[str], set[str], dict[str, int]]:
    rows = read_interactions(data / "kuairec-ear" / "interactions.csv")
    rng = random.Random(SEED)
    test_users = sorted({u for s, u, _ in rows if s == "test"}, key=int)
    chosen_test = set(rng.sample(test_users, N_TEST_USERS))

    test_videos = {v for s, _, v in rows if s == "test"}
    counts = Counter(v for _, _, v in rows if v in test_videos)
    ranked = sorted(test_videos, key=lambda v: (-counts[v], int(v)))
    top = ranked[:N_TOP_VIDEOS]
    fill = rng.sample(sorted(ranked[N_TOP_VIDEOS:], key=int), N_FILL_VIDEOS)
    videos = set(top) | set(fill)

    candidates = sorted(
        {u for s, u, v in rows if s != "test" and v in videos and u not in chosen_test},
        key=int,
    )
    chosen_train = set(rng.sample(candidates, N_TRAIN_USERS))

    kept = [
        (s, u, v)
        for s, u, v in rows
        if (s == "test" and u in chosen_test and v in videos)
        or (s != "test" and u in chosen_test)
        or (s != "test" and u in chosen_train and v in videos)
    ]
    stats = {
        "test users": len(chosen_test),
        "training users": len(chosen_train),
        "test videos chosen": len(videos),
        **{f"{s} rows": sum(1 for r in kept if r[0] == s) for s in ("train", "valid", "test")},
    }
    return kept, chosen_test | chosen_train, videos | {v for _, _, v in kept}, stats


def write(data: Path, out: Path) -> dict[str, int]:
    rows, users, videos, stats = cut(data)
    side = data / "kuairec"
    header, captions = side_lines(side / SIDE[2])
    videos |= {vid for vid, line in captions.items() if "\r" in line}
    out.mkdir(parents=True, exist_ok=True)
    with (out / "interactions.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["split", "user_id", "video_id"])
        w.writerows(rows)
    for name, keep in zip(SIDE, (users, videos, videos), strict=True):
        header, lines = side_lines(side / name)
        missing = keep - lines.keys()
        assert not missing, f"{name} lacks {sorted(missing)[:5]}"
        ids = sorted(keep, key=int)
        (out / name).write_bytes(("\n".join([header, *(lines[i] for i in ids)]) + "\n").encode())
    shutil.copyfile(side / "LICENSE", out / "LICENSE")
    stats["users"] = len(users)
    stats["videos"] = len(videos)
    (out / "ATTRIBUTION.md").write_text(attribution(stats, out), encoding="utf-8")
    return stats


def attribution(stats: dict[str, int], out: Path) -> str:
    sums = "\n".join(
        f"| `{p.name}` | {p.stat().st_size:,} | `{hashlib.sha256(p.read_bytes()).hexdigest()}` |"
        for p in sorted(out.glob("*.csv"))
    )
    counts = "\n".join(f"- {k}: {v:,}" for k, v in stats.items())
    return f"""# Attribution: KuaiRec demo sample

The CSV files in this folder are a small excerpt of **KuaiRec 2.0**, a fully observed
user-video dataset from the Kuaishou short-video app, and of **KuaiRec-EAR**, the
authors' positive interactions of it.

- Authors: Chongming Gao, Shijun Li, Wenqiang Lei, Jiawei Chen, Biao Li, Peng Jiang,
  Xiangnan He, Jiaxin Mao, Tat-Seng Chua.
- Paper: *KuaiRec: A Fully-Observed Dataset and Insights for Evaluating Recommender
  Systems.* CIKM 2022, pp. 540-550, doi:10.1145/3511808.3557220, arXiv:2202.10842.
- Source: https://kuairec.com/ and https://github.com/chongminggao/KuaiRec (Zenodo record
  18164998). `interactions.csv` derives from `data/FM-train-data/review_dict_{{train,valid,
  test}}.json` of the authors' demo repo `xiwenchao/fully_observed_demo` (video ids remapped
  to KuaiRec's own: `k<1225 -> k`, `k>1225 -> k-1`, the one row with id 1225 dropped);
  the side tables are `user_features.csv`, `item_categories.csv` and
  `kuairec_caption_category.csv` of KuaiRec 2.0, taken from a public copy
  (`iamztq666-commits/OneRec--GRPO`, commit 97381d1) checked against the authors'
  published statistics.
- Licence: **CC BY-SA 4.0** (`LICENSE`, copied unchanged from the authors' repository).
  This excerpt is released under the same licence.

## What was changed

Only selection: no value was edited. `scripts/make_demo_sample.py` (seed {SEED}) keeps

1. {N_TEST_USERS} test users: a seeded random sample of the users that have test rows;
2. 600 test videos: the {N_TOP_VIDEOS} with the most interaction rows (all splits, all
   users), then {N_FILL_VIDEOS} more drawn at random from the remaining test videos;
3. {N_TRAIN_USERS} training users: a seeded random sample of the other users with
   train/valid rows on those videos;
4. the test rows of the test users on those videos, every train/valid row of the test
   users (they never touch test videos in this data), and the train/valid rows of the
   training users on those videos, in the original order;
5. the side-table rows of exactly those users and of every video in the rows, plus the
   four videos whose caption holds a bare carriage return. Side-table lines are copied
   byte for byte; `interactions.csv` is rewritten with LF line ends (the source uses CRLF).

Counts:

{counts}

| file | bytes | sha256 |
| --- | ---: | --- |
{sums}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "fyp" / "datasets" / "sample")
    args = parser.parse_args()
    stats = write(args.data, args.out)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    for k, v in stats.items():
        print(f"{k}: {v:,}")
    print(f"wrote {args.out} ({total:,} bytes)")


if __name__ == "__main__":
    main()
