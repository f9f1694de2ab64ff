"""What a replica needs from an engine, and the named objects that cross that boundary.

The replica deployment is written against ``Engine``; ``VLLMEngine`` is the real one and
``FakeEngine`` stands in for fast tests. Requests and responses are vLLM's own OpenAI
protocol models, so the API behaves as `vllm serve` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeAlias

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest, ChatCompletionResponse
from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse

from kaon.engine.stats import EngineStats, KVEventSource

ChatResult: TypeAlias = ErrorResponse | ChatCompletionResponse | AsyncIterator[str]
CompletionResult: TypeAlias = ErrorResponse | CompletionResponse | AsyncIterator[str]


class Engine(Protocol):
    """An inference engine inside one replica."""

    async def start(self) -> None: ...

    async def chat(self, request: ChatCompletionRequest) -> ChatResult: ...

    async def completion(self, request: CompletionRequest) -> CompletionResult: ...

    def stats(self) -> EngineStats: ...

    def kv_events_source(self) -> KVEventSource | None:
        """Where the engine publishes its KV-cache events, or None if it publishes none."""

    async def check_health(self) -> None:
        """Raise if the engine can no longer serve."""

    async def shutdown(self) -> None: ...
