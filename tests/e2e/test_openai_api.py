"""Real vLLM on CPU behind kaon's router, over real HTTP with the official `openai` client."""

import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

CHAT = [{"role": "user", "content": "Tell me about the weather in the mountains."}]


@pytest.fixture(scope="module")
def client(kaon_server):
    return openai.OpenAI(base_url=kaon_server.url + "/v1", api_key=kaon_server.api_key, max_retries=0, timeout=120)


def test_models_lists_both_models(client):
    assert sorted(m.id for m in client.models.list()) == ["tiny", "tiny-b"]


def test_streaming_chat(client):
    stream = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_streaming_chat_reports_usage_when_asked(client):
    stream = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    last = list(stream)[-1]
    assert last.usage.completion_tokens == 6
    assert last.usage.prompt_tokens > 5


def test_completion_with_ignore_eos_counts_exact_tokens(client):
    reply = client.completions.create(model="tiny", prompt="The river", max_tokens=8, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 8
    assert reply.choices[0].finish_reason == "length"


def test_streaming_completion(client):
    chunks = list(client.completions.create(model="tiny", prompt="Engines", max_tokens=5, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_second_model_serves_too(client):
    reply = client.chat.completions.create(model="tiny-b", messages=CHAT, max_tokens=4)
    assert reply.model == "tiny-b"
    assert reply.usage.completion_tokens <= 4


def test_sampling_parameters(client):
    def sample(seed):
        return client.completions.create(
            model="tiny", prompt="Cities grow", max_tokens=10, temperature=1.0, top_p=0.9, seed=seed,
            presence_penalty=0.5, frequency_penalty=0.5, extra_body={"top_k": 20, "ignore_eos": True},
        ).choices[0].text

    assert sample(7) == sample(7)
    many = client.completions.create(model="tiny", prompt="Maps", max_tokens=4, n=2, logprobs=2, temperature=1.0)
    assert len(many.choices) == 2
    assert all(len(c.logprobs.tokens) == 4 for c in many.choices)


def test_greedy_output_is_the_same_on_every_replica(client):
    texts = {client.completions.create(model="tiny", prompt="Gardens in spring", max_tokens=8, temperature=0).choices[0].text for _ in range(4)}
    assert len(texts) == 1


def test_stop_sequence_ends_the_text(client):
    free = client.completions.create(model="tiny", prompt="Libraries", max_tokens=12, temperature=0, extra_body={"ignore_eos": True}).choices[0].text
    stop = free.split()[2]
    stopped = client.completions.create(model="tiny", prompt="Libraries", max_tokens=12, temperature=0, stop=[stop], extra_body={"ignore_eos": True})
    assert stop not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=CHAT)
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"temperature": -1}, "temperature"), ({"top_p": 5}, "top_p"), ({"n": 0}, "n"), ({"logprobs": 50}, "logprobs"), ({"max_tokens": "x"}, "body.max_tokens")],
)
def test_bad_parameters_are_400_with_param(kaon_server, extra, param):
    response = httpx.post(kaon_server.url + "/v1/completions", json={"model": "tiny", "prompt": "x"} | extra, headers=kaon_server.headers, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_prompt_over_the_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="word " * 2000, max_tokens=4)
    assert "maximum context length" in caught.value.body["message"]


def test_bad_parameter_on_a_stream_is_400_not_a_broken_stream(kaon_server):
    body = {"model": "tiny", "messages": CHAT, "stream": True, "temperature": -2}
    response = httpx.post(kaon_server.url + "/v1/chat/completions", json=body, headers=kaon_server.headers, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"


@pytest.fixture(scope="module")
def read_apps(kaon_server):
    """This process as a driver of kaon's Ray cluster: `kaon status`'s figures in about a
    second, not the several seconds a `kaon status` process takes to start."""
    from kaon.cluster import local
    from kaon.cluster.status import read_apps

    local.connect("auto")
    yield read_apps
    local.disconnect()


def _busy(read_apps) -> list[int]:
    """Ongoing plus running requests of each replica of model `tiny-b`."""
    return [
        r.ongoing_requests + (r.engine.running_requests if r.engine else 0)
        for app in read_apps() for d in app.deployments if d.name == "model-tiny-b" for r in d.replicas
    ]


def test_client_disconnect_aborts_the_request(kaon_server, read_apps):
    body = {"model": "tiny-b", "prompt": "Rivers", "max_tokens": 1000, "n": 4, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", kaon_server.url + "/v1/completions", json=body, headers=kaon_server.headers, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert any(_busy(read_apps))
    deadline = time.monotonic() + 60
    while any(_busy(read_apps)) and time.monotonic() < deadline:
        time.sleep(1)
    assert _busy(read_apps) == [0]


def test_status_shows_every_replica_running(kaon_server):
    result = kaon_server.cli("status")
    assert result.returncode == 0, result.stderr
    assert "model-tiny: HEALTHY (2 RUNNING)" in result.stdout
    assert "model-tiny-b: HEALTHY (1 RUNNING)" in result.stdout
