"""Train each region as a Ray task, only on a node labelled for the region (fail closed).

``fyp train DIR --ray ADDRESS`` (or ``[training] ray``) connects to a Ray cluster
(``auto``: the cluster this host belongs to; ``HOST:6379``: its head; ``ray://HOST:10001``:
Ray Client, which needs ``ray[client]``; ``local``: a throwaway single-node cluster
with no region labels, so every region is refused) and submits one task per region.
A region's task asks for the resource ``fyp-region:<region>``
(``fyp.models.placement``), so Ray can only schedule it on a node started with that
label. Before submitting, the live nodes are read: a region no live node is labelled
for is refused (``placement_refused``), never run elsewhere; a task still waiting
while its labelled nodes leave the cluster is cancelled and refused the same way.
On its node, the task checks its own placement again before it reads anything, and
records it in the manifest (``lineage.trained_on``) for ``fyp lineage verify``.

The task runs :func:`fyp.models.executors.train_region_summary`, as a local process
would: it reads the region's store by its URL and publishes into the region's models
directory, so every node must see the deployment directory at the driver's path (a
shared filesystem; the SQLite stores live there too) and have fyp installed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fyp.config import CONFIG_FILE
from fyp.errors import ClusterError, PlacementRefused
from fyp.models.executors import (
    RegionOutcome,
    TrainingExecutor,
    as_fyp_error,
    train_region_summary,
)
from fyp.models.placement import LABEL_SHARE, node_labels, placement_problem, region_label

if TYPE_CHECKING:
    from types import ModuleType

RECHECK_S = 5.0  # how often the nodes are read again while tasks wait or run
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(
            f"training on Ray needs the ray package: pip install 'fyp[ray]' ({exc})"
        ) from exc
    return ray


def reachable(address: str) -> None:
    """Refuse at once an address nobody answers at: Ray itself retries a dead one for
    minutes, printing a warning every few seconds. (``auto`` and ``local`` are Ray's.)"""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r}: {exc} (is its head node started, "
            "`ray start --head`, and the address its GCS or client port?)"
        ) from exc


def live_nodes(ray: ModuleType) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def placeable(nodes: list[dict[str, Any]], region: str) -> list[dict[str, Any]]:
    """The live nodes a region's task can be scheduled on: labelled for it, with a CPU."""
    label = region_label(region)
    return [
        n
        for n in nodes
        if n["Resources"].get(label, 0) >= LABEL_SHARE and n["Resources"].get("CPU", 0) >= 1
    ]


def refusal(region: str, nodes: list[dict[str, Any]], when: str = "") -> PlacementRefused:
    labelled = sorted({lab for n in nodes for lab in node_labels(n["Resources"])})
    return PlacementRefused(
        f"no live Ray node is labelled {region_label(region)}{when}, so it "
        f"is not trained anywhere (labels in the cluster: {', '.join(labelled) or 'none'}; "
        f"start a node where {region}'s data may be processed with "
        f"ray start --resources '{{\"{region_label(region)}\": 1}}')",
        region=region,
    )


def node_placement(region: str) -> dict[str, Any]:
    """This task's node, as the manifest records it; refused unless it is labelled for
    the region and Ray assigned the label to this task."""
    ray = import_ray()
    context = ray.get_runtime_context()
    node_id = context.get_node_id()
    node = next((n for n in ray.nodes() if n["NodeID"] == node_id), None)
    record = {
        "executor": "ray",
        "host": socket.gethostname(),
        "ray_node_id": node_id,
        "ray_node_labels": node_labels(node["Resources"]) if node else [],
        "ray_assigned": {
            k: v for k, v in context.get_assigned_resources().items() if k == region_label(region)
        },
        "ray_version": ray.__version__,
    }
    problem = placement_problem(region, record)
    if problem is not None:
        raise PlacementRefused(problem, region=region)
    return record


def train_on_node(directory: str, region: str, keep: int) -> dict[str, Any]:
    """The Ray task: check the placement, then train as a local process does."""
    trained_on = node_placement(region)
    if not (Path(directory) / CONFIG_FILE).is_file():
        raise ClusterError(
            f"Ray node {trained_on['ray_node_id']} (host "
            f"{trained_on['host']}) does not see the deployment at {directory}: every node "
            "must mount the deployment directory at the same path",
            region=region,
        )
    return train_region_summary(directory, region, keep, trained_on)


class RayExecutor(TrainingExecutor):
    """A Ray task per region. A process already connected to Ray (``ray.init``) trains
    on that connection and keeps it; otherwise this connects to ``address`` and
    disconnects when done (the cluster stays up)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def run(self, directory: Path, regions: list[str], keep: int) -> Iterator[RegionOutcome]:
        ray = import_ray()
        connect = not ray.is_initialized()
        if connect:
            reachable(self.address)
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError, ...
                raise ClusterError(
                    f"cannot connect to the Ray cluster at {self.address!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        try:
            yield from self._run(ray, str(directory.resolve()), regions, keep)
        finally:
            if connect:
                ray.shutdown()

    def _run(
        self, ray: ModuleType, directory: str, regions: list[str], keep: int
    ) -> Iterator[RegionOutcome]:
        task = ray.remote(num_cpus=1)(train_on_node)
        nodes = live_nodes(ray)
        waiting: dict[Any, str] = {}
        for region in regions:
            if not placeable(nodes, region):
                yield RegionOutcome(region, error=refusal(region, nodes))
                continue
            options = task.options(resources={region_label(region): LABEL_SHARE})
            waiting[options.remote(directory, region, keep)] = region
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=RECHECK_S)
            for ref in ready:
                yield self._outcome(ray, waiting.pop(ref), ref)
            if ready:
                continue
            nodes = live_nodes(ray)  # fail closed: a region whose nodes left is refused
            for ref, region in list(waiting.items()):
                if not placeable(nodes, region):
                    ray.cancel(ref, force=True)
                    del waiting[ref]
                    yield RegionOutcome(region, error=refusal(region, nodes, " any more"))

    @staticmethod
    def _outcome(ray: ModuleType, region: str, ref: Any) -> RegionOutcome:
        try:
            return RegionOutcome(region, ray.get(ref))
        except ray.exceptions.RayTaskError as exc:  # raised by the task: the cause
            return RegionOutcome(region, error=as_fyp_error(exc.cause))
        except ray.exceptions.RayError as exc:  # its worker or node died, it was cancelled
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return RegionOutcome(
                region,
                error=ClusterError(
                    f"its Ray task failed: {type(exc).__name__}: {first}",
                    region=region,
                ),
            )
