"""Real data sets as fyp imports: KuaiRec-EAR, official KuaiRec, and the bundled demo.

- :func:`~fyp.datasets.kuairec_ear.import_kuairec_ear`: positives + fully observed test set.
- :func:`~fyp.datasets.official.import_kuairec`: the authors' big/small matrix layout.
- :func:`~fyp.datasets.demo.build_demo`: a demo deployment from the sample shipped in
  ``fyp/datasets/sample`` (CC BY-SA 4.0, see its ``ATTRIBUTION.md``).
"""

from __future__ import annotations

from fyp.datasets.demo import Demo, build_demo
from fyp.datasets.kuairec_ear import ImportReport, RegionCounts, import_kuairec_ear
from fyp.datasets.official import import_kuairec

__all__ = [
    "Demo",
    "ImportReport",
    "RegionCounts",
    "build_demo",
    "import_kuairec",
    "import_kuairec_ear",
]
