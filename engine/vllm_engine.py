"""The real engine: vLLM's AsyncLLM with vLLM's own OpenAI serving objects on top.

vLLM's own Prometheus metrics (``vllm:*``, exported by Ray as ``ray_vllm_*`` with a
``ReplicaId`` label) go out through Ray's metrics agent, as `vllm serve`'s /metrics would.

The chat and completion handlers are the ones `vllm serve` uses (built by vLLM's
``init_app_state``), so parameters, defaults, validation errors and the streamed chunks are
vLLM's. Cancellation needs no code here: when Ray Serve cancels the replica call, the
generator is closed and AsyncLLM aborts the request.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from collections.abc import Callable
from typing import Any

from starlette.datastructures import State
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

from kaon.config import ModelConfig
from kaon.engine.args import cpu_environment, vllm_args
from kaon.engine.model_source import resolve_model_path
from kaon.engine.protocol import ChatResult, CompletionResult
from kaon.engine.stats import EngineStats, KVEventSource


class _StatsRecorder(StatLoggerBase):
    """A vLLM stat logger that hands each scheduler report to ``sink`` as EngineStats."""

    def __init__(self, sink: Callable[[EngineStats], None]):
        self._sink = sink
        self._queried_tokens = 0
        self._hit_tokens = 0

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
        if scheduler_stats is None:
            return
        prefix = scheduler_stats.prefix_cache_stats
        self._queried_tokens += prefix.queries
        self._hit_tokens += prefix.hits
        self._sink(EngineStats(
            running_requests=scheduler_stats.num_running_reqs,
            waiting_requests=scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
            kv_cache_usage=scheduler_stats.kv_cache_usage,
            prefix_cache_queried_tokens=self._queried_tokens,
            prefix_cache_hit_tokens=self._hit_tokens,
            timestamp_s=time.time(),
        ))

    def log_engine_initialized(self) -> None:
        pass


class VLLMEngine:
    """One AsyncLLM per replica, started by ``start()``."""

    def __init__(self, model: ModelConfig, device: str):
        self._model = model
        self._device = device
        self._client = None
        self._state = State()
        self._stats = EngineStats()

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.v1.engine.async_llm import AsyncLLM

        if self._device == "cpu":
            os.environ.update(cpu_environment(self._model))
        args = vllm_args(self._model, resolve_model_path(self._model.source), self._device)
        self._client = AsyncLLM.from_engine_args(
            AsyncEngineArgs.from_cli_args(args), stat_loggers=[self._stats_logger, RayPrometheusStatLogger]
        )
        tasks = await self._client.get_supported_tasks()
        await init_app_state(self._client, self._state, args, supported_tasks=tasks)

    async def chat(self, request: ChatCompletionRequest) -> ChatResult:
        return await self._state.openai_serving_chat.create_chat_completion(request)

    async def completion(self, request: CompletionRequest) -> CompletionResult:
        return await self._state.openai_serving_completion.create_completion(request)

    def _stats_logger(self, vllm_config: Any, engine_index: int) -> _StatsRecorder:
        return _StatsRecorder(self._set_stats)

    def _set_stats(self, stats: EngineStats) -> None:
        self._stats = stats

    def stats(self) -> EngineStats:
        """The scheduler's last report, corrected for an engine that has gone idle.

        vLLM reports scheduler numbers only when it steps, so after the last request
        finishes or is aborted the report would still count it; the output processor's
        count of unfinished requests is exact at every moment.
        """
        if self._client is not None and self._client.output_processor.get_num_unfinished_requests() == 0:
            return replace(self._stats, running_requests=0, waiting_requests=0)
        return self._stats

    def kv_events_source(self) -> KVEventSource | None:
        """The addresses vLLM bound for its KV-cache events (ZMQ), if it publishes them."""
        for config in self._client.get_kv_event_sources().values():
            if config.publisher == "zmq":
                return KVEventSource(config.endpoint, config.replay_endpoint)
        return None

    async def check_health(self) -> None:
        await self._client.check_health()

    async def shutdown(self) -> None:
        if self._client is not None:
            self._client.shutdown()
