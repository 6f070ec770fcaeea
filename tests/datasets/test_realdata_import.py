"""The whole real KuaiRec-EAR data set (../shared/data; skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fyp.datasets.kuairec_ear import DATASET, import_kuairec_ear
from fyp.regions.deployment import Deployment


@pytest.mark.realdata
def test_full_kuairec_ear_import(shared_data: Path, tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "dep", ["us", "eu"]) as d:
        report = import_kuairec_ear(d, shared_data)
        assert report.rows == 348_666
        totals = report.totals
        assert sum(c.users for c in totals.values()) == 7_176
        assert all(c.videos == 10_728 for c in totals.values())
        assert sum(c.events for c in totals.values()) == 96_134 + 36_385
        assert sum(c.labels for c in totals.values()) == 216_147
        assert sum(d.store(r).count_labels(DATASET) for r in d.regions) == 216_147
        for region, store in d.stores.items():
            index = d.regions.index(region)
            assert all(int(u.user_id) % 2 == index for u in store.iter_users())
        print(f"\nkuairec-ear: {report.rows_per_s:,.0f} rows/s in {report.seconds:.2f} s")
        again = import_kuairec_ear(d, shared_data)
        assert sum(c.events + c.labels + c.users + c.videos for c in again.written.values()) == 0
