"""What goes in and out of the simulator: its configuration, clock and results. The
autoscaling hook's types (``ClusterSnapshot``, ``Decision``, the ``AutoscalingPolicy``
protocol) are kaon's own, from ``kaon.autoscaling.snapshot``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaon.autoscaling.snapshot import AutoscalingPolicy, ClusterSnapshot, Decision  # noqa: F401 - re-exported
from kaon.sim.cost_model import CostModel


class SimClock:
    """Simulated seconds, callable like ``time.monotonic``: hand it to a policy that reads a
    clock (``prefix_load``) and to the ``Simulator`` that advances it."""

    __slots__ = ("now_s",)

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@dataclass(slots=True)
class SimConfig:
    """Cluster shape. ``replicas`` is the initial count; ``max_ongoing_requests`` is Serve's
    per-replica cap at the router; arrivals stop at the end of the workload, and requests
    still unfinished ``drain_timeout_s`` after the last arrival are reported as unfinished.
    The autoscaler decides every ``autoscale_interval_s`` and sees the requests each replica
    finished over the last ``metrics_window_s``, as reported with its stats."""

    replicas: int = 16
    max_ongoing_requests: int = 256
    stats_interval_s: float = 1.0
    timeline_interval_s: float = 1.0
    autoscale_interval_s: float = 1.0
    metrics_window_s: float = 10.0
    min_replicas: int = 0
    max_replicas: int = 1024
    drain_timeout_s: float = 300.0


@dataclass(slots=True)
class RequestRecord:
    """One finished request; times in seconds, relative to its arrival at the router."""

    request_id: str
    group_id: str
    replica_id: str
    arrival_s: float
    ttft_s: float
    e2e_s: float
    queue_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int


@dataclass(slots=True)
class TimelinePoint:
    """The interval ending at ``time_s``: rates per second, counts at ``time_s``, and the
    TTFT of the requests whose first token came in the interval (None if none did)."""

    time_s: float
    offered_per_s: float
    completed_per_s: float
    queue_depth_requests: int
    in_flight_requests: int
    running_replicas: int
    starting_replicas: int
    desired_replicas: int
    ttft_p50_s: float | None
    ttft_mean_s: float | None


@dataclass(slots=True)
class SimResult:
    policy: str
    cost: CostModel
    config: SimConfig
    records: list[RequestRecord]
    timeline: list[TimelinePoint]
    replica_prefix_tokens: dict[str, tuple[int, int]]  # replica -> (hits, queries)
    arrived: int
    unfinished: int
    last_arrival_s: float
    end_s: float
    wall_clock_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float | None:
        hits = sum(h for h, _ in self.replica_prefix_tokens.values())
        queries = sum(q for _, q in self.replica_prefix_tokens.values())
        return hits / queries if queries else None
