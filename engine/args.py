"""kaon's EngineConfig → vLLM's own parsed `vllm serve` arguments.

The config is turned into `vllm serve` command-line flags and parsed by vLLM's parser, so
every default, type conversion and check is exactly `vllm serve`'s, and a bad value fails
with vLLM's message, prefixed with the kaon field that produced it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, NoReturn

from kaon.config import ConfigError, EngineConfig, ModelConfig


def _vllm_parser() -> argparse.ArgumentParser:
    """vLLM's `vllm serve` parser, raising ConfigError instead of exiting on a bad value."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Parser(FlexibleArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise ConfigError(message)

    return make_arg_parser(Parser(prog="kaon-engine"))


def engine_settings(engine: EngineConfig, device: str) -> dict[str, Any]:
    """The vLLM argument values kaon sets from the config (underscore names)."""
    settings: dict[str, Any] = {
        "dtype": engine.dtype,
        "max_model_len": engine.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "pipeline_parallel_size": engine.pipeline_parallel_size,
        "quantization": engine.quantization,
        "enable_prefix_caching": engine.enable_prefix_caching,
        "block_size": engine.block_size,
        "max_num_seqs": engine.max_num_seqs,
        "max_num_batched_tokens": engine.max_num_batched_tokens,
        "enforce_eager": engine.enforce_eager,
        "seed": engine.seed,
        "disable_log_stats": False,
        "enable_prompt_tokens_details": True,  # usage.prompt_tokens_details.cached_tokens, as OpenAI reports
    }
    if device == "gpu":
        settings["gpu_memory_utilization"] = engine.gpu_memory_utilization
        if engine.world_size > 1:
            settings["distributed_executor_backend"] = "ray"
    elif engine.world_size > 1:
        settings["distributed_executor_backend"] = "mp"
    return settings


CPU_THREADS_BIND = "VLLM_CPU_OMP_THREADS_BIND"


def cpu_threads_bind(model: ModelConfig, cpu_ids: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for a multi-rank CPU replica: the cores it may use, split
    into one contiguous share per rank (``0|1``, ``0,1,2,3|4,5,6,7``).

    vLLM's default (``auto``) binds each rank to a NUMA node of its own and fails where ranks
    outnumber NUMA nodes, as on any one-socket machine.
    """
    ranks = model.engine.world_size
    if len(cpu_ids) < ranks:
        raise ConfigError(f"models[{model.name}].engine: {ranks} CPU ranks (tp × pp) need a core each, "
                          f"the replica may use {len(cpu_ids)}: {cpu_ids}")
    share = len(cpu_ids) // ranks
    return "|".join(",".join(str(cpu) for cpu in cpu_ids[rank * share:(rank + 1) * share]) for rank in range(ranks))


KV_EVENTS_CONFIG = {
    "enable_kv_cache_events": True, "publisher": "zmq", "endpoint": "tcp://*:0", "replay_endpoint": "tcp://*:0", "topic": "kv",
}
"""vLLM publishes its prefix cache's stores and evictions, and answers replay requests for
its last 10,000 batches, on ports of its own choosing on this node's IP (``tcp://*:0``);
the replica reads the bound addresses back from the engine."""


def publishes_kv_events(model: ModelConfig) -> bool:
    return model.routing.policy == "prefix_load" and model.routing.kv_events and model.engine.enable_prefix_caching


def to_flags(settings: dict[str, Any], option_strings: set[str]) -> list[str]:
    """`{"max_model_len": 2048, "enforce_eager": True}` → `["--max-model-len", "2048", "--enforce-eager"]`.

    A False boolean becomes ``--no-NAME`` where vLLM has that form; a plain store-true flag
    is left out instead (False is its default).
    """
    flags: list[str] = []
    for name, value in settings.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            negative = "--no-" + flag[2:]
            if value or negative in option_strings:
                flags.append(flag if value else negative)
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        elif isinstance(value, (list, tuple)):
            flags += [flag, *(str(item) for item in value)]
        else:
            flags += [flag, str(value)]
    return flags


def vllm_args(model: ModelConfig, model_path: str, device: str) -> argparse.Namespace:
    """Parse the model's settings with vLLM's `vllm serve` parser, as a kaon replica runs them:
    served under the model's name, publishing KV events when its router uses them.

    ``engine.extra_args`` go last, so they may override anything kaon sets.
    """
    parser = _vllm_parser()
    replica = {"served_model_name": [model.name]}
    if publishes_kv_events(model):
        replica["kv_events_config"] = KV_EVENTS_CONFIG
    return _parse(parser, model, _flags(parser, model, model_path, device, replica))


def bare_vllm_flags(model: ModelConfig, model_path: str, device: str) -> list[str]:
    """The `vllm serve` flags of the model's engine settings alone: the bare vLLM a user would
    run without kaon (no served name, no KV events), checked by vLLM's parser."""
    parser = _vllm_parser()
    flags = _flags(parser, model, model_path, device, {})
    _parse(parser, model, flags)
    return flags


def changed_vllm_args(flags: list[str]) -> dict[str, Any]:
    """The values vLLM's parser gives `vllm serve` ``flags`` that differ from its defaults
    (``model`` among them): the same engine for an API that takes keyword arguments."""
    parser = _vllm_parser()
    given, defaults = vars(parser.parse_args(flags)), vars(parser.parse_args([]))
    return {name: value for name, value in given.items() if value != defaults.get(name)}


def _flags(parser: argparse.ArgumentParser, model: ModelConfig, model_path: str, device: str, added: dict[str, Any]) -> list[str]:
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(model.engine.extra_args) - known)
    if unknown:
        raise ConfigError(f"models[{model.name}].engine.extra_args: not vLLM arguments: {unknown}")
    settings = {**engine_settings(model.engine, device), **added}
    options = set(parser._option_string_actions)
    return ["--model", model_path, *to_flags(settings, options), *to_flags(model.engine.extra_args, options)]


def _parse(parser: argparse.ArgumentParser, model: ModelConfig, flags: list[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(flags)
    except ConfigError as error:
        raise ConfigError(f"models[{model.name}].engine: {error}") from None


def cpu_environment(model: ModelConfig) -> dict[str, str]:
    """Environment vLLM's CPU backend reads at engine start (a thread binding set by the user wins)."""
    environment = {"VLLM_CPU_KVCACHE_SPACE": str(model.engine.kv_cache_space_gib)}
    if model.engine.world_size > 1 and CPU_THREADS_BIND not in os.environ:
        environment[CPU_THREADS_BIND] = cpu_threads_bind(model, sorted(os.sched_getaffinity(0)))
    return environment
