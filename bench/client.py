"""The async runner: sends a workload on a schedule, streams every response, records timings.

Every request is sent with ``stream: true``, ``stream_options.include_usage`` and (by
default) ``ignore_eos`` with ``max_tokens`` = the request's output length, so vLLM-style
servers produce exactly that many tokens. Failures of any kind (HTTP status, an error event
in the stream, a dropped connection, a timeout) end up in the request's record; nothing is
raised. A run is bounded: a request held back (by the concurrency cap or its session's
previous round) until after ``schedule.max_duration_s`` is not sent, and requests still in
flight ``drain_timeout_s`` later are cancelled and recorded as such. (Open-loop offsets are
below ``max_duration_s`` by construction; a request due then is sent even if the event loop
runs a few milliseconds late.)
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tqdm import tqdm

from kaon.bench.arrivals import ArrivalSchedule
from kaon.bench.workloads import BenchRequest, ChatMessage

MAX_ERROR_CHARS = 500
CANCELLED_ERROR = "cancelled: still running at the run's deadline"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where and how to send. ``base_url`` is the server root (``/v1`` is appended)."""

    base_url: str
    model: str
    api_key: str | None = None
    ignore_eos: bool = True
    temperature: float = 0.0
    request_timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    drain_timeout_s: float = 60.0
    show_progress: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestRecord:
    """One request's outcome; times are seconds relative to the run's start.

    ``ttft_s`` is send → first chunk with non-empty content; ``itl_s`` the gaps between
    consecutive content chunks (one chunk may carry several tokens); ``e2e_s`` send → end of
    stream. Token counts come from the server's ``usage`` (None if it sent none).
    ``status_code`` is the HTTP status (or the code of an in-stream error event), ``error``
    None on success.
    """

    request_id: str
    group_id: str
    session_id: str | None
    expected_output_tokens: int
    scheduled_s: float
    start_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2e_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    content_chunks: int = 0
    status_code: int | None = None
    error: str | None = None
    output_text: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class RunResult:
    """``wall_s`` spans the first send to the last finish; ``not_sent`` counts requests the
    deadline (or a failed earlier round of their session) kept from being sent."""

    records: list[RequestRecord]
    wall_s: float
    not_sent: int
    started_unix_s: float


def request_body(request: BenchRequest, config: ClientConfig, history: list[ChatMessage]) -> tuple[str, dict[str, Any]]:
    """The endpoint path and JSON body for one request (chat if it has messages)."""
    body: dict[str, Any] = {
        "model": config.model,
        "max_tokens": request.output_tokens,
        "temperature": config.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.ignore_eos:
        body["ignore_eos"] = True
    body.update(config.extra_body)
    if request.messages is not None:
        body["messages"] = [m.to_openai() for m in (*history, *request.messages)]
        return "/v1/chat/completions", body
    body["prompt"] = request.prompt
    return "/v1/completions", body


def _error_message(status_code: int, raw: bytes) -> str:
    try:
        payload = json.loads(raw)
        detail = payload.get("error", payload) if isinstance(payload, dict) else payload
        message = detail.get("message", detail) if isinstance(detail, dict) else detail
    except ValueError:
        message = raw.decode("utf-8", "replace")
    return f"HTTP {status_code}: {message}"[:MAX_ERROR_CHARS]


def _chunk_text(chunk: dict[str, Any]) -> str:
    text = ""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta")
        text += (delta.get("content") or "") if isinstance(delta, dict) else (choice.get("text") or "")
    return text


async def send_one(
    client: httpx.AsyncClient, request: BenchRequest, config: ClientConfig, record: RequestRecord,
    history: list[ChatMessage], t0: float,
) -> None:
    """Send ``request`` after ``history`` and fill ``record``; never raises (but lets
    cancellation through after marking the record)."""
    path, body = request_body(request, config, history)
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    start = time.perf_counter()
    record.start_s = start - t0
    last_chunk = None
    done = False
    try:
        async with client.stream("POST", path, json=body, headers=headers) as response:
            record.status_code = response.status_code
            if response.status_code != 200:
                record.error = _error_message(response.status_code, await response.aread())
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                    code = error.get("code")
                    record.status_code = code if isinstance(code, int) else record.status_code
                    record.error = f"stream error: {error.get('message')}"[:MAX_ERROR_CHARS]
                    continue
                text = _chunk_text(chunk)
                if text:
                    now = time.perf_counter()
                    if last_chunk is None:
                        record.ttft_s = now - start
                    else:
                        record.itl_s.append(now - last_chunk)
                    last_chunk = now
                    record.content_chunks += 1
                    record.output_text += text
                if chunk.get("usage"):
                    record.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    record.output_tokens = chunk["usage"].get("completion_tokens")
        record.e2e_s = time.perf_counter() - start
        if not done and record.error is None:
            record.error = "stream ended without [DONE]"
    except asyncio.CancelledError:
        record.error = CANCELLED_ERROR
        raise
    except Exception as error:  # noqa: BLE001 - every failure is a result, not a crash
        record.error = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


class _Sessions:
    """Conversation state of multi-turn sessions: history and round completion."""

    def __init__(self, requests: list[BenchRequest]):
        self.history: dict[str, list[ChatMessage]] = {}
        self.finished: dict[tuple[str, int], asyncio.Event] = {}
        self.succeeded: dict[tuple[str, int], bool] = {}
        for r in requests:
            if r.session_id is not None:
                self.finished[(r.session_id, r.round_index)] = asyncio.Event()

    def must_wait(self, request: BenchRequest) -> bool:
        previous = (request.session_id, request.round_index - 1)
        return request.session_id is not None and previous in self.finished and not self.finished[previous].is_set()

    async def wait_for_previous(self, request: BenchRequest) -> bool:
        """False if the previous round of the session failed or was not sent."""
        if request.session_id is None:
            return True
        previous = (request.session_id, request.round_index - 1)
        if previous not in self.finished:
            return True
        await self.finished[previous].wait()
        return self.succeeded.get(previous, False)

    def history_for(self, request: BenchRequest) -> list[ChatMessage]:
        return list(self.history.get(request.session_id, [])) if request.session_id else []

    def finish(self, request: BenchRequest, record: RequestRecord | None) -> None:
        if request.session_id is None:
            return
        key = (request.session_id, request.round_index)
        ok = record is not None and record.ok
        if ok and request.messages is not None:
            self.history.setdefault(request.session_id, []).extend(
                (*request.messages, ChatMessage("assistant", record.output_text))
            )
        self.succeeded[key] = ok
        self.finished[key].set()


async def run_requests(
    requests: list[BenchRequest], schedule: ArrivalSchedule, config: ClientConfig,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunResult:
    """Send ``requests[i]`` at ``schedule.send_offsets_s[i]`` (the shorter list decides how
    many), respecting ``max_concurrency`` and session order; return every sent request's
    record in workload order."""
    chosen = requests[: schedule.num_requests]
    sessions = _Sessions(chosen)
    slots = asyncio.Semaphore(schedule.max_concurrency) if schedule.max_concurrency else None
    records: list[RequestRecord | None] = [None] * len(chosen)
    base = config.base_url.rstrip("/").removesuffix("/v1")
    timeout = httpx.Timeout(config.request_timeout_s, connect=config.connect_timeout_s)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    progress = tqdm(total=len(chosen), desc=schedule.description, unit="req", disable=not config.show_progress)

    async def one(index: int, request: BenchRequest, offset_s: float) -> None:
        record = None
        try:
            await asyncio.sleep(max(0.0, t0 + offset_s - time.perf_counter()))
            held_back = sessions.must_wait(request)
            if not await sessions.wait_for_previous(request):
                return
            if slots is not None:
                held_back = held_back or slots.locked()
                await slots.acquire()
            try:
                if held_back and time.perf_counter() >= deadline:
                    return
                record = RequestRecord(request.request_id, request.group_id, request.session_id,
                                       request.output_tokens, scheduled_s=offset_s)
                records[index] = record
                await send_one(client, request, config, record, sessions.history_for(request), t0)
            finally:
                if slots is not None:
                    slots.release()
        finally:
            sessions.finish(request, record)
            progress.update(1)

    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits, transport=transport) as client:
        # The clock starts once the client exists (its set-up takes tens of ms).
        t0 = time.perf_counter()
        deadline = t0 + schedule.max_duration_s
        started_unix_s = time.time()
        tasks = [asyncio.create_task(one(i, r, t)) for i, (r, t) in enumerate(zip(chosen, schedule.send_offsets_s))]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=schedule.max_duration_s + config.drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    progress.close()
    sent = [r for r in records if r is not None]
    ends = [r.start_s + (r.e2e_s or 0.0) for r in sent]
    wall_s = max(ends) - min(r.start_s for r in sent) if sent else 0.0
    if any(r.error == CANCELLED_ERROR for r in sent):
        wall_s = max(wall_s, time.perf_counter() - t0)
    return RunResult(sent, wall_s, len(chosen) - len(sent), started_unix_s)


def run(requests: list[BenchRequest], schedule: ArrivalSchedule, config: ClientConfig) -> RunResult:
    """Synchronous wrapper of ``run_requests``."""
    return asyncio.run(run_requests(requests, schedule, config))
