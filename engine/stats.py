"""What an engine tells the routers and tools through Serve's routing-stats channel: its load
(``EngineStats``) and where it publishes its KV-cache events (``KVEventSource``).

Kept free of vLLM imports so `kaon status` and the policies stay light.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar


@dataclass(slots=True, frozen=True)
class EngineStats:
    """One engine's load at a moment, as vLLM's scheduler reported it.

    ``prefix_cache_hit_rate`` is hits / queried tokens since the engine started.
    """

    running_requests: int = 0
    waiting_requests: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queried_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    timestamp_s: float = 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        if self.prefix_cache_queried_tokens == 0:
            return 0.0
        return self.prefix_cache_hit_tokens / self.prefix_cache_queried_tokens

    def to_dict(self) -> dict[str, float]:
        """The form Ray Serve's routing-stats channel carries (plain values only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> EngineStats | None:
        """None for an empty dict: a deployment that reports no engine stats (the router)."""
        if not values:
            return None
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass(slots=True, frozen=True)
class KVEventSource:
    """An engine's KV-cache event sockets (ZMQ): ``endpoint`` publishes every batch as it
    happens; ``replay_endpoint`` resends the batches still buffered from a sequence number
    on, for a subscriber that joined late or missed some."""

    STATS_KEY: ClassVar[str] = "kv_events"
    """Its key in a replica's routing stats."""

    endpoint: str
    replay_endpoint: str | None = None

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> KVEventSource | None:
        values = stats.get(cls.STATS_KEY)
        return cls(**values) if values else None
