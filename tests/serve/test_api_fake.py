"""The real router and replica deployments on a real Ray Serve, with the fake engine:
routing by model, streaming, errors, back-pressure, cancellation and `kaon status`."""

import asyncio
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest
from ray import serve

from kaon.config import parse_config
from kaon.deployments.app import build_app

pytestmark = pytest.mark.serve

CONFIG = {
    "models": [
        {"name": "alpha", "source": "kaon-tiny:tiny", "replicas": 2},
        {"name": "beta", "source": "kaon-tiny:tiny", "replicas": 1, "routing": {"policy": "round_robin"}, "max_ongoing_requests": 1, "max_queued_requests": 1},
    ]
}


@pytest.fixture(scope="module")
def base_url(ray_cluster, http_port, fake_engine):
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    serve.run(build_app(parse_config(CONFIG), "cpu", fake_engine(0.01)), name="kaon", route_prefix="/")
    yield f"http://127.0.0.1:{http_port}"
    serve.delete("kaon")


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_every_configured_model(client):
    assert sorted(m.id for m in client.models.list()) == ["alpha", "beta"]


def test_model_field_picks_the_deployment(client):
    for model in ("alpha", "beta"):
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert reply.model == model
        assert reply.usage.completion_tokens == 4


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == [f"w{i}" for i in range(5)]
    assert chunks[-1].usage.completion_tokens == 5


def test_unknown_model_is_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="gamma", prompt="x")
    assert caught.value.body["param"] == "model"
    assert caught.value.body["code"] == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [({"model": "alpha"}, "body.messages"), ({"model": "alpha", "messages": [], "max_tokens": "many"}, "body.max_tokens")],
)
def test_schema_errors_are_400_with_param(base_url, body, param):
    response = httpx.post(base_url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_malformed_json_and_wrong_content_type_are_400(base_url):
    bad_json = httpx.post(base_url + "/v1/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    wrong_type = httpx.post(base_url + "/v1/completions", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 400
    assert "error" in wrong_type.json()


def test_saturated_model_answers_503_with_retry_after(base_url):
    body = {"model": "beta", "prompt": "x", "max_tokens": 100}

    async def burst():
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(*(http.post(base_url + "/v1/completions", json=body) for _ in range(6)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1"
    assert rejected.json()["error"]["type"] == "ServiceUnavailableError"
    assert all(r.json()["usage"]["completion_tokens"] == 100 for r in responses if r.status_code == 200)


def _running(gcs_address: str, model: str) -> int:
    from kaon.cluster.status import read_apps

    [app] = [a for a in read_apps() if a.name == "kaon"]
    [dep] = [d for d in app.deployments if d.name == f"model-{model}"]
    return sum(r.engine.running_requests + r.ongoing_requests for r in dep.replicas)


def test_client_disconnect_aborts_the_engine_request(base_url, ray_cluster):
    body = {"model": "beta", "prompt": "x", "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert _running(ray_cluster, "beta") >= 1
    deadline = time.monotonic() + 15
    while _running(ray_cluster, "beta") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(ray_cluster, "beta") == 0


def test_kaon_status_shows_deployments_replicas_and_queue(base_url, ray_cluster):
    env = dict(os.environ, RAY_ADDRESS=ray_cluster)
    result = subprocess.run([sys.executable, "-m", "kaon.cli", "status", "--address", ray_cluster], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "application kaon: RUNNING" in result.stdout
    assert "model-alpha: HEALTHY (2 RUNNING), queue depth 0" in result.stdout
    assert result.stdout.count("prefix hit rate") == 3
    assert "  router: HEALTHY (1 RUNNING)" in result.stdout


def test_shared_prefix_sticks_to_one_replica_and_cold_requests_spread(client):
    system = {"role": "system", "content": "You are the archivist of a river city. " * 40}
    answered_by = {
        client.chat.completions.create(model="alpha", messages=[system, {"role": "user", "content": f"question {i}"}], max_tokens=2).system_fingerprint
        for i in range(6)
    }
    assert len(answered_by) == 1
    cold = {
        client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": f"{i} unrelated " * 200}], max_tokens=2).system_fingerprint
        for i in range(12)
    }
    assert len(cold) == 2


def test_deploy_refuses_a_port_serve_is_not_listening_on(base_url, http_port):
    from kaon.cli import deploy
    from kaon.config import ConfigError

    other = parse_config(CONFIG | {"http": {"port": http_port + 1}})
    with pytest.raises(ConfigError, match=f"already listens on 127.0.0.1:{http_port}"):
        deploy(other)
