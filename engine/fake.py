"""A stand-in engine for the fast test tiers: vLLM's response types, no model.

It emits ``max_tokens`` (default 16) words with a configurable delay, holds at most
``max_num_seqs`` requests running and queues the rest, so routing and autoscaling see a
realistic load signal. Its text means nothing; the real path is tested with VLLMEngine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
)
from vllm.entrypoints.openai.completion.protocol import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
)
from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.entrypoints.serve.engine.protocol import UsageInfo

from kaon.config import ModelConfig
from kaon.engine.protocol import ChatResult, CompletionResult
from kaon.engine.stats import EngineStats

DEFAULT_OUTPUT_TOKENS = 16


class FakeEngine:
    def __init__(self, model: ModelConfig, device: str, time_per_token_s: float = 0.0):
        self._model = model
        self._time_per_token_s = time_per_token_s
        self._slots = asyncio.Semaphore(model.engine.max_num_seqs)
        self._running = 0
        self._waiting = 0
        self.fingerprint = f"fake-{uuid.uuid4().hex[:8]}"
        """Sent as ``system_fingerprint``, so tests can tell which replica answered."""

    async def start(self) -> None:
        pass

    async def chat(self, request: ChatCompletionRequest) -> ChatResult:
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.messages)
        words = self._generate(request.max_tokens or request.max_completion_tokens)
        if request.stream:
            return self._chat_stream(request, prompt_tokens, words)
        text = "".join([word async for word in words])
        return ChatCompletionResponse(
            model=request.model,
            system_fingerprint=self.fingerprint,
            choices=[ChatCompletionResponseChoice(index=0, message=ChatMessage(role="assistant", content=text), finish_reason="length")],
            usage=_usage(prompt_tokens, len(text.split())),
        )

    async def completion(self, request: CompletionRequest) -> CompletionResult:
        prompt_tokens = len(str(request.prompt).split())
        words = self._generate(request.max_tokens)
        if request.stream:
            return self._completion_stream(request, prompt_tokens, words)
        text = "".join([word async for word in words])
        return CompletionResponse(
            model=request.model,
            choices=[CompletionResponseChoice(index=0, text=text, finish_reason="length")],
            usage=_usage(prompt_tokens, len(text.split())),
        )

    async def _generate(self, max_tokens: int | None) -> AsyncIterator[str]:
        self._waiting += 1
        async with self._slots:
            self._waiting -= 1
            self._running += 1
            try:
                for index in range(max_tokens or DEFAULT_OUTPUT_TOKENS):
                    await asyncio.sleep(self._time_per_token_s)
                    yield f" w{index}"
            finally:
                self._running -= 1

    async def _chat_stream(self, request, prompt_tokens: int, words) -> AsyncIterator[str]:
        chunk_id, count = f"chatcmpl-{uuid.uuid4().hex}", 0
        async for word in words:
            count += 1
            delta = DeltaMessage(role="assistant" if count == 1 else None, content=word)
            yield _sse(ChatCompletionStreamResponse(id=chunk_id, model=request.model, choices=[ChatCompletionResponseStreamChoice(index=0, delta=delta)]))
        done = ChatCompletionResponseStreamChoice(index=0, delta=DeltaMessage(), finish_reason="length")
        yield _sse(ChatCompletionStreamResponse(id=chunk_id, model=request.model, choices=[done]))
        if request.stream_options and request.stream_options.include_usage:
            yield _sse(ChatCompletionStreamResponse(id=chunk_id, model=request.model, choices=[], usage=_usage(prompt_tokens, count)))
        yield "data: [DONE]\n\n"

    async def _completion_stream(self, request, prompt_tokens: int, words) -> AsyncIterator[str]:
        chunk_id, count = f"cmpl-{uuid.uuid4().hex}", 0
        async for word in words:
            count += 1
            yield _sse(CompletionStreamResponse(id=chunk_id, model=request.model, choices=[CompletionResponseStreamChoice(index=0, text=word)]))
        done = CompletionResponseStreamChoice(index=0, text="", finish_reason="length")
        yield _sse(CompletionStreamResponse(id=chunk_id, model=request.model, choices=[done]))
        if request.stream_options and request.stream_options.include_usage:
            yield _sse(CompletionStreamResponse(id=chunk_id, model=request.model, choices=[], usage=_usage(prompt_tokens, count)))
        yield "data: [DONE]\n\n"

    def stats(self) -> EngineStats:
        return EngineStats(running_requests=self._running, waiting_requests=self._waiting, timestamp_s=time.time())

    def kv_events_source(self) -> None:
        return None

    async def check_health(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)


def _sse(chunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"
