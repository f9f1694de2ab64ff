"""kaon's queue-depth autoscaling policy: ``QueueDepthPolicy.decide(snapshot, state)``.

Each tick turns one ``ClusterSnapshot`` into a ``Decision`` in three steps:

1. Recommend (``_recommend``). Demand = requests running in the engines + the queue depth
   (waiting in the engines and at the handles). Replicas still starting count as capacity.
   - Queue over target (more than ``target_queue_depth_per_replica`` per serving replica,
     or any at zero replicas): more replicas. Once a saturated replica's throughput μ has
     been measured, as many as ``(arrival rate + backlog drain) / (0.9 μ)``: the arrival rate is
     completions/s plus the growth of the demand over the metrics window, so a backlog that
     piles up while replicas load does not ask for more of them (AIBrix's 2→4→8→16), and
     the backlog above target is to drain within one replica start time (replicas that
     would come after it had drained are not worth starting; not counted while replicas
     start: they will drain it). μ is trusted once its measurements have held
     steady for half a window (see ``_steady_mean``), and forgotten if the queue keeps
     growing for a replica start time while μ says the replicas keep up. Before μ is
     known (or given as ``replica_throughput_per_s``): the demand in full batches, at
     least one more replica, and nothing more while one starts.
   - Otherwise: the fewest replicas that hold the demand in batches of
     ``replica_capacity_requests`` plus the target queue each, but no fewer than the
     arrival rate needs at 0.75 μ.
2. Stabilise (``_stabilise``): scale up to the lowest recommendation of the last
   ``upscale_stabilization_s`` (at once in panic — recommendation ≥ ``panic_threshold`` ×
   current — or from zero); scale down to the highest of the last
   ``downscale_stabilization_s``, so noisy or oscillating load does not flap.
3. Bound: ``max_replicas``; ``min_replicas``, where a minimum of 0 keeps one replica until
   no request has been seen for ``scale_to_zero_after_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from kaon.autoscaling.snapshot import ClusterSnapshot, Decision

UPSCALE_UTILIZATION = 0.9
"""A scale-up sizes the replicas to run at this share of their measured throughput, so that
noise in the arrivals does not rebuild the queue at once."""

DOWNSCALE_UTILIZATION = 0.75
"""Scale down only to a count that would run at most this share of its measured throughput:
the gap to the scale-up point keeps the count from flapping when the load sits near a
boundary."""

RATE_AGREEMENT = 1.25
"""Throughput measurements over half a window must agree within this ratio to be trusted."""

DEMAND_SAMPLES_PER_WINDOW = 16
"""Demand is sampled this often per metrics window for the arrival-rate estimate (Serve's
controller calls the policy every 0.1 s; its inputs change once per metrics interval)."""


@dataclass(slots=True, frozen=True)
class Settings:
    """The policy's parameters; ``kaon.config.AutoscalingConfig`` documents each.
    ``replica_capacity_requests`` is what one replica runs at once before it queues (the
    engine's ``max_num_seqs``, or Serve's ``max_ongoing_requests`` if lower)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_queue_depth_per_replica: float = 2.0
    replica_capacity_requests: int = 64
    upscale_stabilization_s: float = 10.0
    downscale_stabilization_s: float = 300.0
    panic_threshold: float | None = 2.0
    scale_to_zero_after_s: float = 600.0
    replica_start_s: float = 60.0
    replica_throughput_per_s: float | None = None
    metrics_window_s: float = 10.0

    @classmethod
    def from_config(cls, config: Any, replica_capacity_requests: int) -> Settings:
        """From a ``kaon.config.AutoscalingConfig`` (the fields of the same names)."""
        names = [f.name for f in fields(cls) if f.name != "replica_capacity_requests"]
        return cls(replica_capacity_requests=replica_capacity_requests, **{n: getattr(config, n) for n in names})

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min_replicas <= max_replicas >= 1, got {self.min_replicas}, {self.max_replicas}")
        if self.replica_capacity_requests < 1:
            raise ValueError(f"replica_capacity_requests must be >= 1, got {self.replica_capacity_requests}")


@dataclass(slots=True, frozen=True)
class State:
    """What the policy remembers between ticks (never mutated: ``decide`` returns a new one).

    ``demand_samples`` are (time, demand) points of the last metrics window;
    ``recommendations`` are the change points (time, recommended replicas) of the last
    stabilisation window; ``rate_estimates`` are (time, throughput) measurements of a
    saturated replica over the last metrics window, and ``service_rate_per_s`` the highest
    one trusted (None until one was: a replica still filling its batch only measures low);
    ``contradicted_since_s`` is when the queue began to grow while that throughput said
    the replicas keep up; ``hint_refuted`` once that refuted ``replica_throughput_per_s``.
    """

    last_active_s: float
    saturated_since_s: float | None = None
    rate_estimates: tuple[tuple[float, float], ...] = ()
    service_rate_per_s: float | None = None
    contradicted_since_s: float | None = None
    hint_refuted: bool = False
    demand_samples: tuple[tuple[float, float], ...] = ()
    recommendations: tuple[tuple[float, int], ...] = ()


@dataclass(slots=True, frozen=True)
class _Recommendation:
    replicas: int
    kind: str  # "up", "hold" (waiting for starting replicas), "covered" (the replicas keep up) or "fits"
    why: str


@dataclass(slots=True, frozen=True)
class _Observation:
    """What one tick measured: the queue and the demand (running + queued), the demand's
    growth and the arrival rate over the metrics window, and the throughput measurements."""

    queue: float
    demand: float
    growth_per_s: float
    arrivals_per_s: float
    demand_samples: tuple[tuple[float, float], ...]
    saturated_since_s: float | None
    rate_estimates: tuple[tuple[float, float], ...]
    measured_rate_per_s: float | None


class QueueDepthPolicy:
    """kaon's autoscaling policy (see the module docstring); pure and deterministic."""

    name = "queue_depth"

    def __init__(self, settings: Settings):
        self.settings = settings

    def decide(self, snapshot: ClusterSnapshot, state: State | None = None) -> tuple[Decision, State]:
        s = self.settings
        now = snapshot.time_s
        current = snapshot.running_replicas + snapshot.starting_replicas
        state = state or State(last_active_s=now, recommendations=((now, current),))  # as if the count had been asked for
        seen = self._observe(snapshot, state)
        recommended, contradicted_since, refuted = self._recommend_checked(snapshot, state, seen)
        last_active = now if seen.demand > 0 else state.last_active_s
        floor = self._floor(current, seen.demand, now - last_active)
        raw = max(floor, min(s.max_replicas, recommended.replicas))
        changes = _changes(state.recommendations, now, raw, max(s.upscale_stabilization_s, s.downscale_stabilization_s))
        desired, action, reason = self._stabilise(raw, current, changes, now, recommended)
        if floor == 0 and current > 0 and seen.demand == 0:
            desired, action, reason = 0, "to_zero", f"no request for {now - last_active:.0f} s"
        new_state = State(
            last_active_s=last_active, saturated_since_s=seen.saturated_since_s,
            rate_estimates=() if refuted else seen.rate_estimates,
            service_rate_per_s=None if refuted else seen.measured_rate_per_s, contradicted_since_s=contradicted_since,
            hint_refuted=state.hint_refuted or refuted, demand_samples=seen.demand_samples, recommendations=changes,
        )
        return Decision(desired, action, reason, seen.queue, current), new_state

    def _observe(self, snapshot: ClusterSnapshot, state: State) -> _Observation:
        window_s = self.settings.metrics_window_s
        now = snapshot.time_s
        queue = snapshot.queue_depth_requests
        demand = snapshot.busy_requests + queue
        samples = _sampled(state.demand_samples, now, demand, window_s)
        growth_per_s = _growth_per_s(samples, now, demand, window_s)
        saturated_since = None if queue <= 0 else now if state.saturated_since_s is None else state.saturated_since_s
        estimates = self._rate_estimates(snapshot, saturated_since, state.rate_estimates)
        measured = max(filter(None, (_steady_mean(estimates, window_s), state.service_rate_per_s)), default=None)
        return _Observation(queue, demand, growth_per_s, snapshot.arrivals_per_s(growth_per_s), samples,
                            saturated_since, estimates, measured)

    def _recommend_checked(self, snapshot: ClusterSnapshot, state: State,
                           seen: _Observation) -> tuple[_Recommendation, float | None, bool]:
        """The recommendation with the measured (else the given) throughput, and whether the
        queue refutes that throughput: it has kept growing for a replica start time while
        the throughput said the replicas keep up. Then it is dropped (to be measured again)
        and the recommendation made without it. Returns (recommendation, contradicted since,
        refuted)."""
        s = self.settings
        hint = None if state.hint_refuted else s.replica_throughput_per_s
        recommended = self._recommend(snapshot, seen, seen.measured_rate_per_s or hint)
        if not (recommended.kind == "covered" and seen.growth_per_s > 0 and not snapshot.starting_replicas):
            return recommended, None, False
        since = state.contradicted_since_s or snapshot.time_s
        if snapshot.time_s - since < s.replica_start_s + s.metrics_window_s:
            return recommended, since, False
        return self._recommend(snapshot, seen, None), None, True

    def _floor(self, current: int, demand: float, idle_s: float) -> int:
        """``min_replicas``; with a minimum of 0, one replica until idle long enough (and none
        while at zero with nothing to serve)."""
        s = self.settings
        if s.min_replicas > 0:
            return s.min_replicas
        if demand > 0 or (current > 0 and idle_s < s.scale_to_zero_after_s):
            return 1
        return 0

    def _rate_estimates(self, snapshot: ClusterSnapshot, saturated_since: float | None,
                        estimates: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        """The throughput measurements of the last window, with one more if the queue has stayed
        up for a whole window: completions per second of the replicas that queue (all of them
        if requests wait at the handles) and served for at least half the window (a new one is
        still filling its batch). Emptied when the queue is gone."""
        window_s = self.settings.metrics_window_s
        now = snapshot.time_s
        if saturated_since is None:
            return ()
        kept = tuple(e for e in estimates if e[0] >= now - window_s)
        if now - saturated_since < window_s or (kept and now - kept[-1][0] < window_s / DEMAND_SAMPLES_PER_WINDOW):
            return kept
        every = snapshot.handle_queued_requests > 0
        rates = [r.completed_per_s for r in snapshot.replicas
                 if r.completed_requests > 0 and r.window_s >= window_s / 2 and (every or r.waiting_requests > 0)]
        return kept + ((now, sum(rates) / len(rates)),) if rates else kept

    def _recommend(self, snapshot: ClusterSnapshot, seen: _Observation, service_rate: float | None) -> _Recommendation:
        s = self.settings
        queue, demand, arrivals_per_s = seen.queue, seen.demand, seen.arrivals_per_s
        running, starting = snapshot.running_replicas, snapshot.starting_replicas
        current = running + starting
        target = s.target_queue_depth_per_replica
        in_batches = math.ceil(demand / (s.replica_capacity_requests + target))
        over_target = queue > target * running if running else queue > 0
        if not over_target:
            by_rate = math.ceil(arrivals_per_s / (service_rate * DOWNSCALE_UTILIZATION)) if service_rate else 0
            need = min(current, max(in_batches, by_rate))
            return _Recommendation(need, "fits", f"demand {demand:g} (queue {queue:g}) fits {need} replicas")
        head = f"queue {queue:g} over target {target * running:g}"
        if service_rate is None:
            if starting:
                return _Recommendation(current, "hold", f"{head}; {starting} starting, throughput not measured yet")
            need = max(current + 1, in_batches)
            return _Recommendation(need, "up", f"{head}: demand {demand:g} needs {need} replicas in batches")
        drain_per_s = 0.0 if starting else max(queue - target * running, 0.0) / s.replica_start_s
        by_rate = math.ceil((arrivals_per_s + drain_per_s) / (service_rate * UPSCALE_UTILIZATION))
        flow = f"{arrivals_per_s:.2f} req/s arriving (+{drain_per_s:.2f} backlog) at {service_rate:.2f} req/s per replica"
        if by_rate <= current:
            return _Recommendation(current, "covered", f"{head}; {current} replicas ({starting} starting) cover {flow}")
        return _Recommendation(by_rate, "up", f"{head}: {flow} needs {by_rate}")

    def _stabilise(self, raw: int, current: int, changes: tuple[tuple[float, int], ...], now: float,
                   recommended: _Recommendation) -> tuple[int, str, str]:
        s = self.settings
        why = recommended.why
        if raw > current:
            if current == 0:
                return raw, "from_zero", why
            if s.panic_threshold is not None and raw >= s.panic_threshold * current:
                return raw, "panic", f"{why} (≥ {s.panic_threshold:g}× the {current} replicas: panic)"
            lowest = _window_extreme(changes, now - s.upscale_stabilization_s, min)
            if lowest > current:
                return lowest, "scale_up", f"{why}; at least {lowest} for {s.upscale_stabilization_s:g} s"
            return current, "steady", f"{why}; not yet for {s.upscale_stabilization_s:g} s"
        if raw < current:
            highest = _window_extreme(changes, now - s.downscale_stabilization_s, max)
            if highest < current:
                return highest, "scale_down", f"{why}; at most {highest} for {s.downscale_stabilization_s:g} s"
            return current, "steady", f"{why}; not yet for {s.downscale_stabilization_s:g} s"
        return current, "hold" if recommended.kind in ("hold", "covered") else "steady", why


def _steady_mean(estimates: tuple[tuple[float, float], ...], window_s: float) -> float | None:
    """The mean throughput measured, if the measurements span half a window and agree within
    ``RATE_AGREEMENT``: right after a replica's batch fills, few of its (long) requests have
    finished yet and the measurement still climbs; trusting it would ask for far too many."""
    if not estimates or estimates[-1][0] - estimates[0][0] < window_s / 2:
        return None
    rates = [r for _, r in estimates]
    return sum(rates) / len(rates) if max(rates) <= RATE_AGREEMENT * min(rates) else None


def _sampled(samples: tuple[tuple[float, float], ...], now: float, demand: float, window_s: float) -> tuple[tuple[float, float], ...]:
    """The samples of the last window, plus (now, demand) if the newest is old enough."""
    kept = tuple(p for p in samples if p[0] >= now - window_s)
    if not kept or now - kept[-1][0] >= window_s / DEMAND_SAMPLES_PER_WINDOW:
        kept += ((now, demand),)
    return kept


def _growth_per_s(samples: tuple[tuple[float, float], ...], now: float, demand: float, window_s: float) -> float:
    """Demand growth since the oldest sample, once they span a quarter window (else 0)."""
    start_s, start = samples[0]
    span_s = now - start_s
    return (demand - start) / span_s if span_s >= window_s / 4 else 0.0


def _changes(changes: tuple[tuple[float, int], ...], now: float, value: int, horizon_s: float) -> tuple[tuple[float, int], ...]:
    """Change points of the recommendation: ``value`` appended if it differs from the last;
    dropped are those older than the one in effect at ``now - horizon_s``."""
    if not changes or changes[-1][1] != value:
        changes += ((now, value),)
    start = 0
    while start + 1 < len(changes) and changes[start + 1][0] <= now - horizon_s:
        start += 1
    return changes[start:]


def _window_extreme(changes: tuple[tuple[float, int], ...], since_s: float, pick) -> int:
    """``pick`` (min or max) of the values in effect from ``since_s`` to now."""
    in_effect = [v for t, v in changes if t <= since_s][-1:]
    return pick(in_effect + [v for t, v in changes if t > since_s])
