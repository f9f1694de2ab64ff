"""`kaon sim run` and `kaon sim calibrate` through their argparse front end."""

import argparse
import json

from kaon.sim import cli, scenarios
from kaon.sim.cost_model import CostModel

from tests.unit.test_sim_calibrate import synthetic_records


def parse(argv):
    parser = argparse.ArgumentParser(prog="kaon")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(commands)
    return parser.parse_args(argv)


SMALL = ["--replicas", "2", "--groups", "4", "--system-prompt-tokens", "256", "--output-tokens", "16",
         "--calibration", "cpu-tiny", "--duration-s", "10"]


def test_run_writes_summaries_and_pictures(tmp_path, capsys):
    args = parse(["sim", "run", *SMALL, "--rate", "20", "--policy", "round_robin", "--policy", "oracle",
                  "--records", "--out", str(tmp_path)])
    assert args.command == "sim"
    assert cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "round_robin" in printed and "oracle" in printed and "TTFT p50 ms" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["policy"] for s in summary["summaries"]] == ["round_robin", "oracle"]
    for s in summary["summaries"]:
        assert s["completed"] > 100 and s["unfinished"] == 0
        assert s["ttft"]["p50_ms"] > 0 and 0 <= s["prefix_cache_hit_rate"] <= 1
    detail = json.loads((tmp_path / "sim-oracle.json").read_text())
    assert detail["records"][0]["ttft_s"] > 0 and detail["timeline"][0]["running_replicas"] == 2
    assert (tmp_path / "ttft_cdf.png").stat().st_size > 0 and (tmp_path / "timeline.png").stat().st_size > 0


def test_load_fraction_finds_round_robin_saturation_first(capsys):
    args = parse(["sim", "run", *SMALL, "--load-fraction", "0.5", "--probe-duration-s", "20",
                  "--policy", "power_of_two"])
    assert cli.run(args) == 0
    assert "round-robin saturation" in capsys.readouterr().out


def test_every_known_policy_is_offered():
    names = scenarios.policy_names()
    for name in ("prefix_load", "round_robin", "power_of_two", "oracle", "sglang_threshold", "ray_prefix_affinity"):
        assert name in names


def test_bad_arguments_exit_2(capsys):
    assert cli.run(parse(["sim", "run", "--replicas", "1", "--rate", "1"])) == 2
    assert cli.run(parse(["sim", "run", *SMALL, "--rate", "1", "--policy", "nope"])) == 2
    assert "unknown policy nope" in capsys.readouterr().err


def test_calibrate_writes_a_cost_model(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(synthetic_records(noise=0.0)))
    out = tmp_path / "mine.json"
    assert cli.run(parse(["sim", "calibrate", str(bench), "--out", str(out), "--base", "cpu-tiny"])) == 0
    model = CostModel.load(out)
    assert model.name == "mine" and model.block_size_tokens == 128 and model.max_batch == 64
    assert abs(model.decode_per_seq_s - 0.0003) < 1e-6
