"""Tensor parallelism on CPU: the e2e cluster's model tiny-b runs TP=2 (vLLM's mp executor,
each rank bound to its own core by kaon), tiny the same weights at TP=1. vLLM's own binding
fails to start a TP=2 engine on a one-NUMA-node machine, so tiny-b answering at all shows
kaon's binding was used; answering alike shows the two shards compute the same model."""

import openai
import pytest

from tests.e2e.conftest import E2E_CONFIG

pytestmark = pytest.mark.e2e

PROMPTS = ["The river", "Tell me about the weather in the mountains.", "Engines of the city"]


@pytest.fixture(scope="module")
def client(kaon_server):
    return openai.OpenAI(base_url=kaon_server.url + "/v1", api_key=kaon_server.api_key, max_retries=0, timeout=120)


def test_fixture_serves_one_model_at_tp2_and_one_at_tp1():
    engines = {model["name"]: model["engine"] for model in E2E_CONFIG["models"]}
    assert engines["tiny-b"]["tensor_parallel_size"] == 2
    assert engines["tiny"].get("tensor_parallel_size", 1) == 1


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tp2_replica_answers_as_tp1_at_temperature_0(client, prompt):
    replies = [
        client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
        for model in ("tiny", "tiny-b")
    ]
    tp1, tp2 = (reply.choices[0].text for reply in replies)
    assert replies[1].usage.completion_tokens == 16
    assert tp2 == tp1


def test_tp2_replica_streams_chat(client):
    stream = client.chat.completions.create(
        model="tiny-b", messages=[{"role": "user", "content": PROMPTS[1]}], max_tokens=8, stream=True,
        extra_body={"ignore_eos": True},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
