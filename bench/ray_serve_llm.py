"""Ray Serve LLM (``ray.serve.llm``, shipped in the ray package) running a kaon model's engine:
the second baseline of ``kaon bench --baseline ray-serve-llm``.

``python -m kaon.bench.ray_serve_llm --port P --served-model-name NAME [--replicas N]
[--router default|prefix] [--device cpu|gpu] [--metrics-port M] [--env NAME=VALUE ...] --
VLLM_SERVE_FLAGS``
starts a Ray instance of its own (``ray.init(address="local")`` under a temp dir of its own,
so it never attaches to a running cluster such as kaon's, nor moves that cluster's
``/tmp/ray/session_latest``; no dashboard), deploys ``build_openai_app`` with the engine the
`vllm serve` flags describe, serves it on HOST:PORT and blocks. SIGTERM or SIGINT runs
``serve.shutdown()`` then ``ray.shutdown()``, which stop every process it started.

Nothing heavy is imported at module level: ``kaon.bench.baseline`` imports ``command``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaon.bench.baseline import BaselineSpec

ROUTERS = {"default": None, "prefix": "ray.serve.llm.request_router.PrefixCacheAffinityRouter"}
"""``--baseline-router`` → the LLM deployment's ``request_router_config.request_router_class``
(none: Ray Serve LLM's default)."""
APP_NAME = "ray-serve-llm"
READY_LINE = "kaon: Ray Serve LLM is serving at"
"""Printed once ``serve.run`` has returned: every replica is up (``/v1/models`` answers earlier)."""
OBJECT_STORE_BYTES = 512 * 1024**2
"""Ray's default reserves 30 % of RAM, beside kaon's own cluster; requests never use it."""


def command(spec: BaselineSpec) -> list[str]:
    """This module's command line for ``spec`` (its engine flags go after ``--``)."""
    env = [f"--env={name}={value}" for name, value in sorted(spec.env.items())]
    metrics = ["--metrics-port", str(spec.metrics_port)] if spec.metrics_port else []
    return [
        sys.executable, "-m", "kaon.bench.ray_serve_llm", "--host", spec.host, "--port", str(spec.port),
        "--served-model-name", spec.served_model_name, "--replicas", str(spec.replicas), "--router", spec.router,
        "--device", spec.device, *metrics, *env, "--", *spec.engine_flags,
    ]


def engine_kwargs(flags: Sequence[str]) -> dict[str, Any]:
    """``LLMConfig.engine_kwargs`` for the engine `vllm serve` ``flags`` describe: the values
    vLLM's own parser gives them that differ from its defaults, ``model`` included (the caller
    moves it to ``model_loading_config``). ValueError for a changed value Ray Serve LLM does
    not take (neither an AsyncEngineArgs nor a FrontendArgs field): it would not run the
    same engine."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import FrontendArgs

    from kaon.engine.args import changed_vllm_args

    changed = changed_vllm_args(list(flags))
    taken = {field.name for cls in (AsyncEngineArgs, FrontendArgs) for field in dataclasses.fields(cls)}
    refused = sorted(set(changed) - taken)
    if refused:
        raise ValueError(f"Ray Serve LLM takes no {refused} in engine_kwargs")
    return changed


def llm_config(options: argparse.Namespace) -> dict[str, Any]:
    """The ``LLMConfig`` (as a dict) of ``options``: one model, ``replicas`` fixed replicas,
    the chosen request router, the engine's environment in the replicas' runtime env."""
    kwargs = engine_kwargs(options.engine_flags)
    deployment: dict[str, Any] = {"num_replicas": options.replicas}
    if ROUTERS[options.router]:
        deployment["request_router_config"] = {"request_router_class": ROUTERS[options.router]}
    config = {
        "model_loading_config": {"model_id": options.served_model_name, "model_source": kwargs.pop("model")},
        "engine_kwargs": kwargs,
        "deployment_config": deployment,
        "runtime_env": {"env_vars": dict(options.env)},
    }
    if options.device == "cpu":
        config["accelerator_config"] = {"kind": "cpu"}
    return config


def ray_cpus(config: dict[str, Any]) -> int:
    """Logical CPUs the app asks of Ray: 1 for the ingress replica, and per LLM replica 1 for
    its actor plus 1 per engine rank (tp × pp) in its placement group; at least 8, as kaon's
    local Ray."""
    kwargs = config["engine_kwargs"]
    ranks = kwargs.get("tensor_parallel_size", 1) * kwargs.get("pipeline_parallel_size", 1)
    return max(8, 1 + config["deployment_config"]["num_replicas"] * (1 + ranks))


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kaon.bench.ray_serve_llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--router", choices=sorted(ROUTERS), default="default")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--metrics-port", type=int, help="of Ray's metrics agent (default: any free port)")
    parser.add_argument("--env", type=_env_pair, action="append", default=[], help="for the engine, NAME=VALUE")
    parser.add_argument("engine_flags", nargs=argparse.REMAINDER, help="after --: `vllm serve` flags, --model first")
    options = parser.parse_args(argv)
    options.engine_flags = options.engine_flags[1:] if options.engine_flags[:1] == ["--"] else options.engine_flags
    if not options.engine_flags:
        parser.error("no engine flags after --")
    return options


def serve_until_stopped(options: argparse.Namespace) -> None:
    """Deploy on a Ray of our own and block; whatever ends the wait (SIGTERM, SIGINT) shuts
    Serve down, then that Ray."""
    import ray
    from ray import serve
    from ray.serve.llm import build_openai_app

    config = llm_config(options)
    temp_dir = tempfile.mkdtemp(prefix="ray-rsl-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    try:
        ray.init(address="local", num_cpus=ray_cpus(config), include_dashboard=False, _temp_dir=temp_dir,
                 object_store_memory=OBJECT_STORE_BYTES, _metrics_export_port=options.metrics_port)
        _exit_on_sigterm()
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(build_openai_app({"llm_configs": [config]}), name=APP_NAME, route_prefix="/")
        print(f"{READY_LINE} http://{options.host}:{options.port}", flush=True)
        while True:
            time.sleep(3600)
    finally:
        if ray.is_initialized():  # else serve.shutdown() would connect to the Ray running here, kaon's, to stop it
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so the caller's cleanup runs. Installed after ``ray.init``,
    whose C++ failure-signal handler would answer SIGTERM by arming a 3-second alarm that
    aborts the process mid-shutdown, leaving Ray's agents running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Sequence[str] | None = None) -> int:
    serve_until_stopped(parse_args(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
