"""Write KuaiRec-EAR's train->valid validation protocol as a data folder ``fyp eval`` reads.

Tuning a hyper-parameter on the test labels would make the test figure meaningless, so
choices are made on the protocol's own validation split instead: fit on ``train``,
evaluate on ``valid``. This script writes a folder in the layout of the real one where
the ``valid`` rows play the part of the held-out ``test`` rows and the real test rows are
dropped (nothing downstream can see them), so the unchanged engine and protocol run it::

    python scripts/ear_valid_split.py --out /tmp/ear-valid [--population test-users]
    fyp eval kuairec-ear --data /tmp/ear-valid --out /tmp/ear-valid-run --skip-interactive

The test rows are read only for the ids of the test users, never for their videos.

- ``--population all`` (default): every user with valid rows is a validation user and the
  universe is every video with valid rows (7,176 users x 6,623 videos). The engine
  filters each user's own train positives (already seen), as in the real feed.
- ``--population test-users``: only the valid rows of the 1,411 users the test protocol
  evaluates (the small-matrix users), so validation scores the population that the
  test scores.

Unlike the test block, the valid split is not fully observed: an unrecommended valid
video is missing, not negative, so validation NDCG is much lower than test NDCG and only
comparisons between settings mean anything. ``kuairec/`` (the side tables) is linked,
not copied.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--population", choices=("all", "test-users"), default="all")
    args = parser.parse_args()
    source = args.data / "kuairec-ear" / "interactions.csv"
    lines = source.read_text(encoding="utf-8").splitlines()
    header, body = lines[0], [ln.split(",") for ln in lines[1:]]
    keep = None
    if args.population == "test-users":
        keep = {user for split, user, _ in body if split == "test"}
    out_rows = [header]
    for split, user, video in body:
        if split == "train":
            out_rows.append(f"train,{user},{video}")
        elif split == "valid" and (keep is None or user in keep):
            out_rows.append(f"test,{user},{video}")
    folder = args.out / "kuairec-ear"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text("\n".join(out_rows) + "\n", encoding="utf-8")
    side = args.out / "kuairec"
    if not side.exists():
        side.symlink_to((args.data / "kuairec").resolve(), target_is_directory=True)
    print(f"{len(out_rows) - 1:,} rows written to {folder / 'interactions.csv'}")


if __name__ == "__main__":
    main()
