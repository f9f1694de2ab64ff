"""`kaon bench`: the command that ties workloads, arrivals, the runner and reports together.

``add_parser(subparsers)`` registers the subcommand (imports nothing heavy, so ``kaon
--help`` stays fast); ``run(args)`` executes it and returns the exit code: 0 when every run
completed at least one request, 1 when one completed none or the baseline failed to start,
2 for unusable arguments (bad flags, unknown model, tokenizer that cannot load).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaon.bench.baseline import BaselineSpec

WORKLOADS = ("shared-prefix", "multi-turn", "random")
WARMUP_SEED = 2**31 - 1


class UsageError(ValueError):
    """Arguments that cannot make a run; the message says which and why."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from kaon.bench.baseline import KINDS
    from kaon.bench.ray_serve_llm import ROUTERS

    p = subparsers.add_parser(
        "bench", help="load-test an OpenAI-compatible endpoint (kaon or any other)",
        description="Send a seeded workload on an arrival schedule, stream every response, and "
        "write per-request records, a summary and plots. Example: kaon bench --workload random "
        "--input-tokens-min 100 --input-tokens-max 200 --output-tokens 16 --concurrency 1 --concurrency 4",
    )
    target = p.add_argument_group("target")
    target.add_argument("--url", default="http://127.0.0.1:8000", help="server root (default %(default)s)")
    target.add_argument("--model", action="append", dest="models",
                        help="model name in requests (default: the first of GET /v1/models); repeat to run the same "
                        "workload against several models of one server, one after another, and compare them")
    target.add_argument("--tokenizer", help="tokenizer path or hub id, or kaon-tiny:tiny|bench "
                        "(default: the model card's root, else the model name)")
    target.add_argument("--api-key", help="sent as a Bearer token")
    target.add_argument("--label", default="target", help="name of this server in results (default %(default)s; "
                        "the model's name when several --model are given)")
    target.add_argument("--metrics-url", help="Prometheus text endpoint of the target, e.g. http://127.0.0.1:8000/metrics")
    target.add_argument("--kaon-address", help="read kaon's per-replica engine stats from this Ray cluster (e.g. auto); "
                        "also samples the model's replica counts for a timeline plot and autoscaling figures")
    target.add_argument("--replica-capacity-rps", type=float,
                        help="requests/s one replica sustains: the autoscaling figures' replicas needed per load step")

    work = p.add_argument_group("workload (token counts measured with the tokenizer)")
    work.add_argument("--workload", choices=WORKLOADS, default="random")
    work.add_argument("--num-groups", type=int, default=64, help="shared-prefix: groups (default %(default)s)")
    work.add_argument("--prompts-per-group", type=int, default=16, help="shared-prefix (default %(default)s)")
    work.add_argument("--system-prompt-tokens", type=int, help="shared-prefix: 2048, multi-turn: 1000 by default")
    work.add_argument("--question-tokens", type=int, default=128, help="shared-prefix (default %(default)s)")
    work.add_argument("--group-skew", type=float, default=0.0,
                      help="shared-prefix: Zipf exponent of group popularity, 0 = uniform (default %(default)s)")
    work.add_argument("--num-users", type=int, default=16, help="multi-turn (default %(default)s)")
    work.add_argument("--rounds", type=int, default=8, help="multi-turn (default %(default)s)")
    work.add_argument("--user-turn-tokens", type=int, default=100, help="multi-turn (default %(default)s)")
    work.add_argument("--output-tokens", type=int, help="shared-prefix: 256, multi-turn: 100; random: sets min and max")
    work.add_argument("--input-tokens-min", type=int, default=256, help="random (default %(default)s)")
    work.add_argument("--input-tokens-max", type=int, default=1024, help="random (default %(default)s)")
    work.add_argument("--output-tokens-min", type=int, default=64, help="random (default %(default)s)")
    work.add_argument("--output-tokens-max", type=int, default=256, help="random (default %(default)s)")
    work.add_argument("--api", choices=("chat", "completions"), default="chat", help="random: endpoint to use")
    work.add_argument("--seed", type=int, default=0, help="load point k uses seed + k (default %(default)s)")

    load = p.add_argument_group("load (one run per --rate or per --concurrency)")
    load.add_argument("--rate", type=float, action="append", help="open loop, req/s (repeat for a sweep; inf = all at once)")
    load.add_argument("--concurrency", type=int, action="append",
                      help="closed loop with N in flight (repeat for a sweep); with one --rate: a cap")
    load.add_argument("--arrival", choices=("poisson", "constant", "step"), default="poisson")
    load.add_argument("--steps", help='step schedule "DURATION_S:RATE,...", e.g. "10:0.5,30:4"')
    load.add_argument("--num-requests", type=int, default=200, help="per run (default %(default)s)")
    load.add_argument("--max-duration-s", type=float, default=300.0, help="no request starts later (default %(default)s)")
    load.add_argument("--request-timeout-s", type=float, default=300.0)
    load.add_argument("--warmup-requests", type=int, default=1, help="short unrecorded requests before the runs")
    load.add_argument("--no-ignore-eos", action="store_true", help="for servers that reject ignore_eos")
    load.add_argument("--no-progress", action="store_true")

    out = p.add_argument_group("results")
    out.add_argument("--out", type=Path, help="result directory (default bench-results/<timestamp>)")
    out.add_argument("--compare", nargs="+", type=Path, metavar="RESULT.json",
                     help="only compare earlier result files (ratios vs the first) and exit")
    out.add_argument("--baseline", action="append", nargs="?", const="vllm", choices=sorted(KINDS), metavar="KIND",
                     help="also run the workloads against a baseline of the same model started here: vllm (default) a "
                          "bare vLLM server, ray-serve-llm Ray Serve LLM on a Ray of its own; repeat for several")
    out.add_argument("--baseline-config", type=Path,
                     help="kaon config whose model's engine settings the baselines run with "
                          "(default: kaon serve's default, configs/tiny-cpu.yaml)")
    out.add_argument("--baseline-replicas", type=int, default=1,
                     help="Ray Serve LLM's replicas (default %(default)s; bare vLLM is one server)")
    out.add_argument("--baseline-router", choices=sorted(ROUTERS), default="default",
                     help="Ray Serve LLM's request router: default, or prefix (its PrefixCacheAffinityRouter)")
    return p


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One run's schedule; ``tag`` names its files, ``seed`` its workload."""

    tag: str
    seed: int
    schedule: Any


def load_points(args: argparse.Namespace) -> list[LoadPoint]:
    """The runs the load flags ask for; UsageError for a contradiction or a bad value."""
    try:
        return _load_points(args)
    except UsageError:
        raise
    except ValueError as error:
        raise UsageError(str(error)) from None


def _load_points(args: argparse.Namespace) -> list[LoadPoint]:
    from kaon.bench import arrivals

    rates, concurrencies = args.rate or [], args.concurrency or []
    bounds = {"max_requests": args.num_requests, "max_duration_s": args.max_duration_s}
    if args.arrival == "step":
        if not args.steps or rates:
            raise UsageError("--arrival step needs --steps and takes no --rate")
        if len(concurrencies) > 1:
            raise UsageError("a step schedule takes at most one --concurrency (a cap)")
        cap = concurrencies[0] if concurrencies else None
        schedule = arrivals.steps(arrivals.parse_steps(args.steps), args.num_requests, args.max_duration_s,
                                  seed=args.seed, max_concurrency=cap)
        return [LoadPoint("steps", args.seed, schedule)]
    if args.steps:
        raise UsageError("--steps needs --arrival step")
    if rates:
        if len(concurrencies) > 1:
            raise UsageError("with --rate, give at most one --concurrency (a cap for every rate)")
        cap = concurrencies[0] if concurrencies else None
        points = []
        for k, rate in enumerate(rates):
            if args.arrival == "poisson":
                schedule = arrivals.poisson(rate, seed=args.seed + k, max_concurrency=cap, **bounds)
            else:
                schedule = arrivals.constant(rate, max_concurrency=cap, **bounds)
            points.append(LoadPoint(f"r{rate:g}", args.seed + k, schedule))
        return points
    return [
        LoadPoint(f"c{n}", args.seed + k, arrivals.closed_loop(n, **bounds))
        for k, n in enumerate(concurrencies or [1])
    ]


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def build_workload(args: argparse.Namespace, tokenizer: Any, seed: int, num_requests: int) -> tuple[list, dict[str, Any]]:
    """The workload's requests and the parameters that made them (for the result file)."""
    from kaon.bench import workloads

    if args.workload == "shared-prefix":
        params = {"num_groups": args.num_groups, "prompts_per_group": args.prompts_per_group,
                  "system_prompt_tokens": _given(args.system_prompt_tokens, 2048),
                  "question_tokens": args.question_tokens, "output_tokens": _given(args.output_tokens, 256),
                  "group_skew": args.group_skew}
        make = workloads.generated_shared_prefix
    elif args.workload == "multi-turn":
        params = {"num_users": args.num_users, "rounds": args.rounds,
                  "system_prompt_tokens": _given(args.system_prompt_tokens, 1000),
                  "user_turn_tokens": args.user_turn_tokens, "output_tokens": _given(args.output_tokens, 100)}
        make = workloads.multi_turn_chat
    else:
        low = _given(args.output_tokens, args.output_tokens_min)
        high = _given(args.output_tokens, args.output_tokens_max)
        params = {"num_requests": num_requests, "input_tokens_min": args.input_tokens_min,
                  "input_tokens_max": args.input_tokens_max, "output_tokens_min": low,
                  "output_tokens_max": high, "chat": args.api == "chat"}
        make = workloads.random_lengths
    try:
        return make(tokenizer, seed=seed, **params), params
    except ValueError as error:
        raise UsageError(f"{args.workload} workload: {error}") from None


def discover_model(url: str, model: str | None, api_key: str | None) -> tuple[str, str | None]:
    """(model name, its card's ``root``) from GET /v1/models; the name as given if that fails."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url.rstrip('/').removesuffix('/v1')}/v1/models", headers=headers, timeout=10.0)
        response.raise_for_status()
        cards = response.json().get("data") or []
    except (httpx.HTTPError, ValueError) as error:
        if model is None:
            raise UsageError(f"cannot list models at {url} ({error}); pass --model") from None
        return model, None
    if model is None:
        if not cards:
            raise UsageError(f"{url} serves no models")
        return cards[0]["id"], cards[0].get("root")
    return model, next((c.get("root") for c in cards if c.get("id") == model), None)


def load_tokenizer(source: str) -> tuple[Any, str]:
    """(tokenizer, local path or hub id it was loaded from); kaon-tiny: sources are generated."""
    from transformers import AutoTokenizer

    from kaon.engine.model_source import resolve_model_path

    path = resolve_model_path(source)
    try:
        return AutoTokenizer.from_pretrained(path), path
    except Exception as error:  # noqa: BLE001 - any loader failure is a usage problem here
        raise UsageError(f"cannot load a tokenizer from {path!r} ({type(error).__name__}: {error}); pass --tokenizer") from None


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as error:
        print(f"kaon bench: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from kaon.bench import report

    if args.compare:
        print(report.compare(args.compare, args.out or args.compare[0].parent))
        return 0
    points = load_points(args)
    models = args.models or [None]
    model, root = discover_model(args.url, models[0], args.api_key)
    tokenizer, model_path = load_tokenizer(args.tokenizer or root or model)
    out_dir = args.out or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")
    print(f"model {', '.join(args.models or [model])}, tokenizer {model_path}, results in {out_dir}", flush=True)
    jobs = []
    for point in points:
        requests, params = build_workload(args, tokenizer, point.seed, point.schedule.num_requests)
        if len(requests) < point.schedule.num_requests and point.schedule.kind != "closed":
            print(f"note: {point.tag}: the workload has {len(requests)} requests, the schedule "
                  f"{point.schedule.num_requests}; sending {len(requests)}", file=sys.stderr)
        jobs.append((point, requests, params))
    warmup = build_workload_warmup(tokenizer, args.warmup_requests)
    if len(models) > 1:
        return _run_models(args, models, jobs, warmup, out_dir)
    baselines = baseline_specs(args, model)  # a bad config fails before any run
    results = _run_all(args, args.label, args.url, model, _target_stats(args), jobs, warmup, out_dir)
    by_baseline = [_run_baseline(args, spec, jobs, warmup, out_dir, results) for spec in baselines]
    every = results + [result for baseline_results in by_baseline for result in baseline_results or []]
    if baselines:
        report.plot_comparison(every, out_dir / "compare.png")
    report.plot_ttft_cdf(every, out_dir / "ttft_cdf.png")
    if len(points) > 1:
        report.plot_latency_throughput(every, out_dir / "latency_throughput.png")
    print(f"plots in {out_dir}")
    return 0 if None not in by_baseline and all(r["summary"]["completed"] > 0 for r in every) else 1


def _run_models(args, models: list[str], jobs, warmup, out_dir: Path) -> int:
    """The same seeded jobs against each model in turn (e.g. one deployment per routing
    policy); each load point's runs are tabulated with ratios against the first model."""
    from kaon.bench import report

    by_model = [_run_all(args, model, args.url, model, _target_stats(args, model), jobs, warmup, out_dir) for model in models]
    every = [result for results in by_model for result in results]
    for point_results in zip(*by_model):
        print("\n" + report.comparison_table(point_results))
    report.plot_comparison(every, out_dir / "compare.png")
    report.plot_ttft_cdf(every, out_dir / "ttft_cdf.png")
    print(f"plots in {out_dir}")
    return 0 if all(r["summary"]["completed"] > 0 for r in every) else 1


def build_workload_warmup(tokenizer: Any, count: int) -> list:
    from kaon.bench.workloads import random_lengths

    return random_lengths(tokenizer, count, 16, 32, 4, 4, seed=WARMUP_SEED) if count > 0 else []


def _target_stats(args, model: str | None = None) -> tuple[Any, str] | None:
    """The target's stats source and its name: kaon's replicas through Ray (only ``model``'s
    deployment when given), or a /metrics URL."""
    from kaon.bench.server_metrics import engine_stats_source, prometheus_source

    if args.kaon_address:
        import ray

        from kaon.cluster import local
        from kaon.cluster.status import read_apps
        from kaon.config import deployment_name

        if not ray.is_initialized():
            local.connect(args.kaon_address)
        wanted = None if model is None else deployment_name(model)
        engines = lambda: [  # noqa: E731
            r.engine for a in read_apps() for d in a.deployments if wanted in (None, d.name) for r in d.replicas if r.engine
        ]
        return engine_stats_source(engines), f"kaon replicas on {args.kaon_address}" + (f" ({wanted})" if wanted else "")
    if args.metrics_url:
        return prometheus_source(args.metrics_url), args.metrics_url
    return None


def _steps(args) -> list[tuple[float, float]]:
    """A step schedule's (duration_s, rate) phases; none for other arrivals."""
    from kaon.bench import arrivals

    return [(s.duration_s, s.rate_per_s) for s in arrivals.parse_steps(args.steps)] if args.arrival == "step" else []


def _run_all(args, label, url, model, stats, jobs, warmup, out_dir) -> list[dict[str, Any]]:
    from kaon.bench import arrivals, report, timeline
    from kaon.bench.client import ClientConfig
    from kaon.bench.metrics import summarize
    from kaon.config import deployment_name

    config = ClientConfig(
        base_url=url, model=model, api_key=args.api_key, ignore_eos=not args.no_ignore_eos,
        request_timeout_s=args.request_timeout_s, show_progress=not args.no_progress,
    )
    if warmup:
        quiet = replace(config, show_progress=False)
        _execute(warmup, arrivals.closed_loop(1, len(warmup), args.max_duration_s), quiet, None)
    results = []
    for point, requests, params in jobs:
        with timeline.sampling(deployment_name(model) if args.kaon_address and url == args.url else None) as sampler:
            run_result, server = _execute(requests, point.schedule, config, stats)
        summary = summarize(run_result.records, run_result.wall_s, run_result.not_sent)
        run_config = {
            "url": url, "model": model, "workload": args.workload, "workload_params": params,
            "seed": point.seed, "schedule": point.schedule.description, "arrival": point.schedule.kind,
            "max_concurrency": point.schedule.max_concurrency, "num_requests": point.schedule.num_requests,
            "max_duration_s": point.schedule.max_duration_s, "ignore_eos": config.ignore_eos,
            "temperature": config.temperature, "started_unix_s": run_result.started_unix_s,
        }
        result = report.result_dict(label, run_config, summary, run_result.records, server)
        stem = f"{label}-{args.workload}-{point.tag}"
        figures = ""
        if sampler is not None:
            figures = "\n" + timeline.attach(result, run_result.records, run_result.started_unix_s, sampler.samples,
                                             _steps(args), args.replica_capacity_rps)
            report.plot_timeline([result], out_dir / f"{stem}-timeline.png", "time since the run started (s)")
        path = report.write_result(out_dir / f"{stem}.json", result)
        print(report.format_summary(result) + figures + f"\n  → {path}", flush=True)
        results.append(result)
    return results


def _execute(requests, schedule, config, stats):
    from kaon.bench.client import run_requests
    from kaon.bench.server_metrics import watch

    async def go():
        work = lambda: run_requests(requests, schedule, config)  # noqa: E731
        if stats is None:
            return await work(), None
        return await watch(work, *stats)

    return asyncio.run(go())


def baseline_specs(args: argparse.Namespace, model: str) -> list[BaselineSpec]:
    """One spec per distinct ``--baseline``, in the order given; UsageError for Ray Serve LLM
    options without Ray Serve LLM."""
    from kaon.bench.baseline import specs_from_config
    from kaon.config import ConfigError, default_config_path, load_config

    kinds = list(dict.fromkeys(args.baseline or []))
    options = {"replicas": args.baseline_replicas, "router": args.baseline_router}
    if args.baseline_replicas < 1 or ("ray-serve-llm" not in kinds and options != {"replicas": 1, "router": "default"}):
        raise UsageError("--baseline-replicas (at least 1) and --baseline-router apply to --baseline ray-serve-llm")
    if not kinds:
        return []
    try:
        return specs_from_config(load_config(args.baseline_config or default_config_path()), model, kinds, **options)
    except ConfigError as error:
        raise UsageError(f"--baseline-config: {error}") from None


def _run_baseline(args, spec: BaselineSpec, jobs, warmup, out_dir, target_results) -> list[dict[str, Any]] | None:
    """Run the same jobs against one baseline; print each point's ratios; None if it failed to start."""
    from kaon.bench import report
    from kaon.bench.baseline import BaselineError, BaselineServer
    from kaon.bench.server_metrics import prometheus_source

    log = out_dir / f"baseline-{spec.kind}.log"
    print(f"starting {spec.server.title} on port {spec.port} (log {log})…", flush=True)
    try:
        with BaselineServer(spec, log) as url:
            label = spec.kind if args.label != spec.kind else f"{spec.kind}-baseline"
            metrics = (prometheus_source(spec.metrics_url), spec.metrics_url)
            results = _run_all(args, label, url, spec.served_model_name, metrics, jobs, warmup, out_dir)
    except BaselineError as error:
        print(f"kaon bench: baseline {spec.kind} failed: {error}", file=sys.stderr)
        return None
    for base, target in zip(results, target_results):
        print("\n" + report.comparison_table([base, target]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kaon")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
