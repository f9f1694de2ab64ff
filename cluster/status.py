"""What `kaon status` and `kaon serve`'s progress show: applications, deployments, replicas, load.

Read through the Ray driver connection (GCS and the replica actors), not the dashboard's HTTP
API, which needs Ray's auth token. Per-replica load comes from each replica's routing stats
(the same numbers the request routers see) and Ray Serve's own ongoing-request count; where
each replica and its GPU workers landed from ``replica_placement``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ray
from ray import serve

from kaon.cluster.replica_placement import ClusterView, ReplicaPlacement
from kaon.engine.stats import EngineStats

REPLICA_PREFIX = "SERVE_REPLICA::"
STATS_TIMEOUT_S = 5.0


@dataclass(slots=True)
class ReplicaLoad:
    replica_id: str
    ongoing_requests: int
    engine: EngineStats | None


@dataclass(slots=True)
class DeploymentView:
    name: str
    status: str
    replica_states: dict[str, int]
    message: str
    replicas: list[ReplicaLoad] = field(default_factory=list)
    placements: list[ReplicaPlacement] = field(default_factory=list)

    @property
    def queue_depth(self) -> int:
        return sum(r.engine.waiting_requests for r in self.replicas if r.engine is not None)


@dataclass(slots=True)
class AppView:
    name: str
    status: str
    message: str
    deployments: list[DeploymentView]


def read_apps(with_load: bool = True) -> list[AppView]:
    apps = []
    for app_name, app in serve.status().applications.items():
        deployments = [
            DeploymentView(
                name=name,
                status=str(dep.status.value if hasattr(dep.status, "value") else dep.status),
                replica_states={str(getattr(s, "value", s)): n for s, n in dep.replica_states.items()},
                message=dep.message,
            )
            for name, dep in app.deployments.items()
        ]
        if with_load:
            details = _serve_details()["applications"].get(app_name, {}).get("deployments", {})
            cluster = ClusterView.read()
            for deployment in deployments:
                detail = details.get(deployment.name, {})
                config = detail.get("deployment_config", {})
                deployment.placements = [cluster.placement(replica, config) for replica in detail.get("replicas", [])]
                starting = {placement.replica_id for placement in deployment.placements if placement.state != "RUNNING"}
                deployment.replicas = _replica_loads(app_name, deployment.name, starting)
        status = str(getattr(app.status, "value", app.status))
        apps.append(AppView(name=app_name, status=status, message=app.message, deployments=deployments))
    return apps


def _serve_details() -> dict:
    from ray.serve.context import _get_global_client

    return _get_global_client().get_serve_details()


def _replica_loads(app_name: str, deployment: str, starting: set[str]) -> list[ReplicaLoad]:
    """The load of each replica but the ``starting`` ones, which cannot answer yet."""
    prefix = f"{REPLICA_PREFIX}{app_name}#{deployment}#"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(prefix) and a["name"].removeprefix(prefix) not in starting]
    loads = []
    for name in sorted(names):
        try:
            actor = ray.get_actor(name, namespace="serve")
            stats, ongoing = ray.get(
                [actor.record_routing_stats.remote(), actor.get_num_ongoing_requests.remote()],
                timeout=STATS_TIMEOUT_S,
            )
        except Exception:  # noqa: BLE001 - a replica starting or stopping has no load to show
            continue
        loads.append(ReplicaLoad(name.removeprefix(prefix), ongoing, EngineStats.from_dict(stats)))
    return loads


def format_apps(apps: list[AppView]) -> str:
    if not apps:
        return "no kaon application is running"
    lines = []
    for app in apps:
        lines.append(f"application {app.name}: {app.status}" + (f" — {app.message}" if app.message else ""))
        for dep in app.deployments:
            states = ", ".join(f"{n} {s}" for s, n in sorted(dep.replica_states.items())) or "no replicas"
            lines.append(f"  {dep.name}: {dep.status} ({states}), queue depth {dep.queue_depth}")
            if dep.message:
                lines.append(f"    {dep.message}")
            lines += _replica_lines(dep)
    return "\n".join(lines)


def _replica_lines(deployment: DeploymentView) -> list[str]:
    loads = {load.replica_id: load for load in deployment.replicas}
    lines = []
    for placement in deployment.placements:
        if placement.pending:
            lines.append(f"    replica {placement.replica_id}: {placement.state}, no place yet: {placement.pending}")
            continue
        where = f" on {placement.node.describe()}" if placement.node else ""
        load = loads.get(placement.replica_id)
        lines.append(f"    replica {placement.replica_id}: {placement.state}{where}" + (f"; {_load_line(load)}" if load else ""))
        if placement.bundle_nodes:
            lines.append(f"      {placement.gpu_workers_line()}")
    return lines


def _load_line(replica: ReplicaLoad) -> str:
    line = f"ongoing {replica.ongoing_requests}"
    engine = replica.engine
    if engine is not None:
        line += (
            f", running {engine.running_requests}, waiting {engine.waiting_requests}, "
            f"kv cache {engine.kv_cache_usage:.0%}, prefix hit rate {engine.prefix_cache_hit_rate:.0%}"
        )
    return line
