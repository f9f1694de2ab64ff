"""Autoscaling with real vLLM on CPU: `kaon serve --detach` with an autoscaled model (min 0,
max 2). In order: idle takes it to zero; a request at zero is held and served; a burst
from `kaon bench` (12 in flight against one replica's batch of 4) scales it 1 → 2 and the
backlog drains; idle takes it back to zero;
Prometheus has scraped the kaon_autoscaling_* gauges. Nothing accepted is lost.

The module starts its own kaon (and local Ray) and shuts it down at its end; it runs before
the modules that share the session's kaon (files run in name order), so the two never
overlap. Windows are short to keep the tier's time down; the burst lasts long enough for a
second vLLM replica to start on a busy 2-core machine (over a minute). It is a closed loop,
not a rate: a rate one machine's replica cannot keep up with, a faster machine's can (then
kaon rightly stays at one replica).
"""

import json
import time

import openai
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import start_kaon
from tests.prometheus import PrometheusServer

pytestmark = pytest.mark.e2e

MODEL = "tiny-auto"
CONFIG = {
    "models": [{
        "name": MODEL, "source": "kaon-tiny:tiny", "replicas": 1, "graceful_shutdown_timeout_s": 120,
        "engine": {"dtype": "float32", "max_model_len": 512, "kv_cache_space_gib": 1, "max_num_seqs": 4},
        "autoscaling": {"min_replicas": 0, "max_replicas": 2, "target_queue_depth_per_replica": 1,
                        "upscale_stabilization_s": 0, "downscale_stabilization_s": 10, "scale_to_zero_after_s": 45,
                        "replica_start_s": 60, "metrics_window_s": 4, "metrics_interval_s": 0.5},
    }],
    "cluster": {"device": "cpu"},
}
RAY_DISCOVERY_FILE = "/tmp/ray/session_latest/prom_metrics_service_discovery.json"


@pytest.fixture(scope="module")
def autoscaled(tmp_path_factory):
    server = start_kaon(tmp_path_factory.mktemp("kaon-autoscaling"), CONFIG)
    yield server
    assert server.cli("shutdown").returncode == 0


@pytest.fixture(scope="module")
def counts(autoscaled):
    """This process as a driver of kaon's Ray cluster: the model's replica counts as Serve's
    controller has them (what `kaon bench --kaon-address` samples)."""
    from kaon.bench.timeline import read_replica_counts
    from kaon.cluster import local
    from kaon.config import deployment_name

    local.connect("auto")
    yield lambda: read_replica_counts(deployment_name(MODEL))
    local.disconnect()


def wait_for(counts, condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition(counts()):
            return True
        time.sleep(1)
    return False


def test_idle_scales_to_zero(counts):
    assert wait_for(counts, lambda c: c.desired == 0 and c.running == 0, timeout_s=180)


def test_a_request_at_zero_is_held_then_served(autoscaled, counts):
    assert counts().running == 0
    client = openai.OpenAI(base_url=autoscaled.url + "/v1", api_key="unused", max_retries=0, timeout=600)
    started = time.monotonic()
    reply = client.completions.create(model=MODEL, prompt="The city", max_tokens=8, extra_body={"ignore_eos": True})
    print(f"\nserved from zero replicas in {time.monotonic() - started:.1f} s")
    assert reply.usage.completion_tokens == 8
    assert reply.choices[0].finish_reason == "length"
    assert counts().running == 1


def test_burst_from_kaon_bench_scales_out_and_drains(autoscaled, tmp_path):
    out = tmp_path / "bench"
    bench = autoscaled.cli(
        "bench", "--url", autoscaled.url, "--model", MODEL, "--workload", "random", "--api", "completions",
        "--input-tokens-min", "40", "--input-tokens-max", "60", "--output-tokens", "128",
        "--concurrency", "12", "--num-requests", "5000", "--max-duration-s", "150", "--warmup-requests", "0",
        "--kaon-address", "auto", "--no-progress", "--out", str(out), timeout_s=900,
    )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    print("\n" + bench.stdout[-1500:])
    result_path = next(out.glob("*.json"))
    result = json.loads(result_path.read_text())
    assert result["summary"]["failed"] == 0  # those not sent were due after the 150 s bound
    assert result["autoscaling"]["lost_requests"] == 0
    timeline = result["timeline"]
    assert max(p["running_replicas"] for p in timeline) == 2
    assert timeline[-1]["queue_depth_requests"] == 0
    assert result_path.with_name(result_path.stem + "-timeline.png").exists()


def test_idle_after_the_burst_returns_to_zero(counts):
    assert wait_for(counts, lambda c: c.desired == 0 and c.running == 0, timeout_s=240)


def test_prometheus_scrapes_the_autoscaling_gauges(autoscaled, tmp_path):
    prometheus = PrometheusServer(tmp_path, free_port(), RAY_DISCOVERY_FILE)
    try:
        selector = '{deployment="model-tiny-auto"}'
        desired = prometheus.wait_for(f"ray_kaon_autoscaling_desired_replicas{selector}")
        queue = prometheus.wait_for(f"ray_kaon_autoscaling_queue_depth_requests{selector}")
        decisions = prometheus.wait_for(f"sum(ray_kaon_autoscaling_decisions_total{selector}) >= 2")
    finally:
        prometheus.stop()
    assert desired and queue and decisions
