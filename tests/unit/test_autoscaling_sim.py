"""The simulator drives kaon's queue-depth policy (the cluster's object) and Ray's default
policy on the same workload, with step-response figures."""

from kaon.sim import autoscaling, scenarios
from kaon.sim.cost_model import CostModel

# One request = 10 decode steps of 0.1 s, four at a time: a replica serves 4 req/s.
COST = CostModel(name="steps", prefill_s_per_token=0.0, decode_base_s=0.1, decode_per_seq_s=0.0, max_batch=4,
                 kv_capacity_blocks=10_000, block_size_tokens=16, max_num_batched_tokens=None, cold_start_s=20.0)


def scenario():
    return scenarios.Scenario(cost=COST, replicas=8, workload="random",
                              workload_args={"input_tokens": (16, 16), "output_tokens": (10, 10)},
                              arrivals="step", rate_per_s=1.0, steps=((60, 3.0), (120, 14.0), (240, 3.0)), seed=3)


def run(name, **overrides):
    spec = autoscaling.AutoscalingSpec(min_replicas=1, overrides={"downscale_stabilization_s": 60, "upscale_stabilization_s": 2,
                                                                   "metrics_window_s": 6, **overrides})
    return autoscaling.simulate_autoscaled(scenario(), "round_robin", name, spec, replica_rate_per_s=4.0, label=name)


def test_kaon_policy_reaches_the_need_without_overshoot_while_loading_and_loses_nothing():
    result = run("queue_depth")
    figures = result["autoscaling"]
    (step,) = figures["steps"]
    assert (step["step_start_s"], step["needed_replicas"]) == (60, 4)
    assert step["time_to_enough_s"] is not None and step["time_to_enough_s"] < 60
    assert step["overshoot_replicas"] <= 1
    assert figures["lost_requests"] == 0
    final = result["timeline"][-1]
    assert final["desired_replicas"] <= 2  # calm again after the downscale window
    assert any(d["action"] in ("panic", "scale_up") for d in figures["decisions"])


def test_ray_default_runs_on_the_same_workload_and_the_table_lists_both():
    kaon, ray = run("queue_depth"), run("ray_default")
    assert kaon["summary"]["requests_arrived"] == ray["summary"]["requests_arrived"] > 2000
    assert ray["autoscaling"]["lost_requests"] == 0
    table = autoscaling.table([kaon, ray])
    assert table.splitlines()[1].startswith("queue_depth") and table.splitlines()[2].startswith("ray_default")
