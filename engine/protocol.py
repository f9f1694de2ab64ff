"""What a replica needs from an engine, and the named objects that cross that boundary.

The replica deployment is written against ``Engine``; ``VLLMEngine`` is the real one and
``FakeEngine`` stands in for fast tests. Requests and responses are vLLM's own OpenAI
protocol models, so the API behaves as `vllm serve` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Protocol, TypeAlias

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest, ChatCompletionResponse
from vllm.entrypoints.openai.completion.protocol import CompletionRequest, CompletionResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse

ChatResult: TypeAlias = ErrorResponse | ChatCompletionResponse | AsyncIterator[str]
CompletionResult: TypeAlias = ErrorResponse | CompletionResponse | AsyncIterator[str]


@dataclass(slots=True, frozen=True)
class EngineStats:
    """One engine's load at a moment, as vLLM's scheduler reported it.

    ``prefix_cache_hit_rate`` is hits / queried tokens since the engine started.
    """

    running_requests: int = 0
    waiting_requests: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queried_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    timestamp_s: float = 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        if self.prefix_cache_queried_tokens == 0:
            return 0.0
        return self.prefix_cache_hit_tokens / self.prefix_cache_queried_tokens

    def to_dict(self) -> dict[str, float]:
        """The form Ray Serve's routing-stats channel carries (plain values only)."""
        return asdict(self) | {"prefix_cache_hit_rate": self.prefix_cache_hit_rate}


class Engine(Protocol):
    """An inference engine inside one replica."""

    async def start(self) -> None: ...

    async def chat(self, request: ChatCompletionRequest) -> ChatResult: ...

    async def completion(self, request: CompletionRequest) -> CompletionResult: ...

    def stats(self) -> EngineStats: ...

    async def check_health(self) -> None:
        """Raise if the engine can no longer serve."""

    async def shutdown(self) -> None: ...
