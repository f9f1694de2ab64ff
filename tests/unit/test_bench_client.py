"""kaon.bench.client against a fake OpenAI SSE server (starlette + uvicorn on 127.0.0.1 in a
thread): timings, usage, errors recorded and never raised, concurrency, deadline, sessions."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from kaon.bench import arrivals
from kaon.bench.client import CANCELLED_ERROR, ClientConfig, run_requests
from kaon.bench.metrics import summarize
from kaon.bench.workloads import BenchRequest, ChatMessage
from tests.conftest import free_port

FIRST_DELAY_S = 0.15
TOKEN_DELAY_S = 0.05


class FakeServer:
    """Behaviour is chosen by the request's model name; every JSON body is kept."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.handle, methods=["POST"]),
            Route("/v1/completions", self.handle, methods=["POST"]),
        ])

    async def handle(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        model = body["model"]
        if model == "bad":
            error = {"error": {"message": "max_tokens is too large", "type": "BadRequestError", "param": "max_tokens", "code": 400}}
            return JSONResponse(error, status_code=400)
        return StreamingResponse(self.stream(body, chat="messages" in body), media_type="text/event-stream")

    async def stream(self, body: dict, chat: bool):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            model, n = body["model"], body["max_tokens"]
            delay = {"slow": 0.05, "hang": 30.0}.get(model, FIRST_DELAY_S)
            yield _event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]} if chat else {"choices": []})
            await asyncio.sleep(delay)
            for i in range(n):
                if i:
                    await asyncio.sleep(TOKEN_DELAY_S if model != "slow" else 0.01)
                if model == "drop" and i == 2:
                    raise ConnectionAbortedError("fake server drops the connection")
                text = f"t{len(self.bodies)}-{i} "
                choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
                yield _event({"choices": [choice], "usage": None})
            if model == "stream-error":
                yield _event({"error": {"message": "engine died", "type": "InternalServerError", "code": 500}})
            else:
                yield _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}})
            yield "data: [DONE]\n\n"
        finally:
            self.in_flight -= 1


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeServer, str]]:
    server = FakeServer()
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(server.app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uv.started, "fake server did not start"
    yield server, f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def _chat(i: int, output_tokens: int = 5, **fields) -> BenchRequest:
    return BenchRequest(f"r{i}", output_tokens, 3, messages=(ChatMessage("user", f"hello {i}"),), **fields)


def _run(url: str, model: str, requests, schedule=None, **config):
    schedule = schedule or arrivals.closed_loop(1, len(requests), 30.0)
    client = ClientConfig(base_url=url, model=model, show_progress=False, **config)
    return asyncio.run(run_requests(requests, schedule, client))


def test_records_ttft_itl_and_usage(fake) -> None:
    server, url = fake
    result = _run(url, "ok", [_chat(0, output_tokens=5)])
    (record,) = result.records
    assert record.ok and record.status_code == 200
    assert FIRST_DELAY_S <= record.ttft_s < FIRST_DELAY_S + 0.5
    assert len(record.itl_s) == 4 and all(TOKEN_DELAY_S * 0.8 <= gap < TOKEN_DELAY_S + 0.3 for gap in record.itl_s)
    assert record.e2e_s == pytest.approx(record.ttft_s + sum(record.itl_s), abs=0.1)
    assert (record.prompt_tokens, record.output_tokens, record.content_chunks) == (7, 5, 5)
    assert record.output_text.count(" ") == 5
    body = server.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 5
    assert body["messages"] == [{"role": "user", "content": "hello 0"}]
    assert result.not_sent == 0 and result.wall_s == pytest.approx(record.e2e_s, abs=0.05)


def test_plain_prompt_uses_completions(fake) -> None:
    server, url = fake
    (record,) = _run(url, "slow", [BenchRequest("p", 3, 2, prompt="some words")]).records
    assert record.ok and record.output_tokens == 3 and record.content_chunks == 3
    assert server.bodies[-1]["prompt"] == "some words" and "messages" not in server.bodies[-1]


def test_errors_are_recorded_not_raised(fake) -> None:
    _, url = fake
    (bad,) = _run(url, "bad", [_chat(0)]).records
    assert bad.status_code == 400 and bad.error == "HTTP 400: max_tokens is too large" and bad.ttft_s is None
    (dropped,) = _run(url, "drop", [_chat(1)]).records
    assert not dropped.ok and dropped.status_code == 200 and dropped.content_chunks == 2
    assert dropped.error.startswith(("RemoteProtocolError", "ReadError")), dropped.error
    (stream_error,) = _run(url, "stream-error", [_chat(2)]).records
    assert stream_error.status_code == 500 and stream_error.error == "stream error: engine died"
    (refused,) = _run(f"http://127.0.0.1:{free_port()}", "ok", [_chat(3)]).records
    assert refused.error.startswith("ConnectError")
    summary = summarize([bad, dropped, stream_error, refused], wall_s=1.0)
    assert summary.failed == 4 and summary.errors["400"] == 1 and summary.errors["500"] == 1


def test_closed_loop_caps_concurrency(fake) -> None:
    server, url = fake
    server.max_in_flight = 0
    result = _run(url, "slow", [_chat(i, output_tokens=4) for i in range(8)], arrivals.closed_loop(3, 8, 30.0))
    assert len(result.records) == 8 and all(r.ok for r in result.records)
    assert server.max_in_flight == 3


def test_open_loop_follows_offsets_and_stops_at_duration(fake) -> None:
    _, url = fake
    schedule = arrivals.constant(10.0, max_requests=20, max_duration_s=0.45)
    result = _run(url, "slow", [_chat(i, output_tokens=2) for i in range(20)], schedule)
    assert [r.scheduled_s for r in result.records] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(0 <= r.start_s - r.scheduled_s < 0.2 for r in result.records)


def test_deadline_cancels_requests_in_flight(fake) -> None:
    _, url = fake
    started = time.monotonic()
    result = _run(url, "hang", [_chat(i) for i in range(4)], arrivals.closed_loop(2, 4, 0.3), drain_timeout_s=0.3)
    assert time.monotonic() - started < 5
    assert [r.error for r in result.records] == [CANCELLED_ERROR] * 2 and result.not_sent == 2


def test_sessions_send_history_with_actual_answers(fake) -> None:
    server, url = fake
    system = ChatMessage("system", "sys")
    requests = [
        BenchRequest("a0", 2, 1, messages=(system, ChatMessage("user", "a-q0")), session_id="a", round_index=0),
        BenchRequest("b0", 2, 1, messages=(system, ChatMessage("user", "b-q0")), session_id="b", round_index=0),
        BenchRequest("a1", 2, 1, messages=(ChatMessage("user", "a-q1"),), session_id="a", round_index=1),
        BenchRequest("b1", 2, 1, messages=(ChatMessage("user", "b-q1"),), session_id="b", round_index=1),
    ]
    start = len(server.bodies)
    result = _run(url, "slow", requests, arrivals.poisson(float("inf"), 4, 30.0))
    assert all(r.ok for r in result.records)
    answers = {r.request_id: r.output_text for r in result.records}
    sent = {b["messages"][-1]["content"]: b["messages"] for b in server.bodies[start:]}
    assert sent["a-q1"] == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "a-q0"},
        {"role": "assistant", "content": answers["a0"]}, {"role": "user", "content": "a-q1"},
    ]
    assert sent["b-q1"][2] == {"role": "assistant", "content": answers["b0"]}
    by_id = {r.request_id: r for r in result.records}
    assert by_id["a1"].start_s >= by_id["a0"].start_s + by_id["a0"].e2e_s - 1e-3


def test_failed_round_stops_its_session(fake) -> None:
    _, url = fake
    requests = [_chat(0, session_id="s", round_index=0), _chat(1, session_id="s", round_index=1)]
    result = _run(url, "bad", requests)
    assert len(result.records) == 1 and result.not_sent == 1
