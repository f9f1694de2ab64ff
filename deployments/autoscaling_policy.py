"""Ray Serve glue for kaon's autoscaling policy: the policy Serve's controller calls, the
Serve ``AutoscalingConfig`` that installs it, and the figures replicas report to it.

How Serve 2.60 runs it (``ray/serve/_private/autoscaling_state.py``, ``autoscaling_policy.py``):
the controller builds one ``KaonAutoscalingPolicy`` per deployment from ``policy_kwargs``
and calls it every control-loop tick (0.1 s) with an ``AutoscalingContext``, inside Serve's
wrapper: at zero running replicas with requests queued at a handle, the wrapper starts one
replica without calling the policy (the handle pushes its queue at once in that case);
otherwise it applies its scaling factors (1 here) and up/down delays (0 here: kaon's policy
stabilises itself; Serve still steps down to zero only from one), then min/max. The
``policy_state`` dict stays in the controller between ticks; kaon's ``State`` lives under one
key. Replicas report through ``ModelReplica.record_autoscaling_stats``, sampled every
``metrics_interval_s`` into series over ``look_back_period_s``; handles report their queue.
The controller is a Ray actor, so ``ray.util.metrics`` work there (Serve's own
``serve_autoscaling_*`` gauges are set from the same place).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from ray.serve.config import AutoscalingConfig, AutoscalingPolicy
from ray.util.metrics import Counter, Gauge

from kaon.autoscaling.policy import QueueDepthPolicy, Settings
from kaon.autoscaling.snapshot import ClusterSnapshot, Decision, ReplicaLoad, counter_increase
from kaon.config import ModelConfig
from kaon.engine.stats import EngineStats

logger = logging.getLogger("ray.serve")

RUNNING, WAITING, FINISHED = "kaon_running_requests", "kaon_waiting_requests", "kaon_finished_requests"
"""The custom autoscaling metrics a replica reports (engine gauges; finished: a counter)."""
STATE_KEY = "kaon"


def serve_autoscaling_config(model: ModelConfig) -> AutoscalingConfig:
    """Serve's config for ``model.autoscaling``: bounds, metric timing, kaon's policy; Serve's
    own delays off. A replica's capacity is the engine's batch (or Serve's cap, if lower)."""
    config = model.autoscaling
    settings = Settings.from_config(config, min(model.engine.max_num_seqs, model.max_ongoing_requests))
    return AutoscalingConfig(
        min_replicas=config.min_replicas,
        max_replicas=config.max_replicas,
        initial_replicas=config.initial(model.replicas),
        upscale_delay_s=0.0,
        downscale_delay_s=0.0,
        downscale_to_zero_delay_s=0.0,
        metrics_interval_s=config.metrics_interval_s,
        look_back_period_s=config.metrics_window_s,
        aggregation_function="max",  # the handles' queue: its peak over the window, not a lagging mean
        policy=AutoscalingPolicy(policy_function=KaonAutoscalingPolicy, policy_kwargs=asdict(settings)),
    )


def replica_autoscaling_stats(stats: EngineStats, finished_requests: int) -> dict[str, float]:
    return {RUNNING: stats.running_requests, WAITING: stats.waiting_requests, FINISHED: finished_requests}


def snapshot_from_context(ctx: Any) -> ClusterSnapshot:
    """What Serve's ``AutoscalingContext`` says, as a ``ClusterSnapshot``: replicas asked for
    and not running yet are starting; each running replica's last engine figures and the
    requests it finished over its reported series."""
    running = ctx.current_num_replicas
    series = ctx.raw_metrics or {}
    loads = tuple(_replica_load(series, replica_id) for replica_id in ctx.running_replicas)
    return ClusterSnapshot(ctx.current_time, running, max(ctx.target_num_replicas - running, 0),
                           float(ctx.total_queued_requests or 0.0), loads)


def _replica_load(series: dict[str, dict[Any, list]], replica_id: Any) -> ReplicaLoad:
    def points(name: str) -> list[tuple[float, float]]:
        return [(p.timestamp, p.value) for p in series.get(name, {}).get(replica_id, ())]

    running, waiting = points(RUNNING)[-1:], points(WAITING)[-1:]
    finished, window_s = counter_increase(points(FINISHED))
    return ReplicaLoad(int(running[0][1]) if running else 0, int(waiting[0][1]) if waiting else 0, finished, window_s)


class KaonAutoscalingPolicy:
    """The class Serve instantiates with ``policy_kwargs`` (a ``Settings`` as a dict) and calls
    with each tick's context; logs each decision that changes the count or the action."""

    def __init__(self, **settings: Any):
        self._policy = QueueDepthPolicy(Settings(**settings))
        self._metrics: AutoscalingMetrics | None = None
        self._last: Decision | None = None

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        snapshot = snapshot_from_context(ctx)
        decision, state = self._policy.decide(snapshot, ctx.policy_state.get(STATE_KEY))
        if self._metrics is None:
            self._metrics = AutoscalingMetrics(ctx.deployment_name, ctx.app_name or "")
        self._metrics.record(snapshot, decision, changed=self._last is not None and decision.desired_replicas != self._last.desired_replicas)
        if self._last is None or (decision.desired_replicas, decision.action) != (self._last.desired_replicas, self._last.action):
            logger.info("kaon autoscaling %s: %s, %d → %d replicas: %s", ctx.deployment_name, decision.action,
                        decision.current_replicas, decision.desired_replicas, decision.reason)
        self._last = decision
        return decision.desired_replicas, {STATE_KEY: state}


class AutoscalingMetrics:
    """Prometheus gauges (through Ray's metrics agent, which prefixes ``ray_``) of one
    deployment's autoscaling, set on every decision."""

    def __init__(self, deployment: str, application: str):
        tags = {"deployment": deployment, "application": application}
        keys = ("deployment", "application")

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, keys).set_default_tags(tags)

        self._desired = gauge("kaon_autoscaling_desired_replicas", "Replicas kaon's policy asks for.")
        self._running = gauge("kaon_autoscaling_running_replicas", "Replicas serving.")
        self._starting = gauge("kaon_autoscaling_starting_replicas", "Replicas asked for, not serving yet.")
        self._queue = gauge("kaon_autoscaling_queue_depth_requests",
                            "Requests waiting in the engines and at the handles, as the last decision saw them.")
        self._changes = Counter("kaon_autoscaling_decisions", "Decisions that changed the replica count, by action.",
                                (*keys, "action")).set_default_tags(tags)

    def record(self, snapshot: ClusterSnapshot, decision: Decision, changed: bool) -> None:
        self._desired.set(decision.desired_replicas)
        self._running.set(snapshot.running_replicas)
        self._starting.set(snapshot.starting_replicas)
        self._queue.set(decision.queue_depth_requests)
        if changed:
            self._changes.inc(1, {"action": decision.action})
