"""Scenarios: a workload, an arrival process and a cluster, run under named policies.

Policy names: every policy of kaon's registry (``kaon.routing.registry.POLICIES``, built
with ``make_policy``, the simulated clock passed to those that take a ``clock``) plus
``policies`` here, factories ``seed -> RoutingPolicy`` of the simulator-only reference
policies (``register_policy`` adds more). ``prefix_load`` gets the calibration's block size,
prefill rate, decode and step costs and cache size as settings, as a deployment would
configure it for its hardware.
``find_saturation`` bisects the arrival rate at which a policy (round robin by default)
stops keeping up.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kaon.routing import registry
from kaon.routing.policy import RoutingPolicy
from kaon.sim import workload as wl
from kaon.sim.cost_model import CostModel
from kaon.sim.engine import AutoscalingPolicy, SimClock, SimConfig, SimResult, Simulator
from kaon.sim.reference import Oracle, RayPrefixAffinity, SGLangThreshold

policies: dict[str, Callable[[int], RoutingPolicy]] = {
    "oracle": Oracle,
    "sglang_threshold": SGLangThreshold,
    "ray_prefix_affinity": RayPrefixAffinity,
}


def register_policy(name: str, factory: Callable[[int], RoutingPolicy]) -> None:
    policies[name] = factory


def policy_names() -> list[str]:
    """kaon's policies first (registry order), then the simulator's."""
    return list(registry.POLICIES) + [n for n in policies if n not in registry.POLICIES]


def make_policy(name: str, seed: int, clock: SimClock, cost: CostModel) -> RoutingPolicy:
    if name in policies:
        return policies[name](seed)
    if name not in registry.POLICIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    options: dict[str, Any] = {}
    if "clock" in inspect.signature(registry.POLICIES[name]).parameters:
        options["clock"] = clock
    settings = None
    if name == "prefix_load":
        # A calibration fitted on prompts of one length may put all prefill time in the
        # per-step overhead (0 s/token); cap the rate at a million tokens per second then.
        prefill_s_per_token = max(cost.prefill_s_per_token, 1e-6)
        settings = {"block_size_tokens": cost.block_size_tokens,
                    "prefill_tokens_per_s": 1.0 / prefill_s_per_token,
                    "decode_cost_tokens": cost.decode_per_seq_s / prefill_s_per_token,
                    "step_overhead_tokens": (cost.decode_base_s + cost.prefill_overhead_s) / prefill_s_per_token,
                    "capacity_blocks_per_replica": cost.kv_capacity_blocks}
    return registry.make_policy(name, seed=seed, settings=settings, **options)


WORKLOADS = ("shared-prefix", "multi-turn", "random")


@dataclass(slots=True)
class Scenario:
    """Everything a run needs but the policy. ``rate_per_s`` is the mean arrival rate;
    ``steps`` (for ``arrivals="step"``) are (duration_s, multiple of the rate) phases and
    replace ``duration_s``. ``workload_args`` go to the workload generator."""

    cost: CostModel
    replicas: int = 16
    workload: str = "shared-prefix"
    workload_args: dict[str, Any] = field(default_factory=dict)
    arrivals: str = "poisson"
    rate_per_s: float = 1.0
    duration_s: float = 600.0
    steps: tuple[tuple[float, float], ...] = ()
    seed: int = 0
    max_ongoing_requests: int = 256
    stats_interval_s: float = 1.0
    drain_timeout_s: float = 300.0

    def describe(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__slots__ if k != "cost"}
        data["calibration"] = self.cost.name
        return data


def make_requests(scenario: Scenario, rate_per_s: float | None = None,
                  duration_s: float | None = None) -> Iterator[wl.SimRequest]:
    """The scenario's requests with their arrival times (optionally at another rate or for
    another duration, as the saturation search does)."""
    rate = scenario.rate_per_s if rate_per_s is None else rate_per_s
    duration = scenario.duration_s if duration_s is None else duration_s
    args = dict(scenario.workload_args, block_size_tokens=scenario.cost.block_size_tokens, seed=scenario.seed)
    if scenario.workload == "shared-prefix":
        requests = wl.shared_prefix(**args)
    elif scenario.workload == "multi-turn":
        requests = wl.multi_turn(**args)
    elif scenario.workload == "random":
        requests = wl.random_lengths(**args)
    else:
        raise ValueError(f"unknown workload {scenario.workload!r}; known: {', '.join(WORKLOADS)}")
    if scenario.arrivals == "poisson":
        times = wl.poisson_arrivals(rate, duration, seed=scenario.seed + 1)
    elif scenario.arrivals == "constant":
        times = wl.constant_arrivals(rate, duration)
    elif scenario.arrivals == "step" and scenario.steps:
        phases = [(d, m * rate) for d, m in scenario.steps]
        if duration_s is not None:  # keep the shape, scaled to the asked duration
            total = sum(d for d, _ in phases)
            phases = [(d * duration_s / total, r) for d, r in phases]
        times = wl.step_arrivals(phases, seed=scenario.seed + 1)
    else:
        raise ValueError(f"unknown arrivals {scenario.arrivals!r} (step needs steps)")
    return wl.with_arrivals(requests, times)


def simulate(scenario: Scenario, policy_name: str, rate_per_s: float | None = None,
             duration_s: float | None = None, autoscaler: AutoscalingPolicy | None = None, **config_fields: Any) -> SimResult:
    """One run; ``config_fields`` set ``SimConfig`` fields beyond the scenario's (an
    autoscaled run's initial, minimum and maximum replicas)."""
    clock = SimClock()
    policy = make_policy(policy_name, scenario.seed, clock, scenario.cost)
    config = SimConfig(**({"replicas": scenario.replicas, "max_ongoing_requests": scenario.max_ongoing_requests,
                           "stats_interval_s": scenario.stats_interval_s, "drain_timeout_s": scenario.drain_timeout_s}
                          | config_fields))
    simulator = Simulator(policy, scenario.cost, config, autoscaler, clock)
    result = simulator.run(make_requests(scenario, rate_per_s, duration_s))
    result.policy = policy_name
    return result


def mean_shape(scenario: Scenario, sample: int = 256) -> tuple[float, float]:
    """Mean (prompt tokens, output tokens) of the scenario's first ``sample`` requests."""
    requests = list(itertools.islice(make_requests(scenario, rate_per_s=4.0 * sample, duration_s=1.0), sample))
    return (float(np.mean([r.prompt_tokens for r in requests])), float(np.mean([r.output_tokens for r in requests])))


def keeps_up(result: SimResult, duration_s: float, fraction: float = 0.95) -> bool:
    """Whether completions over the second half of the arrivals kept pace with them."""
    half = [p for p in result.timeline if duration_s / 2 < p.time_s <= duration_s]
    offered = sum(p.offered_per_s for p in half)
    return offered == 0 or sum(p.completed_per_s for p in half) >= fraction * offered


def find_saturation(scenario: Scenario, policy_name: str = "round_robin", probe_duration_s: float = 120.0,
                    iterations: int = 7, probe_replicas: int | None = None) -> float:
    """The highest arrival rate (req/s) ``policy_name`` keeps up with (``keeps_up`` over a
    ``probe_duration_s`` run), by bisection between 0 and an upper bound from the cost model
    (every replica decoding a full batch), to within 2^-iterations of that bound.

    Round robin deals the stream out evenly and every replica sees every prefix whatever the
    replica count, so its saturation is linear in the count: it is probed on
    ``probe_replicas`` (default min(replicas, 8)) and scaled. Other policies are probed on the
    scenario's own replica count."""
    if probe_replicas is None:
        probe_replicas = min(scenario.replicas, 8) if policy_name == "round_robin" else scenario.replicas
    probe = Scenario(**{k: getattr(scenario, k) for k in scenario.__slots__})
    probe.replicas = probe_replicas
    _, output_tokens = mean_shape(probe)
    cost = probe.cost
    per_replica = cost.max_batch / (cost.decode_step_s(cost.max_batch) * max(output_tokens, 1.0))
    low, high = 0.0, 1.25 * per_replica * probe_replicas

    def ok(rate: float) -> bool:
        return keeps_up(simulate(probe, policy_name, rate, probe_duration_s), probe_duration_s)

    while ok(high):
        low, high = high, 2 * high
    for _ in range(iterations):
        middle = (low + high) / 2
        if ok(middle):
            low = middle
        else:
            high = middle
    return low * scenario.replicas / probe_replicas


# --- reporting ------------------------------------------------------------------------


def _latency_ms(values_s: list[float]) -> dict[str, float | int | None]:
    if not values_s:
        return {"count": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.asarray(values_s) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"count": len(ms), "mean_ms": float(ms.mean()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "max_ms": float(ms.max())}


def summarize(result: SimResult) -> dict[str, Any]:
    """A run's figures in the bench's style (latency dicts in ms, throughputs over the span
    from the first arrival to the last finish)."""
    records = result.records
    wall = max((r.arrival_s + r.e2e_s for r in records), default=0.0)
    out_tokens = sum(r.output_tokens for r in records)
    in_tokens = sum(r.prompt_tokens for r in records)
    per_replica = {rid: (h / q if q else None) for rid, (h, q) in sorted(result.replica_prefix_tokens.items())}
    return {
        "policy": result.policy,
        "requests_arrived": result.arrived,
        "completed": len(records),
        "unfinished": result.unfinished,
        "wall_s": wall,
        "request_throughput_per_s": len(records) / wall if wall else 0.0,
        "output_throughput_tokens_per_s": out_tokens / wall if wall else 0.0,
        "input_throughput_tokens_per_s": in_tokens / wall if wall else 0.0,
        "total_input_tokens": in_tokens,
        "cached_input_tokens": sum(r.cached_tokens for r in records),
        "total_output_tokens": out_tokens,
        "ttft": _latency_ms([r.ttft_s for r in records]),
        "e2e": _latency_ms([r.e2e_s for r in records]),
        "queue": _latency_ms([r.queue_s for r in records]),
        "prefix_cache_hit_rate": result.hit_rate,
        "replica_hit_rates": per_replica,
        "simulated_s": result.end_s,
        "wall_clock_s": result.wall_clock_s,
    }


CDF_LEVELS = tuple(np.round(np.concatenate([np.linspace(0, 99, 199), [99.5, 99.9, 100]]), 3))


def _cdf_ms(values_s: list[float]) -> list[tuple[float, float]]:
    """(fraction, value in ms) at fixed levels: a TTFT CDF small enough for every summary."""
    if not values_s:
        return []
    values = np.percentile(np.asarray(values_s) * 1000.0, CDF_LEVELS)
    return [(float(level) / 100, float(v)) for level, v in zip(CDF_LEVELS, values)]


def result_dict(scenario: Scenario, result: SimResult, include_records: bool = False) -> dict[str, Any]:
    data = {
        "format": 1, "kind": "kaon-sim", "label": result.policy, "config": scenario.describe(),
        "calibration": scenario.cost.to_dict(), "summary": summarize(result),
        "timeline": [asdict(p) for p in result.timeline],
        "ttft_cdf_ms": _cdf_ms([r.ttft_s for r in result.records]),
    }
    if include_records:
        data["records"] = [asdict(r) | {"error": None} for r in result.records]
    return data


def table(summaries: list[dict[str, Any]]) -> str:
    """One line per policy: TTFT p50/p90/p99, e2e p50, throughput, hit rate."""
    def fmt(value: float | None, digits: str = ".1f") -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, digits)

    header = ["policy", "TTFT p50 ms", "p90 ms", "p99 ms", "e2e p50 s", "req/s", "out tok/s", "hit rate", "unfinished"]
    rows = [header] + [[
        s["policy"], fmt(s["ttft"]["p50_ms"]), fmt(s["ttft"]["p90_ms"]), fmt(s["ttft"]["p99_ms"]),
        fmt(None if s["e2e"]["p50_ms"] is None else s["e2e"]["p50_ms"] / 1000, ".2f"),
        fmt(s["request_throughput_per_s"], ".2f"), fmt(s["output_throughput_tokens_per_s"], ".0f"),
        fmt(s["prefix_cache_hit_rate"], ".3f"), str(s["unfinished"]),
    ] for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
