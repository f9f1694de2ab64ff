"""kaon's Ray Serve RequestRouter: a thin adapter from Serve's routing hooks to a pure policy.

Serve calls ``choose_replicas`` in the caller's process (the router deployment) with the
pending request; the RoutingRequest (block hashes) travels as the call's ``routing``
keyword. The load view costs no remote call: in-flight counts are this router's own, and
engine stats arrive in the background through Serve's routing-stats channel
(``ModelReplica.record_routing_stats``), which also carries each replica's KV-event address.
In precise mode a background thread feeds those events into the policy's prefix index; a
lock keeps it from changing the index while a request is ranked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from kaon.deployments.kv_event_listener import KVEventListener
from kaon.deployments.routing_metrics import RoutingMetrics
from kaon.engine.stats import EngineStats, KVEventSource
from kaon.routing.kv_events import EventTracker, KVEvent
from kaon.routing.prefix_load import PrefixLoad
from kaon.routing.registry import make_policy
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest

class KaonRequestRouter(RequestRouter):
    def initialize_state(
        self, policy: str = "prefix_load", seed: int = 0, settings: dict[str, Any] | None = None, events: dict[str, float] | None = None
    ) -> None:
        self._policy = make_policy(policy, seed=seed, settings=settings)
        self._metrics = RoutingMetrics(self._deployment_id.name, policy)
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._routed: dict[str, tuple[str, str]] = {}  # Serve's internal request id → (replica, kaon request id)
        self._known: set[str] = set()
        self._watched: dict[str, KVEventSource] = {}  # replica → the KV-event sockets subscribed to
        self._events: EventTracker | None = None
        self._listener: KVEventListener | None = None
        if events is not None and isinstance(self._policy, PrefixLoad):
            self._events = EventTracker(self._policy.index, self._policy.settings.block_size_tokens, on_fallback=self._metrics.fallback, **events)
            self._listener = KVEventListener(self._on_events)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        snapshots = [self._snapshot(r) for r in candidate_replicas]
        with self._lock:
            if self._events is not None:
                self._events.check(time.monotonic())
            tiers = self._policy.rank(_routing_request(pending_request), snapshots)
        return [[by_id[rid] for rid in tier] for tier in tiers]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult) -> None:
        request = _routing_request(pending_request)
        rid = replica_id.unique_id
        self._in_flight[rid] = self._in_flight.get(rid, 0) + 1
        self._routed[pending_request.metadata.internal_request_id] = (rid, request.request_id)
        with self._lock:
            predicted = self._policy.predicted_cached_blocks(request, rid) if isinstance(self._policy, PrefixLoad) else None
            self._policy.on_routed(request, rid)
            if self._events is not None:
                self._events.on_routed(rid, request.block_hashes, time.monotonic())
        self._metrics.routed(rid, len(request.block_hashes), predicted)

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
        if self._events is not None:
            for new in current - self._known:
                self._metrics.index_mode(new, False)
        self._known = current

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._forget(replica_id.unique_id)

    def _forget(self, rid: str) -> None:
        with self._lock:
            self._policy.on_replica_removed(rid)
            if self._events is not None:
                self._events.forget(rid)
        if self._watched.pop(rid, None) is not None and self._listener is not None:
            self._listener.unwatch(rid)
        self._in_flight.pop(rid, None)

    def _on_events(self, replica_id: str, seq: int, events: Sequence[KVEvent]) -> None:
        """Called in the listener's thread."""
        with self._lock:
            was_live = self._events.is_live(replica_id)
            self._events.on_batch(replica_id, seq, events, time.monotonic())
            live = self._events.is_live(replica_id)
        if live != was_live:
            self._metrics.index_mode(replica_id, live)

    def _snapshot(self, replica: RunningReplica) -> ReplicaSnapshot:
        rid = replica.replica_id.unique_id
        routing_stats = replica.routing_stats or {}
        stats = EngineStats.from_dict(routing_stats) or EngineStats()
        self._watch(rid, KVEventSource.from_stats(routing_stats))
        return ReplicaSnapshot(
            replica_id=rid,
            in_flight_requests=self._in_flight.get(rid, 0),
            engine_running_requests=stats.running_requests,
            engine_waiting_requests=stats.waiting_requests,
            kv_cache_usage=stats.kv_cache_usage,
            max_ongoing_requests=replica.max_ongoing_requests,
        )

    def _watch(self, rid: str, source: KVEventSource | None) -> None:
        """Subscribe to a replica's events once it announces where it publishes them."""
        if self._listener is None or source is None or self._watched.get(rid) == source:
            return
        with self._lock:
            self._events.forget(rid)  # new sockets are a restarted engine: a new sequence
        self._watched[rid] = source
        self._listener.watch(rid, source)


def _routing_request(pending_request: PendingRequest | None) -> RoutingRequest:
    """The RoutingRequest the router deployment attached; an empty one for other callers."""
    if pending_request is None:
        return RoutingRequest("")
    routing = pending_request.kwargs.get("routing")
    if isinstance(routing, RoutingRequest):
        return routing
    return RoutingRequest(pending_request.metadata.request_id)
