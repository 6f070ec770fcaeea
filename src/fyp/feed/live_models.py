"""The region models a serving process holds, swapped without downtime.

The feed notices a new ``current`` artifact of a region (checked at most once a second)
and loads it before switching to it; a serving process loads it in a thread while the
loaded one keeps serving. A damaged artifact makes only its own region unavailable.
"""

from __future__ import annotations

import logging
import threading
import time

from fyp.errors import ModelError
from fyp.models.artifacts import current_version
from fyp.models.region_model import RegionModel
from fyp.moderation.snapshot import snapshot_for
from fyp.regions.deployment import Deployment

RELOAD_CHECK_S = 1.0
RETRY_FAILED_LOAD_S = 60.0  # a version that failed to load in the background is retried this late
log = logging.getLogger("fyp.feed")


class LiveModels:
    """Each region's live model for one process (``FeedService.model``)."""

    def __init__(self, deployment: Deployment, reload_in_background: bool = False) -> None:
        """``reload_in_background`` (serving processes): a newly published artifact is
        loaded by a thread while the loaded one keeps serving, so no request waits the
        ~0.1-0.3 s a load takes; otherwise the request that notices it loads it."""
        self.deployment = deployment
        self.reload_in_background = reload_in_background
        self._models: dict[str, RegionModel] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loading: set[str] = set()  # regions a background load is running for
        self._failed: dict[str, tuple[str | None, float]] = {}  # region -> version, when
        self._loading_lock = threading.Lock()

    def get(self, region: str) -> RegionModel:
        """The region's live model, checking for a newer ``current`` at most once a
        second."""
        now = time.monotonic()
        model = self._models.get(region)
        if model is not None and now - self._checked.get(region, 0.0) < RELOAD_CHECK_S:
            return model
        region_dir = self.deployment.config.region_dir(region)
        version = current_version(region_dir)
        self._checked[region] = now
        if model is not None and model.manifest.version == version:
            return model
        if model is not None and self.reload_in_background:
            self._load_later(region, version)
            return model
        return self._load_now(region, version)

    def warm(self) -> list[str]:
        """Load every trained region's model and catalogue snapshot now (a serving
        process, before its first request); returns the regions with a model."""
        loaded: list[str] = []
        for region in self.deployment.regions:
            snapshot = snapshot_for(self.deployment.store(region))
            snapshot.refresh()
            for adult in (False, True):  # the barred videos per viewer kind: ~6 ms each
                snapshot.barred(adult)
            try:
                self.get(region)
            except ModelError:
                continue  # not trained yet: its feeds fail until it is
            loaded.append(region)
        return loaded

    def _load_later(self, region: str, version: str | None) -> None:
        """Load the region's current artifact in a thread (one at a time per region).
        On failure the loaded model keeps serving, the failure is logged once, and the
        same version is tried again only after ``RETRY_FAILED_LOAD_S`` (a new one at once)."""
        with self._loading_lock:
            failed = self._failed.get(region)
            recent = failed is not None and time.monotonic() - failed[1] < RETRY_FAILED_LOAD_S
            if region in self._loading or (recent and failed is not None and failed[0] == version):
                return
            self._loading.add(region)

        def run() -> None:
            try:
                self._load(region, version)
                self._failed.pop(region, None)
            except Exception:
                if failed is None or failed[0] != version:
                    log.exception("loading model %s of region %s failed", version, region)
                self._failed[region] = (version, time.monotonic())
            finally:
                with self._loading_lock:
                    self._loading.discard(region)

        threading.Thread(target=run, name=f"fyp-model-{region}", daemon=True).start()

    def _load_now(self, region: str, version: str | None) -> RegionModel:
        """Load for the request that asks. A damaged artifact makes only its region
        unavailable (503): the client is told that much, the server's log which file
        and why, once per version; the same version is retried after
        ``RETRY_FAILED_LOAD_S`` (a new one at once)."""
        failed = self._failed.get(region)
        recent = failed is not None and time.monotonic() - failed[1] < RETRY_FAILED_LOAD_S
        if recent and failed is not None and failed[0] == version:
            raise unavailable(region)
        try:
            fresh = self._load(region, version)
        except ModelError as exc:
            if version is None:
                raise  # not trained yet: the error says so, and names no file
            if failed is None or failed[0] != version:
                log.error("region %s: model %s cannot be served: %s", region, version, exc)
            self._failed[region] = (version, time.monotonic())
            raise unavailable(region) from exc
        self._failed.pop(region, None)
        return fresh

    def _load(self, region: str, version: str | None) -> RegionModel:
        region_dir = self.deployment.config.region_dir(region)
        with self._lock:
            try:
                fresh = RegionModel.load(region_dir, version)
            except ModelError:
                # the version named a moment ago may be gone already (an erasure deletes
                # versions that name the user once the rewritten one is current): retry
                # once with whatever is current now
                again = current_version(region_dir)
                if again == version:
                    raise
                fresh = RegionModel.load(region_dir, again)
            if fresh.manifest.region != region:
                raise ModelError(
                    f"artifact {fresh.manifest.version} was trained for region "
                    f"{fresh.manifest.region!r}, not {region!r}: refusing to serve it"
                )
            self._models[region] = fresh
            return fresh


def unavailable(region: str) -> ModelError:
    """What a client is told about a region whose live model cannot be loaded: no file
    names, no server paths (the server's log has them)."""
    return ModelError(
        f"the model of region {region!r} is unavailable; the server's log says why",
        region=region,
    )
