"""Reference policies kept for measurement: round robin and power of two choices."""

from __future__ import annotations

import random
from collections.abc import Sequence

from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


class StatelessHooks:
    """No-op lifecycle hooks for policies that keep no per-request state."""

    def on_routed(self, request: RoutingRequest, replica_id: str) -> None:
        pass

    def on_completed(self, request_id: str, replica_id: str) -> None:
        pass

    def on_replica_removed(self, replica_id: str) -> None:
        pass


class RoundRobin(StatelessHooks):
    """Each request to the next replica in id order, skipping none."""

    name = "round_robin"

    def __init__(self, seed: int = 0):
        self._next = 0

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        ids = sorted(r.replica_id for r in replicas)
        if not ids:
            return []
        start = self._next % len(ids)
        self._next += 1
        return [[replica_id] for replica_id in ids[start:] + ids[:start]]


def load(replica: ReplicaSnapshot) -> int:
    """Requests ahead of a new one: the router's in-flight count, or the engine's own count
    where the engine knows of more (requests from other routers)."""
    engine = replica.engine_running_requests + replica.engine_waiting_requests
    return max(replica.in_flight_requests, engine)


class PowerOfTwo(StatelessHooks):
    """Two replicas at random; the less loaded first (Ray Serve's default rule)."""

    name = "power_of_two"

    def __init__(self, seed: int = 0):
        self._rng = random.Random(seed)

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        if len(replicas) <= 2:
            pair = list(replicas)
        else:
            pair = self._rng.sample(list(replicas), 2)
        pair.sort(key=load)
        chosen = {r.replica_id for r in pair}
        rest = sorted((r for r in replicas if r.replica_id not in chosen), key=load)
        return [[r.replica_id] for r in pair + rest]
