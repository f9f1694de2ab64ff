"""EngineConfig → vLLM's own `vllm serve` arguments (vLLM's parser; no engine, no Ray)."""

import pytest

from kaon.config import ConfigError, parse_config
from kaon.engine.args import vllm_args


def _model(**engine):
    return parse_config({"models": [{"name": "tiny", "source": "kaon-tiny:tiny", "engine": engine}]}).models[0]


def test_defaults_match_kaon_choices():
    args = vllm_args(_model(), "/models/tiny", "cpu")
    assert args.model == "/models/tiny"
    assert args.served_model_name == ["tiny"]
    assert args.enable_prefix_caching is True
    assert args.enforce_eager is True
    assert args.disable_log_stats is False
    assert args.tensor_parallel_size == 1


def test_settings_reach_vllm():
    args = vllm_args(_model(max_model_len=1024, dtype="bfloat16", enable_prefix_caching=False, max_num_seqs=8, block_size=32), "/m", "cpu")
    assert (args.max_model_len, args.dtype, args.enable_prefix_caching, args.max_num_seqs, args.block_size) == (1024, "bfloat16", False, 8, 32)


def test_parallelism_picks_the_executor_per_device():
    assert vllm_args(_model(tensor_parallel_size=2), "/m", "cpu").distributed_executor_backend == "mp"
    gpu = vllm_args(_model(tensor_parallel_size=2, pipeline_parallel_size=2), "/m", "gpu")
    assert (gpu.distributed_executor_backend, gpu.pipeline_parallel_size) == ("ray", 2)


def test_extra_args_pass_through_and_override():
    args = vllm_args(_model(extra_args={"max_logprobs": 5, "enforce_eager": False}), "/m", "cpu")
    assert args.max_logprobs == 5
    assert args.enforce_eager is False


def test_unknown_extra_arg_names_the_field():
    with pytest.raises(ConfigError, match=r"models\[tiny\].engine.extra_args.*max_lgprobs"):
        vllm_args(_model(extra_args={"max_lgprobs": 5}), "/m", "cpu")


def test_bad_extra_value_fails_with_vllms_message():
    with pytest.raises(ConfigError, match=r"models\[tiny\].engine:.*max-logprobs"):
        vllm_args(_model(extra_args={"max_logprobs": "lots"}), "/m", "cpu")
