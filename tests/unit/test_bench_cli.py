"""kaon.bench.cli: load points from flags, and a whole `bench` run against the fake server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from kaon.bench.cli import UsageError, add_parser, baseline_specs, load_points, main
from kaon.tiny_model import ensure_tiny_model
from tests.unit.test_bench_client import fake  # noqa: F401 - the fake OpenAI server fixture


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_load_points_from_flags() -> None:
    assert [p.tag for p in load_points(_args())] == ["c1"]
    closed = load_points(_args("--concurrency", "1", "--concurrency", "4", "--num-requests", "30", "--seed", "5"))
    assert [(p.tag, p.seed, p.schedule.max_concurrency, p.schedule.num_requests) for p in closed] == [
        ("c1", 5, 1, 30), ("c4", 6, 4, 30)
    ]
    sweep = load_points(_args("--rate", "1", "--rate", "inf", "--concurrency", "8", "--max-duration-s", "1000"))
    assert [(p.tag, p.schedule.kind, p.schedule.max_concurrency) for p in sweep] == [("r1", "poisson", 8), ("rinf", "poisson", 8)]
    (step,) = load_points(_args("--arrival", "step", "--steps", "10:0.5,30:4"))
    assert step.schedule.kind == "step-poisson" and step.schedule.max_duration_s == 40
    for bad in (["--arrival", "step"], ["--steps", "1:1"], ["--rate", "1", "--concurrency", "1", "--concurrency", "2"]):
        with pytest.raises(UsageError):
            load_points(_args(*bad))


def test_bench_run_writes_results_and_plots(fake, tmp_path: Path, capsys) -> None:  # noqa: F811
    _, url = fake
    model_dir = ensure_tiny_model(tmp_path / "m")
    out = tmp_path / "out"
    code = main(["bench", "--url", url, "--model", "slow", "--tokenizer", str(model_dir), "--workload", "random",
                 "--input-tokens-min", "20", "--input-tokens-max", "40", "--output-tokens", "3",
                 "--concurrency", "1", "--concurrency", "2", "--num-requests", "6", "--out", str(out), "--no-progress"])
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["latency_throughput.png", "target-random-c1.json", "target-random-c2.json", "ttft_cdf.png"]
    result = json.loads((out / "target-random-c2.json").read_text())
    assert result["summary"]["completed"] == 6 and result["config"]["max_concurrency"] == 2
    assert result["config"]["workload_params"]["output_tokens_max"] == 3 and len(result["records"]) == 6
    assert "TTFT" in capsys.readouterr().out
    assert main(["bench", "--compare", str(out / "target-random-c1.json"), str(out / "target-random-c2.json")]) == 0
    assert "x)" in capsys.readouterr().out and (out / "compare.png").exists()


def test_unreachable_server_without_model_is_a_usage_error(capsys) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:9", "--no-progress"]) == 2
    assert "pass --model" in capsys.readouterr().err


def test_several_models_get_the_same_workload_and_a_ratio_table(fake, tmp_path: Path, capsys) -> None:  # noqa: F811
    _, url = fake
    model_dir = ensure_tiny_model(tmp_path / "m")
    out = tmp_path / "out"
    code = main(["bench", "--url", url, "--model", "slow", "--model", "fast", "--tokenizer", str(model_dir),
                 "--workload", "random", "--input-tokens-min", "20", "--input-tokens-max", "40", "--output-tokens", "3",
                 "--concurrency", "2", "--num-requests", "4", "--out", str(out), "--no-progress"])
    assert code == 0
    slow, fast = (json.loads((out / f"{m}-random-c2.json").read_text()) for m in ("slow", "fast"))
    assert [r["prompt_tokens"] for r in slow["records"]] == [r["prompt_tokens"] for r in fast["records"]]
    table = capsys.readouterr().out.split("TTFT p50 ms")[-1]
    assert "slow concurrency 2" in table and "fast concurrency 2" in table and "x)" in table
    assert (out / "compare.png").exists()


def test_baselines_default_to_bare_vllm_and_repeat(tmp_path: Path) -> None:
    assert _args().baseline is None and baseline_specs(_args(), "tiny") == []
    assert _args("--baseline", "--concurrency", "2").baseline == ["vllm"]
    assert _args("--baseline", "vllm", "--baseline", "ray-serve-llm").baseline == ["vllm", "ray-serve-llm"]
    with pytest.raises(SystemExit):
        _args("--baseline", "sglang")
    config = tmp_path / "kaon.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "tiny", "source": "/models/tiny"}], "cluster": {"device": "cpu"}}))
    args = _args("--baseline", "--baseline", "ray-serve-llm", "--baseline", "--baseline-replicas", "2",
                 "--baseline-router", "prefix", "--baseline-config", str(config))
    vllm, ray = baseline_specs(args, "tiny")  # each kind once, in the order given
    assert [(s.kind, s.replicas, s.router) for s in (vllm, ray)] == [("vllm", 1, "default"), ("ray-serve-llm", 2, "prefix")]
    assert vllm.engine_flags == ray.engine_flags and vllm.env == ray.env and vllm.port != ray.port
    for bad in (["--baseline", "--baseline-router", "prefix"], ["--baseline-replicas", "2"],
                ["--baseline", "ray-serve-llm", "--baseline-replicas", "0"]):
        with pytest.raises(UsageError, match="apply to --baseline ray-serve-llm"):
            baseline_specs(_args(*bad, "--baseline-config", str(config)), "tiny")
