"""Where a region's models were trained, and whether that place was allowed.

A region's data may be processed only where the region allows. fyp's region policy
(``[regions.R.policy]``) names no processing locations, so the place is a cluster node
labelled for the region: a Ray node started with the custom resource
``fyp-region:<region>`` (``ray start --resources '{"fyp-region:eu": 1}'``). A region's
Ray task asks for that resource, so Ray can schedule it on no other node
(``fyp.models.ray_executor``). Labelling a node is the operator's statement that the
node is somewhere the region's data may be processed.

Every artifact's manifest records where it was trained, ``lineage.trained_on``:

- local training: ``{"executor": "local", "host": <hostname>}``;
- a Ray task: ``{"executor": "ray", "host", "ray_node_id", "ray_node_labels"`` (the
  node's ``fyp-region:*`` resources), ``"ray_assigned"`` (the ``fyp-region:*``
  resources Ray assigned to the task), ``"ray_version"}``.

:func:`placement_problem` is the one check of a Ray record: the task applies it to its
own node before it reads anything, and ``fyp lineage verify`` to every manifest.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

LABEL_PREFIX = "fyp-region:"
# what a region's task asks of its label: any node that carries the label at all can run
# it (the label says the region's data may be processed there; it is not a capacity)
LABEL_SHARE = 0.001
EXECUTORS = ("local", "ray")


def region_label(region: str) -> str:
    """The custom resource a node carries when the region may be trained on it."""
    return LABEL_PREFIX + region


def node_labels(resources: Mapping[str, Any]) -> list[str]:
    """The ``fyp-region:*`` labels among a node's resources (any positive amount)."""
    return sorted(k for k, v in resources.items() if k.startswith(LABEL_PREFIX) and v > 0)


def local_placement() -> dict[str, Any]:
    return {"executor": "local", "host": socket.gethostname()}


def placement_problem(region: str, trained_on: Any) -> str | None:
    """Why a ``trained_on`` record does not show training where ``region`` allows, or
    None. Local training is the deployment's own host, as before placement existed."""
    if not isinstance(trained_on, dict) or trained_on.get("executor") not in EXECUTORS:
        return f"manifest's trained_on record is not understood: {trained_on!r}"
    if trained_on["executor"] == "local":
        return None
    label = region_label(region)
    node = trained_on.get("ray_node_id")
    labels = trained_on.get("ray_node_labels")
    assigned = trained_on.get("ray_assigned")
    if not node or not isinstance(labels, list) or not isinstance(assigned, dict):
        return f"trained on Ray; the record lacks its node, labels or assignment: {trained_on!r}"
    where = f"Ray node {node} (host {trained_on.get('host', '?')})"
    if label not in labels:
        shown = ", ".join(str(x) for x in labels) or "none"
        return f"trained on {where}, which is not labelled {label} (its labels: {shown})"
    if label not in assigned:
        return f"trained on {where}, but Ray did not assign {label} to the training task"
    return None
