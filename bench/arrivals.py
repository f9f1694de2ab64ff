"""Arrival schedules: when each request of a run may be sent.

An open-loop schedule fixes every send time in advance (``send_offsets_s[i]`` seconds after
the run starts, non-decreasing); a closed loop sends all requests as fast as
``max_concurrency`` in-flight slots allow. Every schedule is bounded: at most
``max_requests`` offsets, all below ``max_duration_s``; the runner also stops starting
requests at ``max_duration_s``. Seeded schedules are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class RateStep:
    """Hold ``rate_per_s`` for ``duration_s`` (a rate of 0 is an idle pause)."""

    duration_s: float
    rate_per_s: float

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.rate_per_s < 0 or math.isinf(self.rate_per_s):
            raise ValueError(f"a step needs duration_s > 0 and a finite rate_per_s >= 0: {self}")


@dataclass(frozen=True, slots=True)
class ArrivalSchedule:
    """``max_concurrency`` caps requests in flight (None: no cap; open loop only may omit it).

    ``description`` is a short human label such as ``poisson 2 req/s`` or ``concurrency 4``.
    """

    kind: str
    send_offsets_s: tuple[float, ...]
    max_duration_s: float
    max_concurrency: int | None = None
    description: str = ""

    @property
    def num_requests(self) -> int:
        return len(self.send_offsets_s)


def _check_bounds(max_requests: int, max_duration_s: float) -> None:
    if max_requests < 1 or not max_duration_s > 0:
        raise ValueError(f"need max_requests >= 1 and max_duration_s > 0, got {max_requests}, {max_duration_s}")


def _rate_label(rate_per_s: float) -> str:
    return "inf" if math.isinf(rate_per_s) else f"{rate_per_s:g}"


def poisson(
    rate_per_s: float, max_requests: int, max_duration_s: float, seed: int = 0, max_concurrency: int | None = None
) -> ArrivalSchedule:
    """Poisson arrivals: the first request at 0, then exponential gaps of mean 1/rate
    (``numpy.random.default_rng(seed)``). An infinite rate sends everything at 0."""
    _check_bounds(max_requests, max_duration_s)
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    if math.isinf(rate_per_s):
        offsets = np.zeros(max_requests)
    else:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, size=max_requests - 1)
        offsets = np.concatenate(([0.0], np.cumsum(gaps)))
    kept = tuple(float(t) for t in offsets if t < max_duration_s)
    return ArrivalSchedule("poisson", kept, max_duration_s, max_concurrency, f"poisson {_rate_label(rate_per_s)} req/s")


def constant(
    rate_per_s: float, max_requests: int, max_duration_s: float, max_concurrency: int | None = None
) -> ArrivalSchedule:
    """Evenly spaced: request i at i / rate. An infinite rate sends everything at 0."""
    _check_bounds(max_requests, max_duration_s)
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
    gap_s = 0.0 if math.isinf(rate_per_s) else 1.0 / rate_per_s
    kept = tuple(t for t in (i * gap_s for i in range(max_requests)) if t < max_duration_s)
    return ArrivalSchedule("constant", kept, max_duration_s, max_concurrency, f"constant {_rate_label(rate_per_s)} req/s")


def steps(
    rate_steps: list[RateStep],
    max_requests: int,
    max_duration_s: float | None = None,
    seed: int = 0,
    poisson_within: bool = True,
    max_concurrency: int | None = None,
) -> ArrivalSchedule:
    """Piecewise-constant rate, for autoscaling runs: each step's arrivals fall inside it.

    ``poisson_within`` draws exponential gaps restarted at each step boundary (exact for a
    Poisson process by memorylessness); otherwise step k sends at its start + j / rate.
    ``max_duration_s`` defaults to the total of the steps and may only shorten it.
    """
    if not rate_steps:
        raise ValueError("a step schedule needs at least one step")
    total_s = sum(s.duration_s for s in rate_steps)
    max_duration_s = total_s if max_duration_s is None else min(max_duration_s, total_s)
    _check_bounds(max_requests, max_duration_s)
    rng = np.random.default_rng(seed)
    offsets: list[float] = []
    start_s = 0.0
    for step in rate_steps:
        end_s = start_s + step.duration_s
        if step.rate_per_s > 0:
            t = start_s if not poisson_within else start_s + rng.exponential(1.0 / step.rate_per_s)
            while t < end_s and t < max_duration_s and len(offsets) < max_requests:
                offsets.append(float(t))
                t = t + (rng.exponential(1.0 / step.rate_per_s) if poisson_within else 1.0 / step.rate_per_s)
        start_s = end_s
    label = ", ".join(f"{s.duration_s:g}s@{s.rate_per_s:g}" for s in rate_steps)
    kind = "step-poisson" if poisson_within else "step-constant"
    return ArrivalSchedule(kind, tuple(offsets), max_duration_s, max_concurrency, f"steps {label} req/s")


def closed_loop(max_concurrency: int, max_requests: int, max_duration_s: float) -> ArrivalSchedule:
    """Keep ``max_concurrency`` requests in flight until ``max_requests`` were sent."""
    _check_bounds(max_requests, max_duration_s)
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    return ArrivalSchedule(
        "closed", (0.0,) * max_requests, max_duration_s, max_concurrency, f"concurrency {max_concurrency}"
    )


def parse_steps(text: str) -> list[RateStep]:
    """``"10:0.5,30:4"`` → 10 s at 0.5 req/s then 30 s at 4 req/s."""
    result = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        duration, sep, rate = part.partition(":")
        if not sep:
            raise ValueError(f"step {part!r} is not DURATION_S:RATE")
        try:
            result.append(RateStep(float(duration), float(rate)))
        except ValueError as error:
            raise ValueError(f"bad step {part!r}: {error}") from None
    if not result:
        raise ValueError(f"no steps in {text!r}")
    return result
