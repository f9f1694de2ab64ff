"""The simulator core: a heapq event loop over arrivals, the router, modelled replicas and
(optionally) an autoscaling policy.

Flow per request, as in the real cluster:

    arrival ─► router: ``policy.rank(request, snapshots)`` ─► first replica of the first tier
    whose in-flight count is below ``max_ongoing_requests`` (none: the request waits in the
    router's FIFO queue and is ranked again when a request finishes) ─► ``policy.on_routed``
    ─► ``SimReplica`` ─► first token, last token ─► ``policy.on_completed``.

The ``ReplicaSnapshot``s the policy sees carry the router's own exact in-flight counts and
the engine figures (running, waiting, KV usage) each replica last pushed; replicas push
every ``stats_interval_s`` at staggered phases, so those figures are up to that old.

Autoscaling: every ``autoscale_interval_s`` the policy's ``decide(ClusterSnapshot, state)``
returns (``Decision``, new state); the snapshot holds what Serve's controller would see:
serving and starting replicas, the router's queue, and per replica the engine figures it last
pushed and the requests it finished over the metrics window (sampled at its pushes). Missing
replicas start and take requests after the cost model's ``cold_start_s``; surplus ones are
cancelled while starting (newest first), else drained (fewest in flight first): no new
requests, removed when their last one ends (``policy.on_replica_removed`` is called when
draining starts). Decisions that change the count or the action are kept in
``SimResult.extra["decisions"]``. Without an autoscaler the replica count is fixed. A policy with a ``bind_replicas(mapping)`` method (the oracle) gets
the live map of routable ``SimReplica``s. Deterministic: no wall clock, ties broken by order.
"""

from __future__ import annotations

import gc
import heapq
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from kaon.autoscaling.snapshot import ReplicaLoad, counter_increase
from kaon.routing.policy import RoutingPolicy
from kaon.routing.snapshot import ReplicaSnapshot
from kaon.sim.cost_model import CostModel
from kaon.sim.replica import ActiveRequest, ReplicaStats, SimReplica
from kaon.sim.interfaces import (  # noqa: F401 - re-exported: the simulator's public types
    AutoscalingPolicy,
    ClusterSnapshot,
    Decision,
    RequestRecord,
    SimClock,
    SimConfig,
    SimResult,
    TimelinePoint,
)
from kaon.sim.workload import SimRequest

_ARRIVAL, _STEP_END, _STATS, _READY, _AUTOSCALE, _TIMELINE = range(6)
_NO_STATS = ReplicaStats(0, 0, 0.0, 0, 0)
_GOLDEN = 0.6180339887498949


class Simulator:
    """One run of one routing policy. ``run`` may be called once."""

    def __init__(self, policy: RoutingPolicy, cost: CostModel, config: SimConfig | None = None,
                 autoscaler: AutoscalingPolicy | None = None, clock: SimClock | None = None):
        self.policy = policy
        self.clock = clock or SimClock()
        self.cost = cost
        self.config = config or SimConfig()
        self.autoscaler = autoscaler
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = 0
        self.now_s = 0.0
        self._replicas: dict[str, SimReplica] = {}  # every replica alive (incl. draining)
        self._routable: dict[str, SimReplica] = {}  # taking new requests; bound to oracles
        self._snapshots: list[ReplicaSnapshot] = []
        self._snapshot_index: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._reported: dict[str, ReplicaStats] = {}
        self._routable_in_flight = 0
        self._starting: list[str] = []
        self._next_replica = 0
        self._desired = self.config.replicas
        self._autoscaler_state: Any = None
        self._decisions: list[dict[str, Any]] = []
        self._finished: dict[str, int] = {}  # per replica, since it started
        self._finished_samples: dict[str, deque[tuple[float, int]]] = {}  # as pushed with its stats
        self._router_queue: deque[SimRequest] = deque()
        self._parked: dict[str, list[SimRequest]] = {}
        self._unfinished: set[str] = set()  # arrived, not finished (incl. parked, queued)
        self._owner: dict[str, str] = {}  # request id -> replica id while in flight
        self._records: list[RequestRecord] = []
        self._prefix_tokens: dict[str, tuple[int, int]] = {}
        self._timeline: list[TimelinePoint] = []
        self._interval_arrivals = 0
        self._interval_completions = 0
        self._interval_ttfts: list[float] = []
        self._arrived = 0
        self._outstanding = 0
        self._track_pending = hasattr(policy, "bind_replicas")
        if self._track_pending:
            policy.bind_replicas(self._routable)  # type: ignore[attr-defined]

    # --- events --------------------------------------------------------------------------

    def _push(self, time_s: float, kind: int, a: Any = None, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_s, self._seq, kind, a, b))

    def run(self, requests: Iterable[SimRequest]) -> SimResult:
        """Simulate ``requests`` (ordered by ``arrival_s``) until all finished or the drain
        timeout after the last arrival. The cyclic garbage collector is paused meanwhile (the
        loop makes no cycles it leaves behind; collections over a growing heap cost ~20%)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(requests)
        finally:
            if enabled:
                gc.enable()

    def _run(self, requests: Iterable[SimRequest]) -> SimResult:
        started = time.perf_counter()
        for _ in range(self.config.replicas):
            self._add_replica(self._new_replica_id())
        arrivals: Iterator[SimRequest] = iter(requests)
        last_arrival = 0.0
        first = next(arrivals, None)
        if first is not None:
            self._push(first.arrival_s, _ARRIVAL, first)
        self._push(self.config.timeline_interval_s, _TIMELINE)
        if self.autoscaler is not None:
            self._push(0.0, _AUTOSCALE)
        arrivals_done = first is None
        deadline = float("inf")
        while self._heap:
            time_s, _, kind, a, b = heapq.heappop(self._heap)
            if time_s > deadline:
                break
            self.now_s = self.clock.now_s = time_s
            if kind == _STEP_END:
                if a.busy and a.version == b:
                    self._on_step_end(a)
            elif kind == _ARRIVAL:
                last_arrival = time_s
                self._arrived += 1
                self._outstanding += 1
                self._interval_arrivals += 1
                self._unfinished.add(a.request.request_id)
                self._on_arrival(a)
                following = next(arrivals, None)
                if following is None:
                    arrivals_done = True
                    deadline = time_s + self.config.drain_timeout_s
                else:
                    self._push(max(following.arrival_s, time_s), _ARRIVAL, following)
            elif kind == _STATS:
                replica = self._replicas.get(a)
                if replica is not None:
                    self._reported[a] = replica.stats()
                    self._refresh_snapshot(a)
                    self._sample_finished(a)
                    self._push(time_s + self.config.stats_interval_s, _STATS, a)
            elif kind == _TIMELINE:
                self._sample_timeline()
                self._push(time_s + self.config.timeline_interval_s, _TIMELINE)
            elif kind == _READY:
                if a in self._starting:
                    self._starting.remove(a)
                    self._add_replica(a)
                    self._drain_router_queue()
            elif kind == _AUTOSCALE:
                self._autoscale()
                self._push(time_s + self.config.autoscale_interval_s, _AUTOSCALE)
            if arrivals_done and self._outstanding == 0:
                break
        for replica_id, replica in self._replicas.items():
            self._prefix_tokens[replica_id] = (replica.prefix_hits_tokens, replica.prefix_queries_tokens)
        return SimResult(
            policy=getattr(self.policy, "name", type(self.policy).__name__), cost=self.cost, config=self.config,
            records=self._records, timeline=self._timeline, replica_prefix_tokens=dict(self._prefix_tokens),
            arrived=self._arrived, unfinished=self._outstanding, last_arrival_s=last_arrival, end_s=self.now_s,
            wall_clock_s=time.perf_counter() - started, extra={"decisions": self._decisions} if self.autoscaler else {},
        )

    # --- router --------------------------------------------------------------------------

    def _on_arrival(self, sim: SimRequest) -> None:
        after = sim.after_request_id
        if after is not None and after in self._unfinished:
            self._parked.setdefault(after, []).append(sim)
            return
        sim.arrival_s = self.now_s
        if self._router_queue or not self._dispatch(sim):
            self._router_queue.append(sim)
            self._drain_router_queue()

    def _dispatch(self, sim: SimRequest) -> bool:
        if not self._snapshots:
            return False
        cap = self.config.max_ongoing_requests
        in_flight = self._in_flight
        routable = self._routable
        for tier in self.policy.rank(sim.request, self._snapshots):
            for replica_id in tier:
                if replica_id in routable and in_flight[replica_id] < cap:
                    self._send(sim, replica_id)
                    return True
        return False

    def _drain_router_queue(self) -> None:
        queue = self._router_queue
        while queue and self._routable_in_flight < len(self._routable) * self.config.max_ongoing_requests:
            if not self._dispatch(queue[0]):
                break
            queue.popleft()

    def _send(self, sim: SimRequest, replica_id: str) -> None:
        self.policy.on_routed(sim.request, replica_id)
        self._in_flight[replica_id] += 1
        self._routable_in_flight += 1
        self._owner[sim.request.request_id] = replica_id
        self._refresh_snapshot(replica_id)
        replica = self._replicas[replica_id]
        queue_was_empty = not replica.waiting
        replica.enqueue(sim, self.now_s)
        if not replica.busy:
            self._start(replica)
        elif queue_was_empty:
            end = replica.interrupt(self.now_s)
            if end is not None:
                self._push(end, _STEP_END, replica, replica.version)

    def _refresh_snapshot(self, replica_id: str) -> None:
        index = self._snapshot_index.get(replica_id)
        if index is None:
            return
        stats = self._reported[replica_id]
        self._snapshots[index] = ReplicaSnapshot(
            replica_id, self._in_flight[replica_id], stats.running_requests, stats.waiting_requests,
            stats.kv_cache_usage, self.config.max_ongoing_requests,
        )

    # --- replicas ------------------------------------------------------------------------

    def _start(self, replica: SimReplica) -> None:
        end = replica.start_step(self.now_s)
        if end is not None:
            self._push(end, _STEP_END, replica, replica.version)

    def _on_step_end(self, replica: SimReplica) -> None:
        first, finished = replica.finish_step(self.now_s)
        for active in first:
            self._interval_ttfts.append(active.first_token_s - active.sim.arrival_s)
        for active in finished:
            self._complete(replica, active)
        if not replica.busy:  # a released chat round may already have started a step
            self._start(replica)
        if finished:
            if replica.replica_id not in self._routable and replica.idle:
                self._remove_replica(replica.replica_id)
            self._drain_router_queue()

    def _complete(self, replica: SimReplica, active: ActiveRequest) -> None:
        sim = active.sim
        request_id = sim.request.request_id
        replica_id = replica.replica_id
        arrival = sim.arrival_s
        self._records.append(RequestRecord(
            request_id, sim.group_id, replica_id, arrival, active.first_token_s - arrival,
            active.finished_s - arrival, active.admitted_s - arrival, sim.request.prompt_tokens,
            active.cached_tokens, sim.output_tokens,
        ))
        self._interval_completions += 1
        self._outstanding -= 1
        self._finished[replica_id] += 1
        del self._owner[request_id]
        self._in_flight[replica_id] -= 1
        if replica_id in self._routable:
            self._routable_in_flight -= 1
            self._refresh_snapshot(replica_id)
        self.policy.on_completed(request_id, replica_id)
        self._unfinished.discard(request_id)
        for parked in self._parked.pop(request_id, ()):
            self._on_arrival(parked)

    def _new_replica_id(self) -> str:
        replica_id = f"r{self._next_replica:03d}"
        self._next_replica += 1
        return replica_id

    def _add_replica(self, replica_id: str) -> None:
        replica = SimReplica(replica_id, self.cost, track_pending=self._track_pending)
        self._replicas[replica_id] = replica
        self._routable[replica_id] = replica
        self._in_flight[replica_id] = 0
        self._reported[replica_id] = _NO_STATS
        self._finished[replica_id] = 0
        self._finished_samples[replica_id] = deque([(self.now_s, 0)])
        self._snapshot_index[replica_id] = len(self._snapshots)
        self._snapshots.append(ReplicaSnapshot(replica_id, 0, 0, 0, 0.0, self.config.max_ongoing_requests))
        phase = ((int(replica_id[1:]) * _GOLDEN) % 1.0) * self.config.stats_interval_s
        self._push(self.now_s + phase, _STATS, replica_id)

    def _stop_routing(self, replica_id: str) -> None:
        """Start draining: no new requests; removed once idle."""
        self._routable.pop(replica_id)
        self._routable_in_flight -= self._in_flight[replica_id]
        index = self._snapshot_index.pop(replica_id)
        self._snapshots.pop(index)
        for other, position in self._snapshot_index.items():
            if position > index:
                self._snapshot_index[other] = position - 1
        self.policy.on_replica_removed(replica_id)
        replica = self._replicas[replica_id]
        if replica.idle and self._in_flight[replica_id] == 0:
            self._remove_replica(replica_id)

    def _remove_replica(self, replica_id: str) -> None:
        replica = self._replicas.pop(replica_id)
        self._prefix_tokens[replica_id] = (replica.prefix_hits_tokens, replica.prefix_queries_tokens)
        del self._in_flight[replica_id], self._reported[replica_id]
        del self._finished[replica_id], self._finished_samples[replica_id]

    # --- autoscaling and the timeline ----------------------------------------------------

    def _queue_depth(self, reported: bool) -> int:
        if reported:
            engines = sum(self._reported[r].waiting_requests for r in self._routable)
        else:
            engines = sum(len(r.waiting) for r in self._replicas.values())
        return len(self._router_queue) + engines

    def _sample_finished(self, replica_id: str) -> None:
        samples = self._finished_samples[replica_id]
        samples.append((self.now_s, self._finished[replica_id]))
        while samples[0][0] < self.now_s - self.config.metrics_window_s:
            samples.popleft()

    def _replica_load(self, replica_id: str) -> ReplicaLoad:
        stats = self._reported[replica_id]
        finished, window_s = counter_increase(self._finished_samples[replica_id])
        return ReplicaLoad(stats.running_requests, stats.waiting_requests, finished, window_s)

    def _autoscale(self) -> None:
        snapshot = ClusterSnapshot(self.now_s, len(self._routable), len(self._starting), len(self._router_queue),
                                   tuple(self._replica_load(r) for r in self._routable))
        decision, self._autoscaler_state = self.autoscaler.decide(snapshot, self._autoscaler_state)
        desired = max(self.config.min_replicas, min(self.config.max_replicas, decision.desired_replicas))
        last = self._decisions[-1] if self._decisions else None
        if last is None or (last["desired_replicas"], last["action"]) != (desired, decision.action):
            self._decisions.append({"time_s": self.now_s, "desired_replicas": desired, "action": decision.action,
                                    "queue_depth_requests": decision.queue_depth_requests, "reason": decision.reason})
        self._desired = desired
        current = len(self._routable) + len(self._starting)
        for _ in range(desired - current):
            replica_id = self._new_replica_id()
            self._starting.append(replica_id)
            self._push(self.now_s + self.cost.cold_start_s, _READY, replica_id)
        surplus = current - desired
        while surplus > 0 and self._starting:
            self._starting.pop()
            surplus -= 1
        if surplus > 0:
            victims = sorted(self._routable, key=lambda r: (self._in_flight[r], -int(r[1:])))[:surplus]
            for replica_id in victims:
                self._stop_routing(replica_id)

    def _sample_timeline(self) -> None:
        interval = self.config.timeline_interval_s
        ttfts = sorted(self._interval_ttfts)
        count = len(ttfts)
        p50 = None if not count else (ttfts[(count - 1) // 2] + ttfts[count // 2]) / 2
        self._timeline.append(TimelinePoint(
            self.now_s, self._interval_arrivals / interval, self._interval_completions / interval,
            self._queue_depth(reported=False), sum(self._in_flight.values()), len(self._routable),
            len(self._starting), self._desired if self.autoscaler is not None else len(self._routable),
            p50, sum(ttfts) / count if count else None,
        ))
        self._interval_arrivals = self._interval_completions = 0
        self._interval_ttfts = []
