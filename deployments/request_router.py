"""kaon's Ray Serve RequestRouter: a thin adapter from Serve's routing hooks to a pure policy.

Serve calls ``choose_replicas`` in the caller's process (the router deployment) with the
pending request; the RoutingRequest (block hashes) travels as the call's ``routing``
keyword. The load view costs no remote call: in-flight counts are this router's own, and
engine stats arrive in the background through Serve's routing-stats channel
(``ModelReplica.record_routing_stats``).
"""

from __future__ import annotations

from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from kaon.engine.stats import EngineStats
from kaon.routing.registry import make_policy
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


class KaonRequestRouter(RequestRouter):
    def initialize_state(self, policy: str = "prefix_load", seed: int = 0, settings: dict[str, Any] | None = None) -> None:
        self._policy = make_policy(policy, seed=seed, settings=settings)
        self._in_flight: dict[str, int] = {}
        self._routed: dict[str, tuple[str, str]] = {}  # Serve's internal request id → (replica, kaon request id)
        self._known: set[str] = set()

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        tiers = self._policy.rank(_routing_request(pending_request), [self._snapshot(r) for r in candidate_replicas])
        return [[by_id[rid] for rid in tier] for tier in tiers]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult) -> None:
        request = _routing_request(pending_request)
        rid = replica_id.unique_id
        self._in_flight[rid] = self._in_flight.get(rid, 0) + 1
        self._routed[pending_request.metadata.internal_request_id] = (rid, request.request_id)
        self._policy.on_routed(request, rid)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        routed = self._routed.pop(internal_request_id, None)
        if routed is None:
            return
        rid, request_id = routed
        self._in_flight[rid] = max(0, self._in_flight.get(rid, 1) - 1)
        self._policy.on_completed(request_id, rid)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        current = {r.replica_id.unique_id for r in replicas}
        for gone in self._known - current:
            self._forget(gone)
        self._known = current

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._forget(replica_id.unique_id)

    def _forget(self, rid: str) -> None:
        self._policy.on_replica_removed(rid)
        self._in_flight.pop(rid, None)

    def _snapshot(self, replica: RunningReplica) -> ReplicaSnapshot:
        rid = replica.replica_id.unique_id
        stats = EngineStats.from_dict(replica.routing_stats or {}) or EngineStats()
        return ReplicaSnapshot(
            replica_id=rid,
            in_flight_requests=self._in_flight.get(rid, 0),
            engine_running_requests=stats.running_requests,
            engine_waiting_requests=stats.waiting_requests,
            kv_cache_usage=stats.kv_cache_usage,
            max_ongoing_requests=replica.max_ongoing_requests,
        )


def _routing_request(pending_request: PendingRequest | None) -> RoutingRequest:
    """The RoutingRequest the router deployment attached; an empty one for other callers."""
    if pending_request is None:
        return RoutingRequest("")
    routing = pending_request.kwargs.get("routing")
    if isinstance(routing, RoutingRequest):
        return routing
    return RoutingRequest(pending_request.metadata.request_id)
