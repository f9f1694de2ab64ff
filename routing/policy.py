"""The routing policy interface, and the registry that picks a policy by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


class RoutingPolicy(Protocol):
    """Ranks replicas for one request; told what was routed and what finished.

    ``rank`` returns tiers of replica ids, best first: the caller sends the request to a
    replica of the first tier that can take it, then tries the next tier.
    """

    name: str

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]: ...

    def on_routed(self, request: RoutingRequest, replica_id: str) -> None: ...

    def on_completed(self, request_id: str, replica_id: str) -> None: ...

    def on_replica_removed(self, replica_id: str) -> None: ...
