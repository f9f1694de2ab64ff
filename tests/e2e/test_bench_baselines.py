"""`kaon bench --baseline ray-serve-llm`'s server for real, without a kaon cluster: Ray Serve
LLM on a Ray instance of its own serving the generated tiny model with real vLLM on CPU:
ready, it streams a completion, its Ray's metrics agent exports the engine's metrics, and
nothing of it is left running once stopped.

Its Ray is started by ``ray.init(address="local")`` in the server's subprocess, under a temp
dir of its own: it never attaches to another cluster (the modules around this one start
theirs with `ray start`; files run in name order, and none is running at this point) and does
not move ``/tmp/ray/session_latest``.
"""

import socket
import time

import httpx
import openai
import pytest

from kaon.bench.baseline import BaselineServer, _session_alive, free_port, spec_from_config
from kaon.bench.server_metrics import prometheus_source
from kaon.config import parse_config

pytestmark = pytest.mark.e2e

CONFIG = {
    "models": [{"name": "tiny", "source": "kaon-tiny:tiny",
                "engine": {"dtype": "float32", "max_model_len": 512, "kv_cache_space_gib": 1}}],
    "cluster": {"device": "cpu"},
}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _engine_stats(metrics_url: str, timeout_s: float = 60.0) -> dict[str, float]:
    """The engine's stats from Ray's metrics agent, once it has exported the request's."""
    deadline, stats = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline and not stats.get("prefix_cache_queries_tokens"):
        time.sleep(2)
        try:
            stats = dict(prometheus_source(metrics_url)())
        except httpx.HTTPError:
            pass
    return stats


def test_ray_serve_llm_streams_a_completion_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("KAON_CACHE_DIR", str(tmp_path / "cache"))
    spec = spec_from_config(parse_config(CONFIG), "tiny", free_port(), "ray-serve-llm")
    server = BaselineServer(spec, tmp_path / "ray-serve-llm.log", ready_timeout_s=300)
    started = time.monotonic()
    with server as url:
        print(f"\nRay Serve LLM ready in {time.monotonic() - started:.1f} s")
        session = server._process.pid
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        stream = client.completions.create(model="tiny", prompt="The city", max_tokens=8, stream=True,
                                           stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        chunks = list(stream)
        assert "".join(c.choices[0].text for c in chunks if c.choices)
        assert chunks[-1].usage.completion_tokens == 8
        assert _engine_stats(spec.metrics_url)["prefix_cache_queries_tokens"] > 0
        stopping = time.monotonic()
    print(f"stopped in {time.monotonic() - stopping:.1f} s")
    assert not _session_alive(session), "a process of the Ray Serve LLM session outlived stop()"
    assert not _listening(spec.port)
