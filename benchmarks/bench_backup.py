"""Backup and restore of a region of the real KuaiRec-EAR deployment (RPO / RTO).

    python -m benchmarks.bench_backup [--data ../shared/data] [--repeats 5]
        [--store 'postgresql://…?schema=bench_{region}']

Builds a two-region deployment (us, eu) with all of KuaiRec-EAR imported, moderated and
trained (``fyp train``), then for region us, ``--repeats`` times each:

1. ``fyp backup DIR --region us``: consistent store snapshot + artifacts, packed,
   sealed with the region's key, written to ``backups/us`` (the command's wall time,
   Python start-up included, as cron would run it; and the in-process time the
   manifest records);
2. ``fyp restore DIR --region us``: verify, unpack, swap in, re-apply erasures (one
   user is erased after the first backup, so every restore re-erases one);
3. ``fyp residency check DIR`` (every store, artifact, backup and file) and
   ``fyp region export DIR us --to OUT``, once per repeat as well.

RPO is the backup interval plus one backup's duration; RTO is the restore time.
Medians over repeats, with sizes and the machine. ``--store``: the regions' stores on a
PostgreSQL server (its schemas must not exist yet; they are left there): the backup then
copies the region's tables into a SQLite snapshot and the restore loads it back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.deployments import kuairec_deployment
from benchmarks.machine import machine
from fyp.regions.deployment import Deployment

ROOT = Path(__file__).resolve().parents[1]
REGION = "us"


def fyp(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Run ``python -m fyp ...``; (wall seconds, stdout)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fyp", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"fyp {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return seconds, done.stdout


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "runs": [round(v, 3) for v in values]}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--store",
        default=None,
        help="store URL with {region} (e.g. postgresql://fyp@127.0.0.1/fyp?schema=bench_{region};"
        " its schemas must not exist yet); default: a SQLite file per region",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": machine(),
        "region": REGION,
        "store": args.store or "sqlite",
    }
    with tempfile.TemporaryDirectory(prefix="fyp-bench-backup-") as tmp:
        directory = Path(tmp) / "dep"
        kuairec_deployment(directory, args.data, args.store).close()
        fyp("train", str(directory))
        region_dir = directory / "regions" / REGION
        with Deployment.open(directory) as d:
            store = d.store(REGION)
            victim = next(u.user_id for u in store.iter_users())
            results["region_data"] = {
                "users": store.count_users(),
                "events": store.count_events(),
                "labels": store.count_labels(),
                "videos": store.count_videos(),
                "store_bytes": (region_dir / "store.sqlite").stat().st_size
                if args.store is None
                else None,
                "models_bytes": dir_bytes(region_dir / "models"),
            }

        backup_wall, backup_inner, manifests = [], [], []
        for n in range(args.repeats):
            wall, out = fyp("backup", str(directory), "--region", REGION, "--json")
            manifest = json.loads(out)["manifest"]
            backup_wall.append(wall)
            backup_inner.append(float(manifest["seconds"]))
            manifests.append(manifest)
            if n == 0:  # erased after the first backup: every restore below re-erases
                fyp("erasure", "erase", str(directory), victim)
        first = manifests[0]
        results["backup"] = {
            "command_s": summary(backup_wall),
            "in_process_s": summary(backup_inner),
            "parts": len(first["parts"]),
            "plaintext_bytes": first["plaintext_bytes"],
            "packed_bytes": first["packed_bytes"],
            "ciphertext_bytes": first["ciphertext"]["size"],
        }

        restore_wall, restore_inner, stages = [], [], []
        for _ in range(args.repeats):
            restore = ["restore", str(directory), "--region", REGION, "--json"]
            wall, out = fyp(*restore, "--backup", first["backup_id"])
            report = json.loads(out)
            if report["reerased"] != 1:
                raise SystemExit(f"restore re-erased {report['reerased']} users, expected 1")
            restore_wall.append(wall)
            restore_inner.append(float(report["seconds"]["total"]))
            stages.append(report["seconds"])
        results["restore"] = {
            "command_s": summary(restore_wall),
            "in_process_s": summary(restore_inner),
            "stages_median_s": {
                k: round(statistics.median(s[k] for s in stages), 3) for k in stages[0]
            },
            "reerased_each_time": 1,
        }

        scans, carves = [], []
        for n in range(args.repeats):
            wall, out = fyp("residency", "check", str(directory), "--json", ok=(0, 1))
            scans.append(wall)
            report = json.loads(out)
            if report["foreign_records"] or report["orphan_records"]:
                raise SystemExit(f"residency check found problems: {report['findings'][:3]}")
            out_dir = Path(tmp) / f"carved-{n}"
            wall, _ = fyp("region", "export", str(directory), REGION, "--to", str(out_dir))
            carves.append(wall)
            shutil.rmtree(out_dir)
        results["residency_check_s"] = summary(scans)
        results["residency_backups_scanned"] = report["regions"][0]["scanned"]["backups"]
        results["carve_out_s"] = summary(carves)
    rto = results["restore"]["command_s"]["median"]
    took = results["backup"]["command_s"]["median"]
    results["rpo_rto"] = {
        "rto_s": rto,
        "rpo_hourly_cron_s": 3600 + took,
        "note": "RPO = backup interval + one backup's duration; RTO = measured restore",
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
