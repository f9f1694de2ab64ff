"""kaon's queue-depth policy on synthetic snapshots: step up, burst (panic), slow decay,
oscillating load, replicas starting, idle → zero, zero → one."""

import math

import pytest

from kaon.autoscaling.policy import QueueDepthPolicy, Settings, State
from kaon.autoscaling.snapshot import ClusterSnapshot, ReplicaLoad, counter_increase

CAPACITY = 8  # requests a replica runs at once


def settings(**overrides) -> Settings:
    values = dict(min_replicas=1, max_replicas=32, target_queue_depth_per_replica=2, replica_capacity_requests=CAPACITY,
                  upscale_stabilization_s=5, downscale_stabilization_s=60, panic_threshold=2.0,
                  scale_to_zero_after_s=120, replica_start_s=30, metrics_window_s=10)
    return Settings(**(values | overrides))


def snapshot(time_s, running, busy=0, waiting=0, starting=0, handle_queued=0.0) -> ClusterSnapshot:
    """``running`` replicas sharing ``busy`` running and ``waiting`` queued requests evenly."""
    loads = tuple(
        ReplicaLoad(busy // running + (i < busy % running), waiting // running + (i < waiting % running))
        for i in range(running)
    )
    return ClusterSnapshot(time_s, running, starting, handle_queued, loads)


def drive(policy, snapshots, state=None):
    decisions = []
    for snap in snapshots:
        decision, state = policy.decide(snap, state)
        decisions.append(decision)
    return decisions, state


class Plant:
    """A cluster the policy controls, ticking once a second: ``arrivals_per_s`` come in, each
    serving replica finishes up to ``service_per_s`` and runs up to CAPACITY at once, the rest
    queue; a replica asked for serves ``start_s`` later; a removed one goes at once. Each
    replica reports what it finished over the metrics window, as replicas do."""

    def __init__(self, policy, running, service_per_s=1.0, start_s=30):
        self.policy, self.service_per_s, self.start_s = policy, service_per_s, start_s
        self.replicas: list[list[float]] = [[] for _ in range(running)]  # finished per tick, per replica
        self.starting: list[int] = []  # ready times
        self.backlog = 0.0  # requests in the system
        self.state = None
        self.history = []  # (time, decision, replicas starting when it was taken)

    def run(self, until_s, arrivals_per_s):
        window = round(self.policy.settings.metrics_window_s)
        for t in range(until_s):
            self.replicas += [[] for r in self.starting if r == t]
            self.starting = [r for r in self.starting if r > t]
            served = min(self.backlog + arrivals_per_s, len(self.replicas) * self.service_per_s)
            self.backlog += arrivals_per_s - served
            for finished in self.replicas:
                finished.append(served / len(self.replicas))
            busy = min(round(self.backlog), len(self.replicas) * CAPACITY)
            per = len(self.replicas) or 1
            loads = tuple(ReplicaLoad(busy // per, (round(self.backlog) - busy) // per, sum(f[-window:]), min(len(f), window))
                          for f in self.replicas)
            decision, self.state = self.policy.decide(ClusterSnapshot(t, len(self.replicas), len(self.starting), 0.0, loads), self.state)
            self.history.append((t, decision, len(self.starting)))
            self._apply(decision.desired_replicas, t)

    def _apply(self, desired, now):
        current = len(self.replicas) + len(self.starting)
        self.starting += [now + self.start_s] * max(desired - current, 0)
        for _ in range(current - desired):
            (self.starting or self.replicas).pop()


def test_settings_refuse_impossible_bounds():
    with pytest.raises(ValueError, match="min_replicas"):
        Settings(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="capacity"):
        Settings(replica_capacity_requests=0)


def test_counter_increase_and_arrival_rate():
    assert counter_increase([(0.0, 10.0), (1.0, 12.0), (4.0, 22.0)]) == (12.0, 4.0)
    assert counter_increase([(5.0, 1.0)]) == (0.0, 0.0)
    snap = ClusterSnapshot(0.0, 2, replicas=(ReplicaLoad(completed_requests=30, window_s=10), ReplicaLoad(completed_requests=5, window_s=2)))
    assert snap.arrivals_per_s(demand_growth_per_s=1.5) == pytest.approx(35 / 10 + 1.5)


def test_steady_load_within_target_changes_nothing():
    policy = QueueDepthPolicy(settings())
    decisions, _ = drive(policy, [snapshot(t, 2, busy=12, waiting=2) for t in range(120)])
    assert {d.desired_replicas for d in decisions} == {2}
    assert {d.action for d in decisions} == {"steady"}


def test_step_up_waits_for_the_upscale_window_then_holds_the_demand_in_batches():
    policy = QueueDepthPolicy(settings())
    calm = [snapshot(t, 2, busy=10) for t in range(10)]
    loaded = [snapshot(t, 2, busy=16, waiting=14) for t in range(10, 20)]  # 30 requests, target 2 per replica
    decisions, _ = drive(policy, calm + loaded)
    assert [d.desired_replicas for d in decisions[10:15]] == [2] * 5  # recommendation must hold 5 s
    assert decisions[15].desired_replicas == math.ceil(30 / (CAPACITY + 2))
    assert decisions[15].action == "scale_up"
    assert "queue 14 over target 4" in decisions[15].reason


def test_burst_panics_and_scales_at_once():
    policy = QueueDepthPolicy(settings())
    decisions, _ = drive(policy, [snapshot(0, 2, busy=8), snapshot(1, 2, busy=16, waiting=184)])
    assert decisions[1].action == "panic"
    assert decisions[1].desired_replicas == 20  # 200 requests in batches of 8 + 2 queued


def test_slow_decay_scales_down_late_and_only_to_the_window_peak():
    policy = QueueDepthPolicy(settings())
    state = drive(policy, [snapshot(0, 8, busy=64, waiting=16)])[1]
    demand = {t: max(80 - t // 2, 0) for t in range(1, 300)}  # one request fewer every 2 s
    decisions, _ = drive(policy, [snapshot(t, 8, busy=min(d, 64), waiting=max(d - 64, 0)) for t, d in demand.items()], state)
    desired = [d.desired_replicas for d in decisions]
    first_down = next(i for i, n in enumerate(desired) if n < 8) + 1
    assert first_down >= 60  # the downscale window
    for t, n in zip(demand, desired):  # never below what the last minute's demand needed
        peak = max(demand[u] for u in demand if t - 60 <= u <= t)
        assert n >= min(8, math.ceil(peak / (CAPACITY + 2)))
    assert desired == sorted(desired, reverse=True)  # only ever down
    assert desired[-1] == 1


def test_oscillating_load_does_not_flap():
    policy = QueueDepthPolicy(settings())
    high = lambda t: snapshot(t, 6, busy=48, waiting=12)  # noqa: E731 - 60 requests: 6 replicas
    low = lambda t: snapshot(t, 6, busy=10)  # noqa: E731
    decisions, _ = drive(policy, [(high if (t // 20) % 2 == 0 else low)(t) for t in range(600)])
    assert {d.desired_replicas for d in decisions} == {6}


def test_starting_replicas_count_as_capacity_no_overshoot():
    """10 req/s arrive, a replica serves 1 req/s and loads for 30 s: the backlog that piles up
    meanwhile must not ask for more replicas than the arrival rate needs (AIBrix's failure)."""
    plant = Plant(QueueDepthPolicy(settings(max_replicas=64, downscale_stabilization_s=120)), running=2, start_s=30)
    plant.run(400, arrivals_per_s=10.0)
    raised_while_loading = [d.desired_replicas for _, d, starting in plant.history
                            if starting and d.desired_replicas > d.current_replicas]
    assert raised_while_loading == [12]  # once, when the throughput was measured: 10 req/s at 90 % of 1 req/s each
    holds = [d.reason for _, d, starting in plant.history if starting and d.action == "hold"]
    assert holds and "starting" in holds[0]
    # once they serve, a few more drain the backlog within a start time, then the count settles
    assert max(d.desired_replicas for _, d, _ in plant.history) <= 20
    assert plant.backlog < 20 and 12 <= len(plant.replicas) <= 14  # 10 req/s at 75..90 % of 1 req/s each


def test_without_a_measured_rate_no_second_scale_up_while_starting():
    policy = QueueDepthPolicy(settings())
    first, state = policy.decide(snapshot(0, 1, busy=8, waiting=30), None)
    assert first.action == "panic" and first.desired_replicas == 4
    growing = [snapshot(t, 1, busy=8, waiting=30 + 10 * t, starting=3) for t in range(1, 9)]
    decisions, _ = drive(policy, growing, state)
    assert {d.desired_replicas for d in decisions} == {4}
    assert {d.action for d in decisions} == {"hold"}


def test_idle_goes_to_zero_only_after_the_idle_period():
    policy = QueueDepthPolicy(settings(min_replicas=0, downscale_stabilization_s=10))
    busy = [snapshot(t, 3, busy=20) for t in range(5)]
    idle = [snapshot(t, 3) for t in range(5, 200)]
    decisions, _ = drive(policy, busy + idle)
    desired = [d.desired_replicas for d in decisions]
    assert desired[20] == 1  # down to one after the downscale window
    assert 0 not in desired[:4 + 120]  # but no lower before 120 s of idleness
    zero = decisions[4 + 120]
    assert zero.desired_replicas == 0 and zero.action == "to_zero"
    assert "no request for 120 s" in zero.reason


def test_at_zero_a_queued_request_starts_one_replica_at_once():
    policy = QueueDepthPolicy(settings(min_replicas=0))
    decisions, _ = drive(policy, [snapshot(0, 0), snapshot(1, 0, handle_queued=1)])
    assert decisions[0].desired_replicas == 0 and decisions[0].action == "steady"
    assert decisions[1].desired_replicas == 1 and decisions[1].action == "from_zero"


def test_at_zero_with_a_measured_throughput_one_replica_too():
    policy = QueueDepthPolicy(settings(min_replicas=0))
    decision, _ = policy.decide(snapshot(500, 0, handle_queued=1), State(last_active_s=0, service_rate_per_s=2.0))
    assert decision.desired_replicas == 1 and decision.action == "from_zero"


def test_zero_to_one_then_waits_for_it():
    policy = QueueDepthPolicy(settings(min_replicas=0))
    _, state = policy.decide(snapshot(0, 0, handle_queued=3), None)
    decisions, _ = drive(policy, [ClusterSnapshot(t, 0, 1, 3 + t) for t in range(1, 20)], state)
    assert {d.desired_replicas for d in decisions} == {1}


def test_bounds_clip_the_recommendation():
    policy = QueueDepthPolicy(settings(min_replicas=2, max_replicas=5))
    decisions, _ = drive(policy, [snapshot(0, 2, busy=16, waiting=400), snapshot(1, 5, busy=40, waiting=400)])
    assert decisions[0].desired_replicas == 5
    assert decisions[1].desired_replicas == 5 and decisions[1].action == "steady"
    low, _ = drive(policy, [snapshot(t, 2) for t in range(200)])
    assert {d.desired_replicas for d in low} == {2}


def test_a_throughput_the_queue_refutes_is_dropped():
    """Given 10 req/s per replica, two replicas seem to cover 5 req/s; the queue keeps growing
    (nothing finishes: long requests) for a start time and a window, so the figure goes and
    the queue alone sizes the next step."""
    policy = QueueDepthPolicy(settings(replica_throughput_per_s=10.0, replica_start_s=20, metrics_window_s=10))
    decisions, state = drive(policy, [snapshot(t, 2, busy=16, waiting=5 * t) for t in range(40)])
    covered = [d for d in decisions if d.action == "hold"]
    assert covered and "10.00 req/s per replica" in covered[0].reason
    assert decisions[-1].desired_replicas > 2
    assert state.hint_refuted and state.service_rate_per_s is None
