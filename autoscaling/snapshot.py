"""The named objects an autoscaling policy decides over and returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True, frozen=True)
class ReplicaLoad:
    """One serving replica as it last reported: its engine's running and waiting requests,
    and the requests it finished over the last ``window_s`` seconds (the metrics window, or
    less for a replica that started serving within it)."""

    running_requests: int = 0
    waiting_requests: int = 0
    completed_requests: float = 0.0
    window_s: float = 0.0

    @property
    def completed_per_s(self) -> float:
        return self.completed_requests / self.window_s if self.window_s > 0 else 0.0


@dataclass(slots=True, frozen=True)
class ClusterSnapshot:
    """One model's replicas at ``time_s``.

    ``starting_replicas`` were asked for and do not serve yet; ``handle_queued_requests``
    wait at the deployment handles (the router) for a replica; ``replicas`` are the serving
    replicas that reported (figures up to one metrics interval old).
    """

    time_s: float
    running_replicas: int
    starting_replicas: int = 0
    handle_queued_requests: float = 0.0
    replicas: tuple[ReplicaLoad, ...] = ()

    @property
    def queue_depth_requests(self) -> float:
        """Requests waiting for a batch slot: at the handles plus in every engine's queue."""
        return self.handle_queued_requests + sum(r.waiting_requests for r in self.replicas)

    @property
    def busy_requests(self) -> int:
        return sum(r.running_requests for r in self.replicas)

    def arrivals_per_s(self, demand_growth_per_s: float) -> float:
        """Requests arriving per second: those finished over the metrics window (the longest
        any replica reported) plus the growth of the demand."""
        window_s = max((r.window_s for r in self.replicas), default=0.0)
        finished = sum(r.completed_requests for r in self.replicas)
        return (finished / window_s if window_s > 0 else 0.0) + demand_growth_per_s


@dataclass(slots=True, frozen=True)
class Decision:
    """A policy's answer. ``action`` is a short name for metrics (see ``ACTIONS``); ``reason``
    says in words which figures led to ``desired_replicas``."""

    desired_replicas: int
    action: str
    reason: str
    queue_depth_requests: float = 0.0
    current_replicas: int = 0


ACTIONS = ("steady", "scale_up", "panic", "from_zero", "hold", "scale_down", "to_zero")
"""``hold``: more replicas would be needed by the queue alone, but replicas already starting
(or a backlog that drains by itself) cover it; ``steady``: nothing to change or a window
still stabilises the change."""


class AutoscalingPolicy(Protocol):
    """Pure decision: the decision and the state to pass in next time (None the first time)."""

    def decide(self, snapshot: ClusterSnapshot, state: Any) -> tuple[Decision, Any]: ...


def counter_increase(samples: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(increase, seconds) of a cumulative counter over ``(time_s, value)`` samples, oldest
    first; (0, 0) with fewer than two."""
    if len(samples) < 2:
        return 0.0, 0.0
    (first_s, first), (last_s, last) = samples[0], samples[-1]
    return max(last - first, 0.0), max(last_s - first_s, 0.0)
