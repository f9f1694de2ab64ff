"""Ray Serve's default autoscaling policy, re-implemented for the simulator only (as a
reference to compare kaon's queue-depth policy with; the cluster never runs it).

Serve 2.60's ``replica_queue_length_autoscaling_policy`` inside the wrapper Serve puts around
every policy (``ray/serve/autoscaling_policy.py``), with its default settings:

- ongoing requests = requests at the replicas (running or waiting in the engine) + requests
  queued at the handles, time-averaged over ``look_back_period_s`` (30 s);
- desired = ongoing / ``target_ongoing_requests`` (scaling factors 1);
- a change is applied once it has been wanted continuously for ``upscale_delay_s`` (30 s) or
  ``downscale_delay_s`` (600 s), to the count wanted at that moment; down to one replica at
  most, then to zero (from one) after the same downscale delay;
- at zero replicas with requests waiting: one replica at once;
- then ``min_replicas``..``max_replicas``.

Replicas still starting count in the current target, as in Serve; they do not serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kaon.autoscaling.snapshot import ClusterSnapshot, Decision


@dataclass(slots=True, frozen=True)
class _State:
    samples: tuple[tuple[float, float], ...] = ()  # (time, ongoing) over the look-back period
    direction: int = 0  # +1 wanting up, -1 wanting down, 0 neither
    since_s: float = 0.0


class RayDefaultAutoscaler:
    name = "ray_default"

    def __init__(self, target_ongoing_requests: float, min_replicas: int, max_replicas: int,
                 upscale_delay_s: float = 30.0, downscale_delay_s: float = 600.0, look_back_period_s: float = 30.0):
        self.target_ongoing_requests = target_ongoing_requests
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.upscale_delay_s, self.downscale_delay_s = upscale_delay_s, downscale_delay_s
        self.look_back_period_s = look_back_period_s

    def decide(self, snapshot: ClusterSnapshot, state: _State | None = None) -> tuple[Decision, _State]:
        state = state or _State()
        now = snapshot.time_s
        ongoing = snapshot.busy_requests + snapshot.queue_depth_requests
        samples = tuple(p for p in state.samples if p[0] > now - self.look_back_period_s) + ((now, ongoing),)
        average = sum(v for _, v in samples) / len(samples)
        running = snapshot.running_replicas
        target = running + snapshot.starting_replicas
        if running == 0:
            wanted = max(1, target) if average > 0 else target
            if wanted > target:
                return self._decision(wanted, "from_zero", average, target, snapshot), _State(samples)
        else:
            wanted = math.ceil(average / self.target_ongoing_requests)
        direction = (wanted > target) - (wanted < target)
        since = state.since_s if direction == state.direction else now
        delay = self.upscale_delay_s if direction > 0 else self.downscale_delay_s
        if direction == 0 or now - since < delay:
            return self._decision(target, "steady", average, target, snapshot), _State(samples, direction, since)
        if direction < 0 and target > 1:
            wanted = max(wanted, 1)
        action = "scale_up" if direction > 0 else "to_zero" if wanted == 0 else "scale_down"
        return self._decision(wanted, action, average, target, snapshot), _State(samples)

    def _decision(self, desired: int, action: str, average: float, target: int, snapshot: ClusterSnapshot) -> Decision:
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        reason = f"{average:.1f} ongoing requests (mean over {self.look_back_period_s:g} s) / target {self.target_ongoing_requests:g}"
        return Decision(desired, action, reason, snapshot.queue_depth_requests, target)
