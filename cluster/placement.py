"""Where a model replica runs: its Ray resources planned from TP × PP and the node shapes.

Pure planning, no `import ray`: ``deployments/app.py`` hands ``ReplicaPlan.deployment_options``
to Ray Serve, ``kaon.config`` refuses configs that ``fit_errors`` finds, and ``kaon status``
explains a pending replica with ``unfit_reason``.

GPU: vLLM's ``ray`` executor starts one worker per placement-group bundle and refuses
bundles with more than one GPU, so a replica gets one ``{"GPU": 1}`` bundle per worker and
its own actor (vLLM's driver) sits in bundle 0 with its CPU. vLLM ranks the workers node by
node, the driver's first, so a pipeline stage's tensor-parallel group shares a node when
every node holds whole stages. A replica that fits one node is pinned to one
(``STRICT_PACK``: NVLink for TP and PP); a larger one is packed onto as few nodes as
possible (``PACK``), its stages spanning nodes. CPU: vLLM's ``mp`` executor runs every rank
as a child process of the replica, which reserves one logical CPU per rank.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaon.config import KaonConfig, ModelConfig, NodeTypeConfig

STRATEGIES = ("STRICT_PACK", "PACK", "SPREAD", "STRICT_SPREAD")
REPLICA_CPUS = 1
"""Logical CPUs of the replica actor itself on a GPU node."""


@dataclass(slots=True, frozen=True)
class ReplicaPlan:
    """The Ray resources of one replica: its actor's own, and a placement group if it has one."""

    actor_options: dict[str, Any]
    bundles: tuple[dict[str, float], ...] = ()
    strategy: str | None = None
    tensor_parallel_size: int = 1
    reason: str = ""

    @property
    def stages(self) -> tuple[tuple[int, ...], ...]:
        """Bundle indices of each pipeline stage: its tensor-parallel group."""
        size = self.tensor_parallel_size
        return tuple(tuple(range(start, start + size)) for start in range(0, len(self.bundles), size))

    def deployment_options(self) -> dict[str, Any]:
        """Ray Serve deployment options: ``ray_actor_options`` and the placement group."""
        options: dict[str, Any] = {"ray_actor_options": dict(self.actor_options)}
        if self.bundles:
            options["placement_group_bundles"] = [dict(bundle) for bundle in self.bundles]
            options["placement_group_strategy"] = self.strategy
        return options


def plan_replica(model: ModelConfig, device: str, node_types: Sequence[NodeTypeConfig] = ()) -> ReplicaPlan:
    world_size = model.engine.world_size
    if device == "cpu":
        return ReplicaPlan({"num_cpus": world_size}, reason="CPU: vLLM's mp executor, one logical CPU per rank")
    if world_size == 1:
        return ReplicaPlan({"num_cpus": REPLICA_CPUS, "num_gpus": 1}, reason="one GPU, no placement group")
    bundles = ({"CPU": REPLICA_CPUS, "GPU": 1},) + tuple({"GPU": 1} for _ in range(world_size - 1))
    strategy, reason = choose_strategy(model, node_types)
    return ReplicaPlan({"num_cpus": REPLICA_CPUS}, bundles, strategy, model.engine.tensor_parallel_size, reason)


def choose_strategy(model: ModelConfig, node_types: Sequence[NodeTypeConfig]) -> tuple[str, str]:
    """The placement-group strategy for a multi-GPU replica, and why."""
    if model.placement.strategy != "auto":
        return model.placement.strategy, "set by placement.strategy"
    world_size = model.engine.world_size
    if not node_types:
        return "PACK", "node shapes unknown (cluster.node_types): as few nodes as the free GPUs allow"
    fitting = [node_type for node_type in node_types if node_type.gpus >= world_size]
    if fitting:
        smallest = min(fitting, key=lambda node_type: node_type.gpus)
        return "STRICT_PACK", f"fits one {smallest.name} node ({smallest.gpus} GPUs): TP and PP inside one node"
    largest = max(node_types, key=lambda node_type: node_type.gpus)
    nodes = -(-world_size // largest.gpus)
    return "PACK", f"needs {nodes}+ {largest.name} nodes ({largest.gpus} GPUs each): PP stages span nodes"


@dataclass(slots=True, frozen=True)
class FitError:
    """A config that can never fit the cluster's node types, by the field to change."""

    field: str
    message: str
    value: Any


def fit_errors(config: KaonConfig) -> list[FitError]:
    """What can never fit ``cluster.node_types`` at their ``max_nodes`` (none if unknown)."""
    node_types = config.cluster.node_types
    if not node_types or config.cluster.device == "cpu":
        return []
    errors = [error for index, model in enumerate(config.models) for error in _model_fit_errors(index, model, node_types)]
    needed = sum(_required_replicas(model) * model.engine.world_size for model in config.models)
    total = _total_gpus(node_types)
    if not errors and needed > total:
        errors.append(FitError("models", f"the replicas need {needed} GPUs in all (replicas or min_replicas × tp × pp), "
                               f"cluster.node_types have at most {total}", needed))
    return errors


def _model_fit_errors(index: int, model: ModelConfig, node_types: Sequence[NodeTypeConfig]) -> list[FitError]:
    engine = model.engine
    largest = max(node_type.gpus for node_type in node_types)
    total = _total_gpus(node_types)
    path = f"models.{index}"
    if engine.tensor_parallel_size > largest:
        return [FitError(f"{path}.engine.tensor_parallel_size", "a tensor-parallel group must sit on one node, and no node "
                         f"type in cluster.node_types has more than {largest} GPUs", engine.tensor_parallel_size)]
    if engine.world_size > total:
        return [FitError(f"{path}.engine.pipeline_parallel_size", f"a replica needs tp × pp = {engine.world_size} GPUs, "
                         f"cluster.node_types have at most {total}", engine.pipeline_parallel_size)]
    strategy, _ = choose_strategy(model, node_types)
    if strategy == "STRICT_PACK" and engine.world_size > largest:
        return [FitError(f"{path}.placement.strategy", f"puts all {engine.world_size} GPUs of a replica on one node, "
                         f"and no node type has more than {largest}", strategy)]
    if strategy == "STRICT_SPREAD" and engine.world_size > sum(node_type.max_nodes for node_type in node_types):
        return [FitError(f"{path}.placement.strategy", f"puts each of {engine.world_size} GPUs on its own node, "
                         "and cluster.node_types have fewer nodes", strategy)]
    slots = _replica_slots(model, strategy, node_types)
    required = _required_replicas(model)
    if required > slots:
        field = f"{path}.autoscaling.min_replicas" if model.autoscaling else f"{path}.replicas"
        return [FitError(field, f"at most {slots} replicas of {engine.world_size} GPUs ({strategy}) "
                         "fit cluster.node_types", required)]
    return []


def _required_replicas(model: ModelConfig) -> int:
    """Replicas that must always have a place: the fixed count, or the autoscaling floor (above
    it, replicas the cluster cannot hold wait, and `kaon status` says why)."""
    return model.autoscaling.min_replicas if model.autoscaling else model.replicas


def _replica_slots(model: ModelConfig, strategy: str, node_types: Sequence[NodeTypeConfig]) -> int:
    """Replicas the largest cluster holds when this model has it to itself."""
    world_size = model.engine.world_size
    if strategy == "STRICT_PACK":
        return sum(node_type.max_nodes * (node_type.gpus // world_size) for node_type in node_types)
    return _total_gpus(node_types) // world_size


def _total_gpus(node_types: Sequence[NodeTypeConfig]) -> int:
    return sum(node_type.gpus * node_type.max_nodes for node_type in node_types)


@dataclass(slots=True, frozen=True)
class NodeResources:
    """A Ray node as the placement checks see it."""

    node_id: str
    total: dict[str, float]
    alive: bool = True
    labels: dict[str, str] = field(default_factory=dict)


def unfit_reason(bundles: Sequence[Mapping[str, float]], strategy: str, nodes: Sequence[NodeResources]) -> str | None:
    """Why these bundles cannot be placed on these nodes even when idle, in a user's words;
    None if they fit."""
    alive = [node for node in nodes if node.alive]
    need = _sum(bundles)
    if strategy == "STRICT_PACK" and not any(_fits(need, node.total) for node in alive):
        return f"needs {_describe(need)} on one node (STRICT_PACK); the most any node has is {_most(need, alive)}"
    for index, bundle in enumerate(bundles):
        if not any(_fits(bundle, node.total) for node in alive):
            return f"bundle {index} ({_describe(bundle)}) fits no node; the most any node has is {_most(bundle, alive)}"
    if strategy == "STRICT_SPREAD" and len(bundles) > len(alive):
        return f"needs {len(bundles)} distinct nodes (STRICT_SPREAD); the cluster has {len(alive)}"
    total = _sum([node.total for node in alive])
    if not _fits(need, total):
        return f"needs {_describe(need)} in all; the cluster has {_describe({key: total.get(key, 0) for key in need})}"
    return None


def _sum(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for bundle in bundles:
        total.update(bundle)
    return dict(total)


def _fits(need: Mapping[str, float], have: Mapping[str, float]) -> bool:
    return all(have.get(key, 0) >= amount for key, amount in need.items())


def _most(need: Mapping[str, float], nodes: Sequence[NodeResources]) -> str:
    most = {key: max((node.total.get(key, 0) for node in nodes), default=0) for key in need}
    return _describe(most)


def _describe(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{key} {amount:g}" for key, amount in sorted(resources.items(), key=lambda item: item[0] != "GPU"))
