"""The API schema without Ray: vLLM's request models carry every sampling parameter kaon
promises, and engine failures become OpenAI-shaped errors with the right status."""

import asyncio
import json

import pytest
from pydantic import ValidationError
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.exceptions import VLLMValidationError

from kaon.config import parse_config
from kaon.deployments.replica import _items
from kaon.deployments.router import _sse_error, error_response
from kaon.engine.fake import FakeEngine

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_sampling_parameters_reach_vllm_sampling_params():
    request = ChatCompletionRequest.model_validate(
        CHAT
        | {
            "temperature": 0.5, "top_p": 0.9, "top_k": 5, "max_tokens": 7, "stop": ["x"], "seed": 3, "n": 2,
            "presence_penalty": 0.1, "frequency_penalty": 0.2, "ignore_eos": True, "logprobs": True, "top_logprobs": 2,
        }
    )
    params = request.to_sampling_params(max_tokens=7, default_sampling_params={})
    assert (params.temperature, params.top_p, params.top_k, params.max_tokens) == (0.5, 0.9, 5, 7)
    assert (params.stop, params.seed, params.n, params.ignore_eos, params.logprobs) == (["x"], 3, 2, True, 2)
    assert (params.presence_penalty, params.frequency_penalty) == (0.1, 0.2)


def test_stream_options_and_completion_logprobs_parse():
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p", "stream": True, "stream_options": {"include_usage": True}, "logprobs": 3})
    assert request.stream_options.include_usage is True
    assert request.logprobs == 3


def test_wrong_types_are_rejected_by_the_schema():
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "p", "max_tokens": "lots"})


def test_error_response_has_openai_shape():
    body = error_response(404, "The model `x` does not exist.", "model").model_dump()
    assert body == {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}}
    assert error_response(503, "busy").error.type == "ServiceUnavailableError"
    assert error_response(500, "boom").error.type == "InternalServerError"


def test_mid_stream_error_is_an_event_then_done():
    event = _sse_error(error_response(500, "boom"))
    first, second = [part for part in event.split("\n\n") if part]
    assert json.loads(first.removeprefix("data: "))["error"]["code"] == 500
    assert second == "data: [DONE]"


async def _collect(call, request):
    return [item async for item in _items(call, request)]


def test_vllm_validation_error_becomes_400_with_param():
    async def failing():
        raise VLLMValidationError("top_p must be in (0, 1], got 5.0.", parameter="top_p", value=5.0)

    [item] = asyncio.run(_collect(failing(), ChatCompletionRequest.model_validate(CHAT)))
    assert isinstance(item, ErrorResponse)
    assert (item.error.code, item.error.param) == (400, "top_p")


def test_param_is_inferred_where_vllm_omits_it():
    async def failing():
        raise VLLMValidationError("n must be at least 1, got 0.")

    [item] = asyncio.run(_collect(failing(), ChatCompletionRequest.model_validate(CHAT)))
    assert (item.error.code, item.error.param) == (400, "n")


def test_unexpected_engine_failure_is_500_not_a_dropped_call():
    async def failing():
        raise RuntimeError("engine died")

    [item] = asyncio.run(_collect(failing(), ChatCompletionRequest.model_validate(CHAT)))
    assert item.error.code == 500


def test_failure_after_stream_start_ends_with_error_event():
    async def chunks():
        yield "data: {}\n\n"
        raise RuntimeError("engine died")

    async def stream():
        return chunks()

    items = asyncio.run(_collect(stream(), ChatCompletionRequest.model_validate(CHAT)))
    assert items[0] == "data: {}\n\n"
    assert '"code":500' in items[1] and items[1].endswith("data: [DONE]\n\n")


def test_fake_engine_streams_requested_tokens_with_usage():
    engine = FakeEngine(parse_config({"models": [{"name": "m", "source": "x"}]}).models[0], "cpu")
    request = ChatCompletionRequest.model_validate(CHAT | {"max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}})

    async def run():
        return [chunk async for chunk in await engine.chat(request)]

    chunks = asyncio.run(run())
    assert chunks[-1] == "data: [DONE]\n\n"
    usage = json.loads(chunks[-2].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] == 3
    assert engine.stats().running_requests == 0


def test_coalesced_joins_ready_chunks_and_passes_errors():
    from kaon.deployments.replica import coalesced

    async def burst():
        for i in range(5):
            yield f"c{i} "
        raise RuntimeError("late failure")

    async def run():
        out = []
        with pytest.raises(RuntimeError, match="late failure"):
            async for text in coalesced(burst()):
                out.append(text)
        return out

    out = asyncio.run(run())
    assert "".join(out) == "c0 c1 c2 c3 c4 "
    assert len(out) < 5


def test_coalesced_closing_cancels_the_source():
    from kaon.deployments.replica import coalesced

    closed = []

    async def endless():
        try:
            while True:
                await asyncio.sleep(0.001)
                yield "x"
        finally:
            closed.append(True)

    async def run():
        stream = coalesced(endless())
        await stream.__anext__()
        await stream.aclose()
        await asyncio.sleep(0.01)

    asyncio.run(run())
    assert closed == [True]
