"""models[].autoscaling: validation, `kaon serve --min/--max-replicas`, the mapping onto Ray
Serve's AutoscalingConfig, and the glue's reading of Serve's AutoscalingContext (no cluster)."""

from dataclasses import asdict
from types import SimpleNamespace

import pytest
from ray.serve._private.common import TimeStampedValue

from kaon.autoscaling.policy import QueueDepthPolicy, Settings, State
from kaon.autoscaling.snapshot import ClusterSnapshot, ReplicaLoad
from kaon.cli import _parser, serve_overrides
from kaon.config import ConfigError, apply_overrides, parse_config
from kaon.deployments.autoscaling_policy import (
    FINISHED,
    RUNNING,
    STATE_KEY,
    WAITING,
    KaonAutoscalingPolicy,
    serve_autoscaling_config,
    snapshot_from_context,
)


def config(autoscaling=None, **model):
    entry = {"name": "m", "source": "kaon-tiny:tiny", **model}
    if autoscaling is not None:
        entry["autoscaling"] = autoscaling
    return parse_config({"models": [entry]})


def test_absent_means_a_fixed_count():
    assert config(replicas=3).models[0].autoscaling is None


@pytest.mark.parametrize(("section", "message"), [
    ({"min_replicas": 3, "max_replicas": 2}, "min_replicas (3) must not exceed max_replicas (2)"),
    ({"max_replicas": 4, "initial_replicas": 5}, "initial_replicas (5) must lie within"),
    ({"max_replicas": 4, "metrics_window_s": 1, "metrics_interval_s": 1}, "metrics_window_s (1.0) must exceed"),
    ({"min_replicas": 0}, "models.0.autoscaling.max_replicas: Field required"),
    ({"max_replicas": 2, "panic_threshold": 1}, "models.0.autoscaling.panic_threshold"),
    ({"max_replicas": 2, "scale_up_delay": 1}, "models.0.autoscaling.scale_up_delay: Extra inputs are not permitted"),
])
def test_bad_sections_fail_naming_the_field(section, message):
    with pytest.raises(ConfigError, match="models.0.autoscaling") as caught:
        config(section)
    assert message in str(caught.value)


def test_initial_replicas_default_to_the_fixed_count_within_bounds():
    assert config({"min_replicas": 0, "max_replicas": 4}, replicas=2).models[0].autoscaling.initial(2) == 2
    assert config({"min_replicas": 2, "max_replicas": 4}).models[0].autoscaling.initial(1) == 2
    assert config({"max_replicas": 4, "initial_replicas": 3}).models[0].autoscaling.initial(1) == 3


def serve_args(*flags):
    return _parser().parse_args(["serve", *flags])


def test_serve_flags_start_or_change_the_section():
    plain = config(replicas=2)
    overrides = serve_overrides(plain, serve_args("--min-replicas", "0"))
    assert overrides == {"models.0.autoscaling": {"min_replicas": 0, "max_replicas": 2}}
    assert apply_overrides(plain, overrides).models[0].autoscaling.max_replicas == 2
    scaled = config({"max_replicas": 8, "downscale_stabilization_s": 30})
    changed = apply_overrides(scaled, serve_overrides(scaled, serve_args("--max-replicas", "3")))
    assert (changed.models[0].autoscaling.max_replicas, changed.models[0].autoscaling.downscale_stabilization_s) == (3, 30)
    with pytest.raises(ConfigError, match="min_replicas \\(5\\) must not exceed"):
        apply_overrides(plain, serve_overrides(plain, serve_args("--min-replicas", "5", "--max-replicas", "3")))


def test_serve_config_hands_the_policy_to_the_controller_with_serves_delays_off():
    model = config({"min_replicas": 0, "max_replicas": 5, "metrics_window_s": 6, "metrics_interval_s": 0.5},
                   replicas=2, max_ongoing_requests=16).models[0]
    serve = serve_autoscaling_config(model)
    assert (serve.min_replicas, serve.max_replicas, serve.initial_replicas) == (0, 5, 2)
    assert (serve.upscale_delay_s, serve.downscale_delay_s, serve.downscale_to_zero_delay_s) == (0, 0, 0)
    assert (serve.look_back_period_s, serve.metrics_interval_s) == (6, 0.5)
    assert serve.policy.policy_function == "kaon.deployments.autoscaling_policy.KaonAutoscalingPolicy"
    settings = Settings(**serve.policy.policy_kwargs)
    assert settings.replica_capacity_requests == 16  # Serve's cap is below the engine's 64 sequences
    assert (settings.min_replicas, settings.max_replicas, settings.metrics_window_s) == (0, 5, 6)


def context(time_s=100.0, running=2, target=3, queued=4.0, series=None, policy_state=None):
    replicas = [f"r{i}" for i in range(running)]
    return SimpleNamespace(current_time=time_s, current_num_replicas=running, target_num_replicas=target,
                           running_replicas=replicas, total_queued_requests=queued, raw_metrics=series or {},
                           policy_state=policy_state or {}, deployment_name="model-m", app_name="kaon")


def points(*pairs):
    return [TimeStampedValue(t, v) for t, v in pairs]


def test_context_becomes_a_snapshot_of_the_last_figures_and_the_finished_counts():
    series = {RUNNING: {"r0": points((95, 1), (99, 8))}, WAITING: {"r0": points((99, 3))},
              FINISHED: {"r0": points((90, 10), (95, 20), (99, 28))}}
    snap = snapshot_from_context(context(series=series))
    assert (snap.running_replicas, snap.starting_replicas, snap.handle_queued_requests) == (2, 1, 4.0)
    first, second = snap.replicas
    assert (first.running_requests, first.waiting_requests, first.completed_requests, first.window_s) == (8, 3, 18, 9)
    assert (second.running_requests, second.completed_requests) == (0, 0.0)  # not reported yet
    assert snap.queue_depth_requests == 7


def test_serve_policy_keeps_kaons_state_under_its_key_and_returns_the_decision():
    settings = Settings(min_replicas=1, max_replicas=6, replica_capacity_requests=4, upscale_stabilization_s=0)
    policy = KaonAutoscalingPolicy(**asdict(settings))
    series = {RUNNING: {"r0": points((99, 4))}, WAITING: {"r0": points((99, 20))}}
    desired, state = policy(context(running=1, target=1, queued=0.0, series=series))
    assert desired == 4  # 24 requests in batches of 4 running + 2 queued: panic
    assert isinstance(state[STATE_KEY], State)
    again, _ = policy(context(time_s=101, running=1, target=4, queued=0.0, series=series, policy_state=state))
    assert again == 4  # three starting count as capacity


def test_a_given_throughput_sizes_the_first_burst():
    policy = QueueDepthPolicy(Settings(max_replicas=50, replica_capacity_requests=8, upscale_stabilization_s=0,
                                       replica_throughput_per_s=2.0, metrics_window_s=4))
    _, state = policy.decide(ClusterSnapshot(0.0, 2), None)
    for t in range(1, 5):  # 20 req/s pile up on two busy replicas that have finished nothing yet
        waiting = 20 * t - 16
        loads = (ReplicaLoad(8, waiting // 2), ReplicaLoad(8, waiting - waiting // 2))
        decision, state = policy.decide(ClusterSnapshot(float(t), 2, replicas=loads), state)
    assert decision.desired_replicas == 12  # 20 req/s at 90 % of the 2 req/s given, without waiting to measure
    assert "2.00 req/s per replica" in decision.reason
