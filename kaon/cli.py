"""The `kaon` command: serve, serve-config, status, shutdown, api-key, tiny-model, bench, sim."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kaon.bench.cli import add_parser as add_bench_parser
from kaon.bench.cli import run as run_bench
from kaon.config import ConfigError, KaonConfig, ModelConfig, apply_overrides, default_config_path, load_config, resolve_device
from kaon.sim import cli as sim_cli

APP_BUILDER = "kaon.deployments.app:app_builder"
"""Serve's import path of kaon's application builder (a string: importing it loads vLLM)."""
READY_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaon", description="LLM serving on Ray Serve and vLLM.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="deploy the models and the OpenAI API")
    _add_config_arguments(serve)
    serve.add_argument("--model", help="serve this model (hub id or path) instead of the config's models")
    serve.add_argument("--replicas", type=int, help="replicas of every model (with autoscaling: the initial count)")
    serve.add_argument("--min-replicas", type=int, help="autoscale every model on queue depth, down to this (0: to zero when idle)")
    serve.add_argument("--max-replicas", type=int, help="autoscale every model on queue depth, up to this")
    serve.add_argument("--tp", type=int, help="tensor-parallel size of every model (GPUs, or CPU ranks, per pipeline stage)")
    serve.add_argument("--pp", type=int, help="pipeline-parallel size of every model (stages per replica)")
    serve.add_argument("--router-policy", choices=["prefix_load", "round_robin", "power_of_two"], help="routing policy of every model")
    serve.add_argument("--port", type=int, help="HTTP port of the OpenAI API")
    serve.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    serve.add_argument("--detach", action="store_true", help="return once ready, leave it serving")

    serve_config = commands.add_parser("serve-config", help="print a Ray Serve config file of kaon (for `serve deploy`)")
    _add_config_arguments(serve_config)

    status = commands.add_parser("status", help="deployments, replicas, their state and load")
    status.add_argument("--address", default="auto")

    shutdown = commands.add_parser("shutdown", help="remove kaon's application (and the local Ray kaon started)")
    shutdown.add_argument("--address", default="auto")

    add_bench_parser(commands)
    sim_cli.add_parser(commands)

    key = commands.add_parser("api-key", help="make an API key for a tenant and print its config entry")
    key.add_argument("tenant")

    tiny = commands.add_parser("tiny-model", help="write kaon's generated test model")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--size", choices=["tiny", "bench"], default="tiny")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: configs/tiny-cpu.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="settings",
                        help="set any config field by its dotted path, value in YAML (e.g. models.0.routing.kv_events=false, "
                        "router.replicas=2); applied last, repeatable")


def _configured(args: argparse.Namespace, overrides: Callable[[KaonConfig, argparse.Namespace], dict[str, Any]]) -> KaonConfig:
    """``--config`` (default: configs/tiny-cpu.yaml) with the overrides of the command's flags, validated."""
    config = load_config(args.config or default_config_path())
    return apply_overrides(config, overrides(config, args))


def serve_overrides(config: KaonConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config paths the `serve` flags set."""
    overrides: dict[str, Any] = {}
    if args.model:
        first = config.models[0].model_dump()
        overrides["models"] = [first | {"name": args.model, "source": args.model}]
    for index in range(1 if args.model else len(config.models)):
        if args.replicas is not None:
            overrides[f"models.{index}.replicas"] = args.replicas
        if args.router_policy is not None:
            overrides[f"models.{index}.routing.policy"] = args.router_policy
        if args.tp is not None:
            overrides[f"models.{index}.engine.tensor_parallel_size"] = args.tp
        if args.pp is not None:
            overrides[f"models.{index}.engine.pipeline_parallel_size"] = args.pp
        overrides |= _autoscaling_overrides(config.models[0 if args.model else index], index, args)
    if args.port is not None:
        overrides["http.port"] = args.port
    if args.address is not None:
        overrides["cluster.address"] = args.address
    return overrides | set_overrides(args)


def set_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config paths the ``--set`` flags set."""
    return dict(_setting(text) for text in args.settings)


def _setting(text: str) -> tuple[str, Any]:
    """``a.b=VALUE`` → ("a.b", VALUE parsed as YAML)."""
    import yaml

    path, sep, value = text.partition("=")
    if not sep or not path:
        raise ConfigError(f"--set {text!r}: expected PATH=VALUE, e.g. router.replicas=2")
    try:
        return path.strip(), yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: the value is not YAML ({error})") from None


def _autoscaling_overrides(model: ModelConfig, index: int, args: argparse.Namespace) -> dict[str, Any]:
    """``--min/--max-replicas``: set on the model's autoscaling section, or start one (min 1, max
    at least the model's replicas)."""
    given = {k: v for k, v in (("min_replicas", args.min_replicas), ("max_replicas", args.max_replicas)) if v is not None}
    if not given:
        return {}
    if model.autoscaling is not None:
        return {f"models.{index}.autoscaling.{k}": v for k, v in given.items()}
    low = given.get("min_replicas", 1)
    return {f"models.{index}.autoscaling": {"min_replicas": low, "max_replicas": given.get("max_replicas", max(low, model.replicas, 1))}}


def _local_num_cpus(config: KaonConfig) -> int:
    """Logical CPUs for a local Ray: every replica's share (at most) plus the router and headroom."""
    needed = sum((m.autoscaling.max_replicas if m.autoscaling else m.replicas) * m.engine.world_size for m in config.models) + 2
    return config.cluster.num_cpus or max(8, needed)


def cmd_serve(args: argparse.Namespace) -> int:
    from kaon.cluster import local

    config = _configured(args, serve_overrides)
    address = config.cluster.address
    started_here = False
    if address is None:
        if not local.local_ray_running():
            print(f"starting a local Ray cluster ({_local_num_cpus(config)} logical CPUs)…", flush=True)
            local.start_local_ray(_local_num_cpus(config))
            started_here = True
        address = "auto"
    local.connect(address)
    deploy(config)
    if not wait_until_ready(config.cluster.app_name):
        return 1
    print(f"kaon is serving at http://{config.http.host}:{config.http.port}/v1 — models: "
          + ", ".join(m.name for m in config.models), flush=True)
    if args.detach:
        return 0
    _wait_for_signal()
    print("shutting down…", flush=True)
    _teardown(config.cluster.app_name, stop_ray=started_here)
    return 0


def deploy(config: KaonConfig) -> None:
    from ray import serve
    from ray.serve.api import RunTarget

    from kaon.deployments.app import build_app

    serve.start(http_options={"host": config.http.host, "port": config.http.port})
    _refuse_other_http_options(config)
    target = RunTarget(target=build_app(config, resolve_device(config.cluster.device)), name=config.cluster.app_name, route_prefix="/")
    serve.run_many([target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)


def _refuse_other_http_options(config: KaonConfig) -> None:
    """Serve keeps the HTTP options it was first started with; say so instead of serving elsewhere."""
    from ray.serve.context import _get_global_client

    running = _get_global_client().http_config
    if (running.host, running.port) != (config.http.host, config.http.port):
        raise ConfigError(
            f"http: Serve on this cluster already listens on {running.host}:{running.port}; "
            f"run `kaon shutdown` first or serve on that address (asked for {config.http.host}:{config.http.port})"
        )


def wait_until_ready(app_name: str, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Print each change of replica states until the app runs; False if it failed or timed out."""
    from kaon.cluster.status import read_apps

    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        apps = {a.name: a for a in read_apps(with_load=False)}
        app = apps.get(app_name)
        if app is not None:
            line = f"{app.status}: " + "; ".join(
                f"{d.name} " + ", ".join(f"{n} {s}" for s, n in sorted(d.replica_states.items()))
                for d in app.deployments
            )
            if line != last:
                print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
                last = line
            if app.status == "RUNNING":
                return True
            if app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                print(f"deployment failed: {app.message}", file=sys.stderr)
                for d in app.deployments:
                    if d.message:
                        print(f"  {d.name}: {d.message}", file=sys.stderr)
                return False
        time.sleep(POLL_INTERVAL_S)
    print(f"not ready after {timeout_s:.0f} s", file=sys.stderr)
    return False


def _wait_for_signal() -> None:
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: received.append(number))
    while not received:
        time.sleep(0.2)


def _teardown(app_name: str, stop_ray: bool) -> None:
    import ray
    from ray import serve

    from kaon.cluster import local

    serve.delete(app_name)
    if stop_ray:
        serve.shutdown()
        ray.shutdown()
        local.stop_local_ray()


def cmd_serve_config(args: argparse.Namespace) -> int:
    import yaml

    config = _configured(args, lambda _config, flags: set_overrides(flags))
    print(yaml.safe_dump(serve_config_file(config), sort_keys=False), end="")
    return 0


def serve_config_file(config: KaonConfig) -> dict[str, Any]:
    """A Ray Serve config file (``serve deploy``, KubeRay's ``serveConfigV2``) that deploys ``config``
    as ``kaon serve`` does: Serve's HTTP address from ``http``, the app at route ``/`` built by
    ``APP_BUILDER`` from the config (only the fields that differ from kaon's defaults)."""
    application = {
        "name": config.cluster.app_name,
        "route_prefix": "/",
        "import_path": APP_BUILDER,
        "args": {"config": config.model_dump(mode="json", exclude_defaults=True)},
    }
    return {"http_options": {"host": config.http.host, "port": config.http.port}, "applications": [application]}


def cmd_status(args: argparse.Namespace) -> int:
    from kaon.cluster import local
    from kaon.cluster.status import format_apps, read_apps

    try:
        local.connect(args.address)
    except ConnectionError:
        print("no Ray cluster is running (start one with `kaon serve`)", file=sys.stderr)
        return 1
    print(format_apps(read_apps()))
    return 0


def cmd_shutdown(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from kaon.cluster import local

    try:
        local.connect(args.address)
    except ConnectionError:
        print("no Ray cluster is running")
        return 0
    serve.shutdown()
    if local.started_by_kaon():
        ray.shutdown()
        local.stop_local_ray()
        print("stopped kaon and the local Ray cluster it started")
    else:
        print("removed kaon's applications; the Ray cluster keeps running")
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    from kaon.config import ApiKeyConfig
    from kaon.deployments.auth import key_digest, new_api_key

    from pydantic import ValidationError

    key = new_api_key()
    try:
        entry = ApiKeyConfig(tenant=args.tenant, key_sha256=key_digest(key))
    except ValidationError as error:
        raise ConfigError(f"tenant {args.tenant!r}: {error.errors()[0]['msg']}") from None
    print(f"API key for tenant {entry.tenant} (shown once; kaon keeps only its digest):\n  {key}\n"
          f"add to your config:\nauth:\n  api_keys:\n    - tenant: {entry.tenant}\n      key_sha256: {entry.key_sha256}")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from kaon.tiny_model import ensure_tiny_model

    print(ensure_tiny_model(args.dir, size=args.size, seed=args.seed))
    return 0


COMMANDS = {"serve": cmd_serve, "serve-config": cmd_serve_config, "status": cmd_status, "shutdown": cmd_shutdown, "tiny-model": cmd_tiny_model, "api-key": cmd_api_key, "bench": run_bench, "sim": sim_cli.run}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        print(f"kaon: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
