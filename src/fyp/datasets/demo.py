"""The demo deployment: real KuaiRec data from the sample bundled with fyp.

``build_demo`` needs no network and no ``../shared``: the package ships a small
KuaiRec-EAR excerpt (``fyp/datasets/sample/``, CC BY-SA 4.0, see ``ATTRIBUTION.md``
there) in the same file layout the importer reads, so the demo goes through the same
code path as a full import. An existing deployment is reused and the import is
idempotent, so ``make demo`` can be run again and again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fyp.access.keys import ensure_admin_key
from fyp.config import CONFIG_FILE
from fyp.datasets.kuairec import SIDE_INFO_FILES
from fyp.datasets.kuairec_ear import (
    DATASET,
    INTERACTIONS,
    ImportReport,
    Progress,
    import_kuairec_ear,
)
from fyp.errors import ConfigError
from fyp.feed.ahead import ranks_ahead
from fyp.models.training import train_and_publish
from fyp.moderation import Moderator
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment

DEFAULT_REGIONS = ("us", "eu")
DEMO_NAME = "fyp-demo"


def sample_dir() -> Path:
    """The bundled sample; a broken install (files missing) is a server-side error."""
    folder = Path(__file__).resolve().with_name("sample")
    missing = [n for n in (INTERACTIONS, *SIDE_INFO_FILES) if not (folder / n).is_file()]
    if missing:
        raise ConfigError(
            f"the bundled demo sample is incomplete: {', '.join(missing)} missing in {folder}; "
            "reinstall fyp or run scripts/make_demo_sample.py",
            path=str(folder),
        )
    return folder


@dataclass(frozen=True)
class Demo:
    """The built demo and a user and video to show off in example requests."""

    directory: Path
    regions: list[str]
    report: ImportReport
    model_versions: dict[str, str]
    example_user: str
    example_video: str
    admin_key_file: Path


def build_demo(
    directory: str | Path,
    regions: Sequence[str] = DEFAULT_REGIONS,
    *,
    progress: Progress | None = None,
    parallel: bool | None = None,
) -> Demo:
    """Create (or reuse) the deployment in ``directory`` and import the bundled sample."""
    directory = Path(directory)
    sample = sample_dir()
    if (directory / CONFIG_FILE).is_file():
        deployment = Deployment.open(directory)
    else:
        deployment = Deployment.init(directory, list(regions), name=DEMO_NAME)
    with deployment as d:
        key_file, _ = ensure_admin_key(d)  # a deployment is never open to keyless calls
        report = import_kuairec_ear(d, sample, progress=progress, parallel=parallel)
        # moderate (a fresh import is pending) and train every region: feeds work at once
        moderator = Moderator(d)
        for r in d.regions:
            moderator.run(r)
        versions = {
            r: train_and_publish(
                d.store(r),
                d.config.region_dir(r),
                augment=ranks_ahead(d, r),
                consent=consent_policy(d.config, r),
            ).version
            for r in d.regions
        }
        first = d.regions[0]
        label = next(d.store(first).iter_labels(DATASET, "test"), None)
        video = next(d.store(first).iter_videos(), None)
        return Demo(
            directory=directory,
            regions=d.regions,
            report=report,
            model_versions=versions,
            example_user=label.user_id if label else "0",
            example_video=video.video_id if video else "0",
            admin_key_file=key_file,
        )
