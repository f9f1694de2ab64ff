"""`kaon sim`: run simulated scenarios and fit calibrations.

    kaon sim run --replicas 16 --policy round_robin --policy oracle --load-fraction 0.8 --out results/sim
    kaon sim calibrate bench-result.json [more.json …] --out my-gpu.json --base gpu-llama3-8b-a100

``add_parser(subparsers)`` registers the command on kaon's parser; ``run(args)`` executes it.
``run`` writes, per policy, ``sim-<policy>.json`` (config, calibration, summary, per-second
timeline; ``--records`` adds every request), plus ``summary.json``, ``ttft_cdf.png`` and
``timeline.png``, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kaon.sim import scenarios
from kaon.sim.cost_model import CostModel, shipped_calibrations

DEFAULT_CALIBRATION = "gpu-llama3-8b-a100"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    sim = subparsers.add_parser("sim", help="discrete-event simulator of a kaon cluster")
    commands = sim.add_subparsers(dest="sim_command", required=True)

    r = commands.add_parser("run", help="simulate a scenario under one or more routing policies")
    r.add_argument("--replicas", type=int, default=16, help="replicas (2..128)")
    r.add_argument("--policy", action="append", dest="policies",
                   help=f"repeatable; known: {', '.join(scenarios.policy_names())} (default: all)")
    r.add_argument("--workload", choices=scenarios.WORKLOADS, default="shared-prefix")
    r.add_argument("--groups", type=int, default=64, help="shared-prefix: prefix groups")
    r.add_argument("--prompts-per-group", type=int, default=16)
    r.add_argument("--group-skew", type=float, default=0.0,
                   help="shared-prefix: Zipf exponent of group popularity, 0 = uniform (default)")
    r.add_argument("--system-prompt-tokens", type=int, help="default 2048 (shared-prefix), 1024 (multi-turn)")
    r.add_argument("--question-tokens", type=int, default=128)
    r.add_argument("--output-tokens", type=int, default=256)
    r.add_argument("--users", type=int, default=32, help="multi-turn: users per cohort")
    r.add_argument("--rounds", type=int, default=8, help="multi-turn: rounds per user")
    r.add_argument("--input-range", default="128:2048", help="random: MIN:MAX prompt tokens")
    r.add_argument("--output-range", default="32:512", help="random: MIN:MAX output tokens")
    r.add_argument("--arrivals", choices=("poisson", "constant", "step"), default="poisson")
    r.add_argument("--steps", help="step arrivals: DURATION_S:RATE_MULTIPLE,… (e.g. 120:0.5,240:1,120:0.25)")
    rate = r.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="mean arrival rate, req/s")
    rate.add_argument("--load-fraction", type=float, default=0.8,
                      help="rate as a fraction of round robin's saturation rate (found by bisection; default 0.8)")
    r.add_argument("--duration-s", type=float, default=600.0, help="arrivals for this long (simulated)")
    r.add_argument("--probe-duration-s", type=float, default=120.0, help="length of each saturation probe")
    r.add_argument("--calibration", default=DEFAULT_CALIBRATION,
                   help=f"cost-model JSON file or shipped name ({', '.join(shipped_calibrations())})")
    r.add_argument("--max-ongoing-requests", type=int, default=256, help="per replica, at the router")
    r.add_argument("--stats-interval-s", type=float, default=1.0, help="how often replicas push stats")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--records", action="store_true", help="keep every request in the JSON files")
    a = r.add_argument_group("autoscaling (with --autoscaler, --replicas is the most replicas)")
    a.add_argument("--autoscaler", action="append", dest="autoscalers", choices=("queue_depth", "ray_default"),
                   help="repeatable: kaon's policy, Ray Serve's default (reference); each runs the same workload")
    a.add_argument("--min-replicas", type=int, default=1)
    a.add_argument("--initial-replicas", type=int, help="default: --min-replicas (at least 1)")
    a.add_argument("--autoscaling", action="append", default=[], metavar="FIELD=VALUE",
                   help="queue_depth: a models[].autoscaling field (e.g. downscale_stabilization_s=120)")
    a.add_argument("--ray-target-ongoing-requests", type=float, help="ray_default: default a replica's batch")
    r.add_argument("--out", type=Path, default=None, help="directory for JSON and PNG (default: print only)")

    c = commands.add_parser("calibrate", help="fit a cost model from bench results")
    c.add_argument("results", nargs="+", type=Path, help="kaon bench result JSON files (median of per-file fits)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--name", default=None, help="default: the output file's stem")
    c.add_argument("--base", default=None, help="take the fields a fit cannot see from this calibration")
    c.add_argument("--max-batch", type=int)
    c.add_argument("--kv-blocks", type=int)
    c.add_argument("--block-size", type=int)
    c.add_argument("--max-num-batched-tokens", type=int)
    c.add_argument("--cold-start-s", type=float)
    return sim


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


def workload_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.workload == "shared-prefix":
        return {"num_groups": args.groups, "prompts_per_group": args.prompts_per_group,
                "system_prompt_tokens": args.system_prompt_tokens or 2048,
                "question_tokens": args.question_tokens, "output_tokens": args.output_tokens,
                "group_skew": args.group_skew}
    if args.workload == "multi-turn":
        return {"num_users": args.users, "num_rounds": args.rounds,
                "system_prompt_tokens": args.system_prompt_tokens or 1024,
                "question_tokens": args.question_tokens, "output_tokens": args.output_tokens}
    return {"input_tokens": _range(args.input_range), "output_tokens": _range(args.output_range)}


def scenario_from_args(args: argparse.Namespace) -> scenarios.Scenario:
    if not 2 <= args.replicas <= 128:
        raise ValueError(f"--replicas must be within 2..128, got {args.replicas}")
    steps: tuple[tuple[float, float], ...] = ()
    duration = args.duration_s
    if args.arrivals == "step":
        if not args.steps:
            raise ValueError("--arrivals step needs --steps")
        steps = tuple((float(d), float(m)) for d, m in (part.split(":") for part in args.steps.split(",")))
        duration = sum(d for d, _ in steps)
    return scenarios.Scenario(
        cost=CostModel.load(args.calibration), replicas=args.replicas, workload=args.workload,
        workload_args=workload_args(args), arrivals=args.arrivals, rate_per_s=args.rate or 1.0,
        duration_s=duration, steps=steps, seed=args.seed, max_ongoing_requests=args.max_ongoing_requests,
        stats_interval_s=args.stats_interval_s,
    )


def cmd_run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    names = args.policies or scenarios.policy_names()
    unknown = [n for n in names if n not in scenarios.policy_names()]
    if unknown:
        print(f"kaon sim: unknown policy {', '.join(unknown)}; known: {', '.join(scenarios.policy_names())}",
              file=sys.stderr)
        return 2
    saturation = None
    if args.rate is None or args.autoscalers:  # autoscaling figures need a replica's throughput
        started = time.perf_counter()
        steady = replace(scenario, arrivals="poisson", steps=()) if scenario.steps else scenario  # a step's shape is no load
        saturation = scenarios.find_saturation(steady, probe_duration_s=args.probe_duration_s)
        if args.rate is None:
            scenario.rate_per_s = args.load_fraction * saturation
        print(f"round-robin saturation ≈ {saturation:.2f} req/s (bisection, {time.perf_counter() - started:.1f} s); "
              f"running at {scenario.rate_per_s:.2f} req/s", flush=True)
    if args.autoscalers:
        results = _autoscaled_runs(args, scenario, names, saturation / scenario.replicas)
    else:
        results = []
        for name in names:
            result = scenarios.simulate(scenario, name)
            results.append(scenarios.result_dict(scenario, result, include_records=args.records))
            summary = results[-1]["summary"]
            print(f"  {name}: {summary['completed']} requests, {result.end_s:.0f} s simulated in "
                  f"{result.wall_clock_s:.1f} s", flush=True)
    print(scenarios.table([r["summary"] for r in results]))
    if args.out is not None:
        from kaon.bench.report import plot_timeline

        args.out.mkdir(parents=True, exist_ok=True)
        for result in results:
            (args.out / f"sim-{result['label']}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        combined = {"format": 1, "kind": "kaon-sim-summary", "config": scenario.describe(),
                    "calibration": scenario.cost.to_dict(), "saturation_rate_per_s": saturation,
                    "summaries": [r["summary"] for r in results]}
        (args.out / "summary.json").write_text(json.dumps(combined, indent=1) + "\n", encoding="utf-8")
        plot_ttft_cdf(results, args.out / "ttft_cdf.png")
        plot_timeline(results, args.out / "timeline.png", "simulated time (s)")
        print(f"wrote {args.out}/summary.json, sim-*.json, ttft_cdf.png, timeline.png")
    return 0


def _autoscaled_runs(args: argparse.Namespace, scenario: scenarios.Scenario, names: list[str],
                     replica_rate_per_s: float) -> list[dict[str, Any]]:
    """Every routing policy under every autoscaler, on the same workload; prints the
    step-response table."""
    import yaml

    from kaon.sim import autoscaling

    overrides = {}
    for item in args.autoscaling:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--autoscaling takes FIELD=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    spec = autoscaling.AutoscalingSpec(args.min_replicas, args.initial_replicas, overrides, args.ray_target_ongoing_requests)
    results = []
    for name in names:
        for autoscaler in args.autoscalers:
            label = autoscaler if len(names) == 1 else f"{name}+{autoscaler}"
            results.append(autoscaling.simulate_autoscaled(scenario, name, autoscaler, spec, replica_rate_per_s, label))
            print(f"  {label}: {results[-1]['summary']['completed']} requests, "
                  f"{results[-1]['summary']['wall_clock_s']:.1f} s to simulate", flush=True)
    print(autoscaling.table(results))
    return results


def cmd_calibrate(args: argparse.Namespace) -> int:
    from kaon.sim.calibrate import calibrate

    base = CostModel.load(args.base) if args.base else None

    def pick(value: Any, field: str, default: Any) -> Any:
        return value if value is not None else getattr(base, field) if base is not None else default

    model = calibrate(
        *args.results, name=args.name or args.out.stem,
        max_batch=pick(args.max_batch, "max_batch", 256),
        kv_capacity_blocks=pick(args.kv_blocks, "kv_capacity_blocks", 8192),
        block_size_tokens=pick(args.block_size, "block_size_tokens", 16),
        max_num_batched_tokens=pick(args.max_num_batched_tokens, "max_num_batched_tokens", 8192),
        cold_start_s=pick(args.cold_start_s, "cold_start_s", 60.0),
    )
    model.save(args.out)
    print(json.dumps(model.to_dict(), indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return {"run": cmd_run, "calibrate": cmd_calibrate}[args.sim_command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"kaon sim: {error}", file=sys.stderr)
        return 2


# --- pictures (matplotlib Agg, as the bench's) -----------------------------------------


def plot_ttft_cdf(results: list[dict[str, Any]], path: Path) -> Path:
    """TTFT CDF per policy (from ``ttft_cdf_ms``: 202 quantiles of every request's TTFT)."""
    from kaon.bench.report import plot_cdf_lines

    lines = {r["label"]: ([v for _, v in r["ttft_cdf_ms"]], [f for f, _ in r["ttft_cdf_ms"]]) for r in results if r.get("ttft_cdf_ms")}
    return plot_cdf_lines(lines, path, "Time to first token (simulated)", log_x=True)
