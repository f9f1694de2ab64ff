"""kaon.bench.baseline without vLLM: the command line it would run, and the process-group
lifecycle (ready on /health, whole group stopped, early exit reported) with a stand-in server."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from kaon.bench import baseline
from kaon.bench.baseline import BareVLLMServer, BaselineError, BaselineSpec, _group_alive, command, free_port

STAND_IN = """
import http.server, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # like vLLM's engine core
time.sleep(0.3)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
print("stand-in up", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_command_is_the_bare_openai_server() -> None:
    spec = BaselineSpec(model_path="/m", served_model_name="tiny", port=8123, max_model_len=512)
    args = command(spec)
    assert args[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(args)
    for flag in ("--model /m", "--served-model-name tiny", "--port 8123", "--host 127.0.0.1",
                 "--dtype float32", "--max-model-len 512", "--enforce-eager"):
        assert flag in joined


def test_ready_then_whole_group_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseline, "command", lambda spec: [sys.executable, "-c", STAND_IN, str(spec.port)])
    spec = BaselineSpec(model_path="/m", served_model_name="tiny", port=free_port())
    server = BareVLLMServer(spec, tmp_path / "log.txt", ready_timeout_s=30)
    with server as url:
        pgid = server._process.pid
        assert httpx.get(f"{url}/health").status_code == 200
        assert _group_alive(pgid)
    started = time.monotonic()
    while _group_alive(pgid) and time.monotonic() - started < 5:
        time.sleep(0.1)
    assert not _group_alive(pgid)
    assert "stand-in up" in (tmp_path / "log.txt").read_text()


def test_early_exit_raises_with_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash = "import sys; print('no such model'); sys.exit(3)"
    monkeypatch.setattr(baseline, "command", lambda spec: [sys.executable, "-c", crash])
    server = BareVLLMServer(BaselineSpec("/m", "tiny", free_port()), tmp_path / "log.txt", ready_timeout_s=30)
    with pytest.raises(BaselineError, match="code 3(.|\n)*no such model"):
        with server:
            pass
