"""kaon.bench.baseline without a vLLM server: the command line it would run (a kaon model's
engine flags, checked by vLLM's own parser), and the session lifecycle (ready on /health, or
for Ray Serve LLM on its ready line; every process stopped, also those in process groups of
their own; early exit reported) with stand-in servers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from kaon.bench import baseline
from kaon.bench.ray_serve_llm import READY_LINE
from kaon.bench.baseline import BaselineError, BaselineServer, BaselineSpec, _session_alive, command, free_port, spec_from_config
from kaon.config import ConfigError, parse_config

SERVER = """
import http.server, os, signal, subprocess, sys, threading, time
worker = subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgid(0, 0); time.sleep(120)"])  # as Ray's workers
class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == sys.argv[2] else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready)
"""
"""A stand-in server: ``PORT READY_PATH`` in argv, a child in a process group of its own."""

STAND_IN = SERVER + """
time.sleep(0.3)
print("stand-in up", flush=True)
server.serve_forever()
"""

RAY_LIKE = SERVER + """
def stop(*_):
    worker.terminate()
    worker.wait()
    print("stopped what it started", flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
threading.Thread(target=server.serve_forever, daemon=True).start()
time.sleep(2)
print(sys.argv[3], flush=True)
while True:
    time.sleep(1)
"""
"""Answers its ready path at once, prints its ready line (argv[3]) 2 s later; SIGTERM stops its child."""


def test_command_is_the_bare_openai_server() -> None:
    spec = BaselineSpec(engine_flags=("--model", "/m", "--max-model-len", "512"), served_model_name="tiny", port=8123)
    args = command(spec)
    assert args[:5] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
    joined = " ".join(args)
    for flag in ("--served-model-name tiny", "--port 8123", "--host 127.0.0.1", "--max-model-len 512"):
        assert flag in joined


def test_the_baseline_runs_the_replicas_engine_settings_without_kaons_additions() -> None:
    config = parse_config({"models": [{
        "name": "tiny", "source": "/models/tiny", "engine": {"dtype": "float32", "max_model_len": 512, "max_num_seqs": 8,
                                                            "kv_cache_space_gib": 2, "extra_args": {"max_logprobs": 5}},
    }], "cluster": {"device": "cpu"}})
    spec = spec_from_config(config, "tiny", 8123)
    flags = " ".join(spec.engine_flags)
    for flag in ("--model /models/tiny", "--dtype float32", "--max-model-len 512", "--max-num-seqs 8", "--enforce-eager", "--max-logprobs 5"):
        assert flag in flags
    assert "--kv-events-config" not in flags and "--served-model-name" not in flags
    assert spec.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    assert spec_from_config(config, "other-name", 8123).served_model_name == "other-name"  # a config's only model


def test_a_config_with_several_models_must_name_the_benched_one() -> None:
    config = parse_config({"models": [{"name": "a", "source": "/a"}, {"name": "b", "source": "/b"}], "cluster": {"device": "cpu"}})
    assert "--model /b" in " ".join(spec_from_config(config, "b", 1).engine_flags)
    with pytest.raises(ConfigError, match="no model 'c'"):
        spec_from_config(config, "c", 1)


def test_ready_then_whole_group_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseline, "command", lambda spec: [sys.executable, "-c", STAND_IN, str(spec.port), "/health"])
    spec = BaselineSpec(engine_flags=("--model", "/m"), served_model_name="tiny", port=free_port())
    server = BaselineServer(spec, tmp_path / "log.txt", ready_timeout_s=30)
    with server as url:
        pgid = server._process.pid
        assert httpx.get(f"{url}/health").status_code == 200
        assert _session_alive(pgid)
    started = time.monotonic()
    while _session_alive(pgid) and time.monotonic() - started < 5:
        time.sleep(0.1)
    assert not _session_alive(pgid)
    assert "stand-in up" in (tmp_path / "log.txt").read_text()


def test_early_exit_raises_with_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash = "import sys; print('no such model'); sys.exit(3)"
    monkeypatch.setattr(baseline, "command", lambda spec: [sys.executable, "-c", crash])
    server = BaselineServer(BaselineSpec(("--model", "/m"), "tiny", free_port()), tmp_path / "log.txt", ready_timeout_s=30)
    with pytest.raises(BaselineError, match="code 3(.|\n)*no such model"):
        with server:
            pass


def test_ray_serve_llm_is_ready_on_its_line_and_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseline, "command", lambda spec: [sys.executable, "-c", RAY_LIKE, str(spec.port), "/v1/models", READY_LINE])
    server = BaselineServer(BaselineSpec(("--model", "/m"), "tiny", free_port(), kind="ray-serve-llm"), tmp_path / "log.txt",
                            ready_timeout_s=30)
    started = time.monotonic()
    with server as url:
        assert time.monotonic() - started >= 2  # /v1/models answered from the start, the line came 2 s later
        sid = server._process.pid
        assert httpx.get(f"{url}/v1/models").status_code == 200
    assert not _session_alive(sid)
    assert "stopped what it started" in (tmp_path / "log.txt").read_text()  # its own SIGTERM handler did it
