"""Step-response figures and the bench's autoscaling timeline, from hand-made timelines."""

import time

import pytest

from kaon.autoscaling.figures import needed_replicas, replica_seconds, step_response, up_steps
from kaon.bench.client import RequestRecord
from kaon.bench.timeline import ReplicaCounts, ReplicaSampler, attach, build_timeline
from kaon.sim.interfaces import TimelinePoint


def point(t, running, starting=0, desired=None):
    return TimelinePoint(t, 0.0, 0.0, 0, 0, running, starting, running + starting if desired is None else desired, None, None)


def test_up_steps_are_the_phases_that_rise():
    assert up_steps([(10, 1.0), (20, 4.0), (30, 1.0), (5, 2.0)]) == [(10, 30, 4.0), (60, 65, 2.0)]
    assert up_steps([(10, 1.0)]) == []


def test_needed_replicas_round_up_but_not_on_exact_multiples():
    assert needed_replicas(10.0, 2.5) == 4
    assert needed_replicas(10.5, 2.5) == 5


def test_step_response_counts_from_the_step_until_enough_stay():
    timeline = [point(1, 2), point(2, 2, 3), point(3, 5), point(4, 4), point(5, 6), point(6, 6), point(7, 2)]
    response = step_response(timeline, step_start_s=2, step_end_s=6, needed=5)
    assert response.time_to_enough_s == 3  # 5 served at 3 s, but 4 at 4 s: enough for good from 5 s
    assert (response.peak_replicas, response.overshoot_replicas) == (6, 1)
    assert step_response(timeline, 2, 6, needed=7).time_to_enough_s is None
    assert replica_seconds(timeline) == pytest.approx(2 + 5 + 5 + 4 + 6 + 6 + 2)


def record(i, start_s, ttft_s, e2e_s, error=None):
    return RequestRecord(f"r{i}", "", None, 4, start_s, start_s, ttft_s, [], e2e_s, 3, 4, 1, 200, error)


def test_bench_timeline_from_records_and_sampled_counts():
    records = [record(0, 0.2, 0.3, 1.5), record(1, 0.5, 1.8, 2.0), record(2, 1.2, None, None, error="HTTP 503")]
    samples = [ReplicaCounts(100.0, 1, 0, 1), ReplicaCounts(101.5, 1, 2, 3)]
    points = build_timeline(records, started_unix_s=100.0, samples=samples)
    assert [p.time_s for p in points] == [1.0, 2.0, 3.0]
    first, second, third = points
    assert (first.offered_per_s, first.queue_depth_requests, first.in_flight_requests) == (2.0, 1, 2)
    assert (first.running_replicas, first.desired_replicas, first.ttft_p50_s) == (1, 1, 0.3)
    assert (second.starting_replicas, second.desired_replicas, second.completed_per_s) == (2, 3, 2.0)
    assert third.ttft_p50_s == pytest.approx(1.8)
    result = {}
    text = attach(result, records, 100.0, samples, steps=[(1.0, 0.5), (2.0, 4.0)], replica_rate_per_s=2.0)
    assert result["autoscaling"]["lost_requests"] == 1
    assert result["autoscaling"]["steps"][0]["needed_replicas"] == 2
    assert len(result["timeline"]) == 3
    assert "1 requests lost" in text and "step at 1 s: 2 replicas needed" in text


def test_sampler_skips_failed_reads_and_stops():
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("controller busy")
        return ReplicaCounts(float(len(calls)), 1, 0, 1)

    with ReplicaSampler(read, interval_s=0.01) as sampler:
        while len(calls) < 4:
            time.sleep(0.005)
    assert [s.unix_s for s in sampler.samples][:2] == [1.0, 3.0]
