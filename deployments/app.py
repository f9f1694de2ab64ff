"""``build_app``: the config → a Ray Serve application (one deployment per model + the router);
``app_builder``: the same from a Serve config file's ``args``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from kaon.cluster.placement import plan_replica
from kaon.config import ConfigError, KaonConfig, ModelConfig, NodeTypeConfig, apply_overrides, deployment_name, parse_config, resolve_device
from kaon.deployments.auth import api_keys
from kaon.deployments.autoscaling_policy import serve_autoscaling_config
from kaon.deployments.replica import EngineFactory, ModelReplica
from kaon.deployments.request_router import KaonRequestRouter
from kaon.deployments.router import Router
from kaon.engine.args import publishes_kv_events
from kaon.engine.vllm_engine import VLLMEngine
from kaon.routing.prompt_keys import block_size_tokens


def _model_deployment(
    model: ModelConfig, device: str, engine_factory: EngineFactory, node_types: list[NodeTypeConfig]
) -> Application:
    options = plan_replica(model, device, node_types).deployment_options()
    deployment = serve.deployment(ModelReplica).options(
        name=deployment_name(model.name),
        num_replicas=None if model.autoscaling else model.replicas,
        autoscaling_config=serve_autoscaling_config(model) if model.autoscaling else None,
        max_ongoing_requests=model.max_ongoing_requests,
        max_queued_requests=model.max_queued_requests,
        graceful_shutdown_timeout_s=model.graceful_shutdown_timeout_s,
        health_check_period_s=10,
        health_check_timeout_s=60,
        request_router_config=request_router_config(model, device),
        **options,
    )
    return deployment.bind(model, device, engine_factory)


def request_router_config(model: ModelConfig, device: str) -> RequestRouterConfig:
    routing = model.routing
    settings = {
        "block_size_tokens": block_size_tokens(model, device),
        "prefill_tokens_per_s": routing.prefill_tokens_per_s,
        "decode_cost_tokens": routing.decode_cost_tokens,
        "step_overhead_tokens": routing.step_overhead_tokens,
        "spill_slack_requests": routing.spill_slack_requests,
        "spill_ratio": routing.spill_ratio,
        "capacity_blocks_per_replica": routing.index_capacity_blocks,
        "ttl_s": routing.index_ttl_s,
    }
    events = None
    if publishes_kv_events(model):
        events = {"gap_ttl_s": routing.events_gap_ttl_s, "silence_timeout_s": routing.events_silence_timeout_s}
    return RequestRouterConfig(
        request_router_class=KaonRequestRouter,
        request_router_kwargs={"policy": routing.policy, "seed": routing.seed, "settings": settings, "events": events},
        request_routing_stats_period_s=routing.stats_period_s,
    )


def build_app(config: KaonConfig, device: str, engine_factory: EngineFactory = VLLMEngine) -> Application:
    """Wire the router to one deployment per model; ``engine_factory`` picks the engine (fake in tests)."""
    models = {m.name: _model_deployment(m, device, engine_factory, config.cluster.node_types) for m in config.models}
    router = serve.deployment(Router).options(
        name="router",
        num_replicas=config.router.replicas,
        max_ongoing_requests=config.router.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0},
    )
    return router.bind(config, models, device, api_keys(config.auth, os.environ))


def app_builder(args: dict[str, Any]) -> Application:
    """Serve's application builder for config files (``serve deploy``, KubeRay's ``serveConfigV2``):
    ``import_path: kaon.deployments.app:app_builder`` with ``args: {config: <kaon config mapping>}``
    and optionally ``set: {dotted.path: value}`` applied on top, as ``kaon serve --set`` does.
    Validated like a config file: anything wrong raises ``ConfigError`` naming the field."""
    unknown = sorted(set(args) - {"config", "set"})
    if unknown:
        raise ConfigError(f"application args: unknown keys {unknown}; expected config and optionally set")
    config = parse_config(_mapping(args, "config"))
    if "set" in args:
        config = apply_overrides(config, _mapping(args, "set"))
    return build_app(config, resolve_device(config.cluster.device))


def _mapping(args: dict[str, Any], key: str) -> dict[str, Any]:
    value = args.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"application args.{key}: expected a mapping, got {type(value).__name__}")
    return dict(value)
