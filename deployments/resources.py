"""Ray resources for one model replica, derived from its parallelism and the device.

CPU: vLLM's ``mp`` executor runs every tensor-parallel rank as a child process of the
replica, so the replica actor reserves one logical CPU per rank. GPU: a placement group
with the replica's own CPU and one GPU per worker in the first bundle, then one GPU per
further worker; vLLM's ``ray`` executor places its workers in that group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaon.config import ModelConfig


@dataclass(slots=True, frozen=True)
class ReplicaResources:
    ray_actor_options: dict[str, Any]
    placement_group_bundles: list[dict[str, float]] | None = None
    placement_group_strategy: str | None = None

    def deployment_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ray_actor_options": self.ray_actor_options}
        if self.placement_group_bundles is not None:
            options["placement_group_bundles"] = self.placement_group_bundles
            options["placement_group_strategy"] = self.placement_group_strategy
        return options


def replica_resources(model: ModelConfig, device: str) -> ReplicaResources:
    world_size = model.engine.world_size
    if device == "cpu":
        return ReplicaResources(ray_actor_options={"num_cpus": world_size})
    if world_size == 1:
        return ReplicaResources(ray_actor_options={"num_cpus": 1, "num_gpus": 1})
    bundles = [{"CPU": 1, "GPU": 1}] + [{"GPU": 1} for _ in range(world_size - 1)]
    return ReplicaResources(ray_actor_options={"num_cpus": 1}, placement_group_bundles=bundles, placement_group_strategy="PACK")
