"""kaon.bench.arrivals: seeded schedules with the right rates, bounded in count and time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kaon.bench import arrivals
from kaon.bench.arrivals import RateStep


def test_poisson_mean_gap_matches_rate_and_is_seeded() -> None:
    schedule = arrivals.poisson(4.0, max_requests=20_000, max_duration_s=1e9, seed=7)
    gaps = np.diff(schedule.send_offsets_s)
    assert schedule.num_requests == 20_000 and schedule.send_offsets_s[0] == 0.0
    assert np.all(gaps >= 0)
    assert abs(gaps.mean() - 0.25) < 0.25 * 0.03  # 20k exponential gaps: s.e. ~0.7 %
    assert abs(gaps.std() - 0.25) < 0.25 * 0.05  # exponential: std == mean
    assert schedule == arrivals.poisson(4.0, 20_000, 1e9, seed=7)
    assert schedule != arrivals.poisson(4.0, 20_000, 1e9, seed=8)


def test_bounds_cut_count_and_duration() -> None:
    assert arrivals.poisson(1000.0, max_requests=50, max_duration_s=1e9).num_requests == 50
    short = arrivals.poisson(10.0, max_requests=10_000, max_duration_s=2.0, seed=1)
    assert max(short.send_offsets_s) < 2.0 and 10 < short.num_requests < 35
    assert arrivals.constant(2.0, 100, 3.0).send_offsets_s == (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


def test_infinite_rate_sends_all_at_once() -> None:
    assert arrivals.poisson(math.inf, 5, 10.0).send_offsets_s == (0.0,) * 5
    assert arrivals.constant(math.inf, 3, 10.0).send_offsets_s == (0.0,) * 3


def test_constant_steps_are_exact() -> None:
    plan = [RateStep(10, 0.5), RateStep(2, 0), RateStep(3, 4)]
    schedule = arrivals.steps(plan, max_requests=1000, poisson_within=False)
    offsets = schedule.send_offsets_s
    assert [t for t in offsets if t < 10] == [0, 2, 4, 6, 8]
    assert not [t for t in offsets if 10 <= t < 12]
    assert [t for t in offsets if t >= 12] == [12 + k * 0.25 for k in range(12)]
    assert schedule.max_duration_s == 15


def test_poisson_steps_respect_each_step() -> None:
    plan = [RateStep(200, 1.0), RateStep(100, 0.0), RateStep(200, 5.0)]
    offsets = np.array(arrivals.steps(plan, max_requests=100_000, seed=3).send_offsets_s)
    assert np.all(np.diff(offsets) >= 0) and offsets.max() < 500
    low, idle, high = ((offsets >= a) & (offsets < b) for a, b in ((0, 200), (200, 300), (300, 500)))
    assert abs(low.sum() - 200) < 4 * math.sqrt(200)
    assert idle.sum() == 0
    assert abs(high.sum() - 1000) < 4 * math.sqrt(1000)


def test_steps_bounded_by_count_and_duration() -> None:
    plan = [RateStep(10, 10.0)]
    assert arrivals.steps(plan, max_requests=7).num_requests == 7
    assert max(arrivals.steps(plan, max_requests=1000, max_duration_s=2.0).send_offsets_s) < 2.0


def test_closed_loop() -> None:
    schedule = arrivals.closed_loop(4, max_requests=30, max_duration_s=60)
    assert schedule.max_concurrency == 4 and schedule.num_requests == 30
    assert set(schedule.send_offsets_s) == {0.0}


def test_parse_steps() -> None:
    assert arrivals.parse_steps("10:0.5, 30:4") == [RateStep(10, 0.5), RateStep(30, 4)]
    for bad in ("", "10", "10:x", "-1:2", "5:-1"):
        with pytest.raises(ValueError):
            arrivals.parse_steps(bad)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        arrivals.poisson(0, 10, 10)
    with pytest.raises(ValueError):
        arrivals.constant(1, 0, 10)
    with pytest.raises(ValueError):
        arrivals.closed_loop(0, 10, 10)
