"""``fyp eval deployment`` without ``--region``: every region, each in its own copy.

Each region is evaluated as ``--region`` evaluates one (:mod:`fyp.evaluation.temporal`):
its store copied into its own directory and cut there, its engine trained there, the
run recorded in its own audit log. No region's data goes into another's copy, and no
figure mixes regions: a region's users are ranked from its own catalogue, so the
figures are per region. A region that fails (too few events, no test user, a store it
cannot read) is reported with its error and the others still run; the command then
exits non-zero.

``results.json`` then says ``"results_version": 2`` and holds, per region, what a
one-region run writes (``regions``: region -> that object, or ``{"error": {...}}`` in
the API's error shape), the regions that failed (``failed``), the total seconds, the
machine and the run's settings. A run with ``--region`` writes the one-region object
itself, as before (no ``results_version``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fyp.config import DeploymentConfig
from fyp.errors import FypError
from fyp.evaluation.peers import BUILT_IN, PeerSet
from fyp.evaluation.run import EvalOutcome, Log, machine_info, write_json
from fyp.evaluation.temporal import PROTOCOL, TemporalConfig, evaluate_region
from fyp.evaluation.temporal_cut import iso
from fyp.models.executors import as_fyp_error

RESULTS_VERSION = 2


def every_region(
    config: TemporalConfig, source: DeploymentConfig, log: Log, peers: PeerSet = BUILT_IN
) -> EvalOutcome:
    """Evaluate each region of ``source`` in turn; write the figures side by side."""
    started = time.perf_counter()
    regions: dict[str, dict[str, Any]] = {}
    errors: dict[str, FypError] = {}
    for region in source.region_names:
        log(f"region {region}:")
        try:
            regions[region] = evaluate_region(config, source, region, log, peers)
        except Exception as exc:  # one region's failure is its outcome, not the run's
            errors[region] = as_fyp_error(exc)
            regions[region] = {"protocol": PROTOCOL, "error": errors[region].to_dict()}
            log(f"  {region}: not evaluated: {errors[region].message}")
    results: dict[str, Any] = {
        "protocol": PROTOCOL,
        "results_version": RESULTS_VERSION,
        "regions": regions,
        "failed": sorted(errors),
        "seconds": {
            "total": round(time.perf_counter() - started, 2),
            "regions": {r: v["seconds"]["total"] for r, v in regions.items() if "seconds" in v},
        },
        "machine": machine_info(),
        "config": {
            "deployment": str(Path(config.directory).resolve()),
            "regions": source.region_names,
            "seed": config.seed,
            "users": config.users,
            "holdout": None if config.cut_ms is not None else config.holdout,
            "cut": None if config.cut_ms is None else iso(config.cut_ms),
            "newcomer_events": config.newcomer_events,
            "moderation": "now" if config.moderation_now else "at_cut",
            "methods": [
                *config.methods,
                *(p.name for p in peers.extra),
                *(f"fyp:{s}" for s in dict.fromkeys(config.scorers)),
            ],
            "peers": peers.specs(),
        },
    }
    out = Path(config.out)
    files = {"results": write_json(out / "results.json", results)}
    from fyp.evaluation.report import write_regions_report

    files["report"] = write_regions_report(results, out / "report.html")
    return EvalOutcome(results, {}, out, files, errors)
