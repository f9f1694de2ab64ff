"""The named objects a routing policy decides over."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class ReplicaSnapshot:
    """One replica as the router sees it at decision time.

    ``in_flight_requests`` is the router's own count (exact, no remote call); the engine
    figures come from the replica's last pushed stats and may be a few seconds old.
    """

    replica_id: str
    in_flight_requests: int = 0
    engine_running_requests: int = 0
    engine_waiting_requests: int = 0
    kv_cache_usage: float = 0.0
    max_ongoing_requests: int = 256

    @property
    def has_capacity(self) -> bool:
        return self.in_flight_requests < self.max_ongoing_requests


@dataclass(slots=True, frozen=True)
class RoutingRequest:
    """What the policy knows of a request: its prompt's KV-block hashes, chained as vLLM does,
    and its prompt length (the prefill work if nothing is cached)."""

    request_id: str
    block_hashes: tuple[int, ...] = ()
    prompt_tokens: int = 0
