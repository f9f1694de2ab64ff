"""The model replica deployment: one engine per Ray Serve replica, nothing else.

Each method is a streaming generator: it yields a single ErrorResponse or full response
object, or the SSE chunks of a stream. The router reads the first item to choose the
HTTP response, so a bad request never opens a stream.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

from kaon.config import ModelConfig
from kaon.deployments.autoscaling_policy import replica_autoscaling_stats
from kaon.engine.protocol import Engine
from kaon.engine.stats import KVEventSource
from kaon.routing.snapshot import RoutingRequest

logger = logging.getLogger("ray.serve")

EngineFactory = Callable[[ModelConfig, str], Engine]


class ModelReplica:
    async def __init__(self, model: ModelConfig, device: str, engine_factory: EngineFactory):
        self._engine = engine_factory(model, device)
        await self._engine.start()
        self._kv_events = self._engine.kv_events_source()
        self._finished_requests = 0

    async def chat(self, request: ChatCompletionRequest, routing: RoutingRequest | None = None) -> AsyncIterator[BaseModel | str]:
        """``routing`` is read by the request router in the caller; the replica ignores it."""
        async for item in self._counted(_items(self._engine.chat(request), request)):
            yield item

    async def completion(self, request: CompletionRequest, routing: RoutingRequest | None = None) -> AsyncIterator[BaseModel | str]:
        async for item in self._counted(_items(self._engine.completion(request), request)):
            yield item

    async def _counted(self, items: AsyncIterator[BaseModel | str]) -> AsyncIterator[BaseModel | str]:
        """Counts the call as finished however it ends (done, failed, client gone): the
        autoscaler measures a replica's throughput from this count."""
        try:
            async for item in items:
                yield item
        finally:
            self._finished_requests += 1

    def record_routing_stats(self) -> dict[str, Any]:
        """Polled by Ray Serve's controller and handed to the request routers, with the
        address of the engine's KV-cache events when it publishes them."""
        stats: dict[str, Any] = self._engine.stats().to_dict()
        if self._kv_events is not None:
            stats[KVEventSource.STATS_KEY] = asdict(self._kv_events)
        return stats

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Polled by Ray Serve on each replica of an autoscaled model; the controller hands the
        series to kaon's autoscaling policy (``deployments/autoscaling_policy.py``)."""
        return replica_autoscaling_stats(self._engine.stats(), self._finished_requests)

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def __del__(self) -> None:
        await self._engine.shutdown()


async def _items(call: Awaitable[BaseModel | AsyncIterator[str]], request: BaseModel) -> AsyncIterator[BaseModel | str]:
    """Flatten an engine result into items, turning any exception into an OpenAI error.

    vLLM raises its validation errors (bad sampling parameter, prompt over the context
    length); ``create_error_response`` maps them to the status and ``param`` that
    `vllm serve` returns. After a stream has started, the error becomes an SSE event.
    """
    started = False
    try:
        result = await call
        if isinstance(result, BaseModel):
            yield result
            return
        async for chunk in coalesced(result):
            started = True
            yield chunk
    except Exception as error:  # noqa: BLE001 - the client must get an answer, not a dropped call
        response = with_param(create_error_response(error), request)
        if response.error.code >= 500:
            logger.exception("engine call failed")
        if started:
            yield f"data: {response.model_dump_json()}\n\ndata: [DONE]\n\n"
        else:
            yield response


async def coalesced(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """Yield every chunk that is ready as one string.

    Each yield is one Ray streaming message through the replica and the router, which on a
    busy machine costs more than a token; alone, a chunk goes out as soon as it exists, so
    time to first token is unchanged. Closing this generator (client gone) cancels the
    reader, which closes the engine's stream and so aborts the request in vLLM.
    """
    queue: asyncio.Queue = asyncio.Queue()
    finished = object()

    async def read() -> None:
        try:
            async for chunk in chunks:
                queue.put_nowait(chunk)
            queue.put_nowait(finished)
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait(error)

    reader = asyncio.create_task(read())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            text = "".join(item for item in batch if isinstance(item, str))
            if text:
                yield text
            if isinstance(batch[-1], Exception):
                raise batch[-1]
            if batch[-1] is finished:
                return
    finally:
        reader.cancel()


def with_param(response: ErrorResponse, request: BaseModel) -> ErrorResponse:
    """Fill ``param`` where vLLM left it out but its message starts with a request field.

    vLLM names the parameter for most bad values, not all (``n must be at least 1``).
    """
    first_word = response.error.message.split(" ", 1)[0]
    if response.error.param is None and response.error.code == 400 and first_word in type(request).model_fields:
        response.error.param = first_word
    return response
