"""Autoscaled scenarios: kaon's queue-depth policy (the object the cluster runs) and Ray
Serve's default policy (``reference_autoscaling``) on the same seeded workload, with the
step-response figures of each.

``--replicas`` is the most replicas an autoscaler may use; a run starts at
``initial_replicas``. kaon's policy gets kaon's ``AutoscalingConfig`` defaults with the
calibration's ``cold_start_s`` as the expected replica start time and a replica's batch as
its capacity, as a deployment on that hardware would; ``overrides`` change any field. Ray's
policy targets one full batch of ongoing requests per replica unless told otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kaon.autoscaling.figures import needed_replicas, replica_seconds, step_response, up_steps
from kaon.autoscaling.policy import QueueDepthPolicy, Settings
from kaon.autoscaling.snapshot import AutoscalingPolicy
from kaon.config import AutoscalingConfig
from kaon.sim import scenarios
from kaon.sim.reference_autoscaling import RayDefaultAutoscaler

AUTOSCALERS = ("queue_depth", "ray_default")


@dataclass(slots=True)
class AutoscalingSpec:
    min_replicas: int = 1
    initial_replicas: int | None = None  # default: min_replicas, at least one
    overrides: dict[str, Any] = field(default_factory=dict)  # kaon AutoscalingConfig fields
    ray_target_ongoing_requests: float | None = None  # default: a replica's batch

    def initial(self) -> int:
        return self.initial_replicas if self.initial_replicas is not None else max(self.min_replicas, 1)


def replica_capacity(scenario: scenarios.Scenario) -> int:
    return min(scenario.cost.max_batch, scenario.max_ongoing_requests)


def kaon_config(scenario: scenarios.Scenario, spec: AutoscalingSpec) -> AutoscalingConfig:
    values = {"min_replicas": spec.min_replicas, "max_replicas": scenario.replicas,
              "replica_start_s": scenario.cost.cold_start_s}
    return AutoscalingConfig(**(values | spec.overrides))


def make_autoscaler(name: str, scenario: scenarios.Scenario, spec: AutoscalingSpec) -> AutoscalingPolicy:
    if name == "queue_depth":
        return QueueDepthPolicy(Settings.from_config(kaon_config(scenario, spec), replica_capacity(scenario)))
    if name == "ray_default":
        target = spec.ray_target_ongoing_requests or replica_capacity(scenario)
        return RayDefaultAutoscaler(target, spec.min_replicas, scenario.replicas)
    raise ValueError(f"unknown autoscaler {name!r}; known: {', '.join(AUTOSCALERS)}")


def simulate_autoscaled(scenario: scenarios.Scenario, policy_name: str, autoscaler_name: str, spec: AutoscalingSpec,
                        replica_rate_per_s: float, label: str) -> dict[str, Any]:
    """One run as ``scenarios.result_dict`` plus ``autoscaling``: the step response to the
    highest-rate phase (replicas needed = its rate / ``replica_rate_per_s``), the requests
    lost (unfinished at the end) and every decision that changed the count or the action."""
    autoscaler = make_autoscaler(autoscaler_name, scenario, spec)
    window_s = kaon_config(scenario, spec).metrics_window_s
    result = scenarios.simulate(scenario, policy_name, autoscaler=autoscaler, replicas=spec.initial(),
                                min_replicas=spec.min_replicas, max_replicas=scenario.replicas, metrics_window_s=window_s)
    data = scenarios.result_dict(scenario, result) | {"label": label}
    steps = up_steps([(d, m * scenario.rate_per_s) for d, m in scenario.steps])
    data["summary"]["policy"] = label
    data["autoscaling"] = {
        "autoscaler": autoscaler_name, "replica_rate_per_s": replica_rate_per_s,
        "steps": [asdict(step_response(result.timeline, start_s, end_s, needed_replicas(rate, replica_rate_per_s)))
                  for start_s, end_s, rate in steps],
        "replica_seconds": replica_seconds(result.timeline), "lost_requests": result.unfinished,
        "decisions": result.extra["decisions"],
    }
    return data


def table(results: list[dict[str, Any]]) -> str:
    """One line per load step of each autoscaled run: when, replicas needed, seconds until
    they served, overshoot until then and the step's peak; then the run's cost in
    replica-seconds, requests lost and TTFT."""
    header = ["run", "step at s", "needed", "to enough s", "overshoot", "peak", "replica·s", "lost", "TTFT p50 ms", "p99 ms"]
    rows = [header]
    for result in results:
        a, ttft = result["autoscaling"], result["summary"]["ttft"]
        run = [f"{a['replica_seconds']:.0f}", str(a["lost_requests"]), _ms(ttft["p50_ms"]), _ms(ttft["p99_ms"])]
        for step in a["steps"]:
            enough = "never" if step["time_to_enough_s"] is None else f"{step['time_to_enough_s']:.0f}"
            rows.append([result["label"], f"{step['step_start_s']:.0f}", str(step["needed_replicas"]), enough,
                         str(step["overshoot_replicas"]), str(step["peak_replicas"]), *run])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
