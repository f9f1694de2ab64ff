"""Step-response figures of an autoscaler, from a timeline of replica counts.

A timeline point is anything with ``time_s``, ``running_replicas``, ``starting_replicas`` and
``desired_replicas`` (the simulator's and ``kaon bench``'s ``TimelinePoint``), one per
interval, oldest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class StepResponse:
    """How the replica count answered a load step starting at ``step_start_s``.

    ``time_to_enough_s``: from the step until ``needed_replicas`` serve for the rest of it
    (None: never);
    ``overshoot_replicas``: replicas serving or starting beyond the need until then, while
    the replicas asked for load (AIBrix's failure is a large one);
    ``peak_replicas``: the most serving or starting during the whole step (it may include
    replicas added afterwards to drain the backlog that built up meanwhile).
    """

    step_start_s: float
    needed_replicas: int
    time_to_enough_s: float | None
    overshoot_replicas: int
    peak_replicas: int


def needed_replicas(rate_per_s: float, replica_rate_per_s: float) -> int:
    """Replicas whose throughput covers ``rate_per_s`` when each sustains ``replica_rate_per_s``."""
    return math.ceil(rate_per_s / replica_rate_per_s - 1e-9)


def step_response(points: Sequence[Any], step_start_s: float, step_end_s: float, needed: int) -> StepResponse:
    during = [p for p in points if step_start_s <= p.time_s <= step_end_s]
    short = [i for i, p in enumerate(during) if p.running_replicas < needed]
    if not short:
        enough = step_start_s if during else None
    else:
        enough = during[short[-1] + 1].time_s if short[-1] + 1 < len(during) else None
    loading = [p for p in during if enough is None or p.time_s <= enough]
    return StepResponse(
        step_start_s=step_start_s,
        needed_replicas=needed,
        time_to_enough_s=None if enough is None else enough - step_start_s,
        overshoot_replicas=max(max((p.running_replicas + p.starting_replicas for p in loading), default=0) - needed, 0),
        peak_replicas=max((p.running_replicas + p.starting_replicas for p in during), default=0),
    )


def replica_seconds(points: Sequence[Any]) -> float:
    total, previous_s = 0.0, 0.0
    for point in points:
        total += (point.running_replicas + point.starting_replicas) * (point.time_s - previous_s)
        previous_s = point.time_s
    return total


def up_steps(steps: Sequence[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """(start_s, end_s, rate) of every phase whose rate is above the previous phase's, from
    ``(duration_s, rate)`` phases."""
    found, start_s, previous = [], 0.0, None
    for duration_s, rate in steps:
        if previous is not None and rate > previous:
            found.append((start_s, start_s + duration_s, rate))
        start_s, previous = start_s + duration_s, rate
    return found
