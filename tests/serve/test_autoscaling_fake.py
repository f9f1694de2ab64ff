"""Autoscaling on a real Ray Serve with the real router and replica deployments and the fake
engine: a burst sent with kaon bench's client scales 1 → N and drains; replicas removed while
long streams run finish them; idle goes to zero; a request at zero replicas is held and
served. No accepted request is lost. The tests run in order on one deployment."""

import asyncio
import glob
import time

import openai
import pytest
import ray
from ray import serve

from kaon.bench import arrivals
from kaon.bench.client import ClientConfig, run_requests
from kaon.bench.timeline import ReplicaSampler, read_replica_counts
from kaon.bench.workloads import BenchRequest
from kaon.config import deployment_name, parse_config
from kaon.deployments.app import build_app

pytestmark = pytest.mark.serve

TOKEN_S = 0.05  # the fake engine's time per token: a 40-token answer takes 2 s
CONFIG = {
    "models": [{
        "name": "auto", "source": "kaon-tiny:tiny", "replicas": 1, "engine": {"max_num_seqs": 4},
        "routing": {"policy": "round_robin"}, "graceful_shutdown_timeout_s": 60,
        "autoscaling": {"min_replicas": 0, "max_replicas": 3, "target_queue_depth_per_replica": 1,
                        "upscale_stabilization_s": 0, "downscale_stabilization_s": 4, "scale_to_zero_after_s": 10,
                        "replica_start_s": 2, "metrics_window_s": 2, "metrics_interval_s": 0.5},
    }],
}
APP = "kaon-autoscaling"
DEPLOYMENT = deployment_name("auto")


@pytest.fixture(scope="module")
def base_url(ray_cluster, http_port, fake_engine):
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    serve.run(build_app(parse_config(CONFIG), "cpu", fake_engine(TOKEN_S)), name=APP, route_prefix="/")
    yield f"http://127.0.0.1:{http_port}"
    serve.delete(APP)


def counts():
    return read_replica_counts(DEPLOYMENT)


def wait_for(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition(counts()):
            return True
        time.sleep(0.25)
    return False


def requests(prefix, count, output_tokens):
    return [BenchRequest(f"{prefix}{i}", output_tokens, 3, prompt="tell me more") for i in range(count)]


def test_burst_scales_out_drains_and_scale_down_finishes_streams(base_url):
    """60 short requests at 10 req/s (five times what one replica serves) take the count to
    the maximum; then six long streams, dealt round-robin two to each replica, are all the
    load left: the count falls while they run, so a replica being removed holds two of them.
    Every request completes in full."""
    config = ClientConfig(base_url=base_url, model="auto", show_progress=False, request_timeout_s=120)

    async def streams_once_scaled_out(sampler):
        while not sampler.samples or sampler.samples[-1].running < 3:
            await asyncio.sleep(0.25)
        return await run_requests(requests("s", 6, 600), arrivals.constant(100.0, 6, 30.0), config)  # 30 s each

    async def run(sampler):
        burst = run_requests(requests("b", 60, 40), arrivals.constant(10.0, 60, 30.0), config)
        return await asyncio.gather(burst, asyncio.wait_for(streams_once_scaled_out(sampler), timeout=90))

    with ReplicaSampler(counts, interval_s=0.25) as sampler:
        burst, streams = asyncio.run(run(sampler))
    for result, tokens in ((burst, 40), (streams, 600)):
        assert [r.error for r in result.records if not r.ok] == []
        assert {r.output_tokens for r in result.records} == {tokens}
    streams_start = min(r.start_s for r in streams.records) + streams.started_unix_s
    streams_end = max(r.start_s + r.e2e_s for r in streams.records) + streams.started_unix_s
    shrinking = [s for s in sampler.samples if streams_start < s.unix_s < streams_end and s.desired < 3]
    assert shrinking, "no replica was removed while the long streams ran"


def test_idle_scales_to_zero(base_url):
    assert wait_for(lambda c: c.desired == 0 and c.running == 0, timeout_s=60)


def test_a_request_at_zero_replicas_is_held_and_served(base_url):
    assert counts().running == 0
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    started = time.monotonic()
    reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert reply.choices[0].message.content.split() == [f"w{i}" for i in range(5)]
    assert reply.usage.completion_tokens == 5
    assert counts().running == 1
    print(f"\nserved from zero replicas in {time.monotonic() - started:.1f} s")


def test_decisions_are_logged_with_their_reason(base_url):
    logs = ray._private.worker._global_node.get_logs_dir_path()
    text = "".join(open(path).read() for path in glob.glob(f"{logs}/serve/controller_*.log"))
    assert f"kaon autoscaling {DEPLOYMENT}: panic, 1 → " in text
    assert f"kaon autoscaling {DEPLOYMENT}: to_zero, 1 → 0 replicas: no request for" in text
