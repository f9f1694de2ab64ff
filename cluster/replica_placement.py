"""Where each replica landed, for `kaon status`: its node, its GPU workers' nodes, or why it
has no place yet.

Read from the GCS through the driver connection: Serve's replica details (node of each
replica actor), the placement-group table (node of each bundle; Serve names a replica's
group after its actor) and the node table (IPs, labels, resources). The explanation of a
pending replica is ``kaon.cluster.placement.unfit_reason`` over the alive nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from kaon.cluster.placement import NodeResources, unfit_reason


@dataclass(slots=True, frozen=True)
class NodeView:
    """A Ray node, equal to another by id alone."""

    node_id: str
    ip: str = field(compare=False)
    labels: dict[str, str] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(self.labels.items()) if not key.startswith("ray.io/"))
        return f"node {self.node_id[:8]} {self.ip}" + (f" ({labels})" if labels else "")


@dataclass(slots=True)
class ReplicaPlacement:
    replica_id: str
    state: str
    node: NodeView | None
    strategy: str | None = None
    bundle_nodes: list[NodeView | None] = field(default_factory=list)
    """The node of each placement-group bundle (one per GPU worker), in bundle order."""
    pending: str = ""
    """Why the replica has no place yet; empty once it has one."""

    def gpu_workers_line(self) -> str:
        """`GPU workers (PACK): 2 on node a1b2c3d4 10.0.0.3 (…), 2 on node …` in bundle order."""
        counts: dict[NodeView, int] = {}
        for node in self.bundle_nodes:
            if node is not None:
                counts[node] = counts.get(node, 0) + 1
        return f"GPU workers ({self.strategy}): " + ", ".join(f"{count} on {node.describe()}" for node, count in counts.items())


@dataclass(slots=True, frozen=True)
class ClusterView:
    """The nodes and placement groups of the cluster at one moment."""

    nodes: dict[str, NodeView]
    resources: list[NodeResources]
    groups: dict[str, dict[str, Any]]

    @classmethod
    def read(cls) -> ClusterView:
        table = ray.nodes()
        nodes = {n["NodeID"]: NodeView(n["NodeID"], n["NodeManagerAddress"], dict(n.get("Labels") or {})) for n in table}
        resources = [NodeResources(n["NodeID"], dict(n["Resources"]), n["Alive"]) for n in table]
        groups = {g["name"]: g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"}
        return cls(nodes, resources, groups)

    def placement(self, replica: dict[str, Any], deployment_config: dict[str, Any]) -> ReplicaPlacement:
        """One replica from Serve's details, with its deployment's resource options."""
        node = self.nodes.get(replica.get("node_id") or "")
        state = replica["state"]
        placed = ReplicaPlacement(replica["replica_id"], str(getattr(state, "value", state)), node)
        group = self.groups.get(replica.get("actor_name", ""))
        if group is not None:
            placed.strategy = group["strategy"]
            placed.bundle_nodes = [self.nodes.get(group["bundles_to_node_id"][i]) for i in sorted(group["bundles"])]
            if group["state"] != "CREATED":
                bundles = [group["bundles"][i] for i in sorted(group["bundles"])]
                reason = unfit_reason(bundles, group["strategy"], self.resources) or "waiting for resources other replicas hold"
                placed.pending = f"{reason} [Ray: {group['stats']['scheduling_state']}]"
        elif node is None:
            placed.pending = unfit_reason([_actor_resources(deployment_config)], "PACK", self.resources) or ""
        return placed


def _actor_resources(deployment_config: dict[str, Any]) -> dict[str, float]:
    options = deployment_config.get("ray_actor_options") or {}
    resources = {"CPU": options.get("num_cpus", 1), "GPU": options.get("num_gpus", 0), **(options.get("resources") or {})}
    return {key: amount for key, amount in resources.items() if amount}
