"""kaon.bench.ray_serve_llm without Ray: the subprocess's command line, the engine_kwargs it
derives from the bare vLLM baseline's flags (the same engine, by vLLM's own parser), and the
LLMConfig it deploys, as Ray Serve LLM validates it."""

from __future__ import annotations

import sys

import pytest

from kaon.bench import ray_serve_llm
from kaon.bench.baseline import spec_from_config
from kaon.config import parse_config
from kaon.engine.args import _vllm_parser

ENGINE = {"dtype": "float32", "max_model_len": 512, "max_num_seqs": 8, "kv_cache_space_gib": 2,
          "extra_args": {"num_gpu_blocks_override": 80}}
CONFIG = parse_config({"models": [{"name": "tiny", "source": "/models/tiny", "engine": ENGINE}], "cluster": {"device": "cpu"}})


def _spec(**options):
    return spec_from_config(CONFIG, "tiny", 8123, "ray-serve-llm", metrics_port=8124, **options)


def test_command_runs_this_module_with_the_bare_vllm_flags_after_the_separator() -> None:
    spec = _spec(replicas=2, router="prefix")
    args = ray_serve_llm.command(spec)
    assert args[:3] == [sys.executable, "-m", "kaon.bench.ray_serve_llm"]
    split = args.index("--")
    assert tuple(args[split + 1:]) == spec.engine_flags == spec_from_config(CONFIG, "tiny", 8123).engine_flags
    head = " ".join(args[:split])
    for option in ("--host 127.0.0.1", "--port 8123", "--served-model-name tiny", "--replicas 2", "--router prefix",
                   "--device cpu", "--metrics-port 8124", "--env=VLLM_CPU_KVCACHE_SPACE=2"):
        assert option in head
    options = ray_serve_llm.parse_args(args[3:])
    assert (options.port, options.replicas, options.router, options.metrics_port, options.env) == (
        8123, 2, "prefix", 8124, [("VLLM_CPU_KVCACHE_SPACE", "2")])
    assert spec.metrics_url == "http://127.0.0.1:8124/metrics"  # Ray's metrics agent, not Serve's port
    assert tuple(options.engine_flags) == spec.engine_flags


def test_engine_kwargs_are_the_bare_vllm_engine() -> None:
    flags = list(_spec().engine_flags)
    kwargs = ray_serve_llm.engine_kwargs(flags)
    assert kwargs == {"model": "/models/tiny", "dtype": "float32", "max_model_len": 512, "max_num_seqs": 8,
                      "enforce_eager": True, "enable_prefix_caching": True, "num_gpu_blocks_override": 80,
                      "enable_prompt_tokens_details": True}
    parser = _vllm_parser()  # vLLM's defaults plus these kwargs are exactly what `vllm serve FLAGS` runs
    assert vars(parser.parse_args(flags)) == {**vars(parser.parse_args([])), **kwargs}


def test_a_setting_ray_serve_llm_does_not_take_is_refused() -> None:
    with pytest.raises(ValueError, match="takes no \\['headless'\\]"):  # vLLM's CLI only, not an engine setting
        ray_serve_llm.engine_kwargs(["--model", "/m", "--headless"])


def test_llm_config_is_valid_for_ray_serve_llm_and_splits_engine_and_frontend_settings() -> None:
    from ray.serve.llm import LLMConfig

    options = ray_serve_llm.parse_args(ray_serve_llm.command(_spec(replicas=2, router="prefix"))[3:])
    config = ray_serve_llm.llm_config(options)
    assert config["deployment_config"] == {"num_replicas": 2, "request_router_config": {
        "request_router_class": "ray.serve.llm.request_router.PrefixCacheAffinityRouter"}}
    assert config["runtime_env"] == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}}
    engine = LLMConfig.model_validate(config).get_engine_config()
    assert engine.actual_hf_model_id == "/models/tiny" and engine.model_id == "tiny"
    assert engine.frontend_kwargs == {"enable_prompt_tokens_details": True}
    assert engine.engine_kwargs["num_gpu_blocks_override"] == 80 and "model" not in engine.engine_kwargs
    assert engine.placement_bundles == [{"CPU": 1}]  # the CPU accelerator: no GPU asked
    assert ray_serve_llm.ray_cpus(config) == 8
    default = ray_serve_llm.llm_config(ray_serve_llm.parse_args(ray_serve_llm.command(_spec())[3:]))
    assert default["deployment_config"] == {"num_replicas": 1}  # Ray Serve LLM's own request router


def test_ray_gets_a_cpu_for_the_ingress_and_each_replica_and_rank() -> None:
    config = {"engine_kwargs": {"tensor_parallel_size": 2}, "deployment_config": {"num_replicas": 4}}
    assert ray_serve_llm.ray_cpus(config) == 1 + 4 * (1 + 2)
