"""Summary maths over request records; pure functions, no I/O.

Percentiles use numpy's ``linear`` method (type 7 of Hyndman & Fan, numpy's and vLLM
bench's default): the q-th percentile of n sorted values sits at rank (n - 1)·q/100,
interpolated between neighbours; so p50 of 1..100 is 50.5 and p99 is 99.01.

Only successful requests contribute latencies and tokens. Throughputs divide by the run's
wall time (first send to last finish), so idle time inside an open-loop run counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kaon.bench.client import RequestRecord

PERCENTILE_METHOD = "linear"
PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by ``PERCENTILE_METHOD``; None for no values."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method=PERCENTILE_METHOD))


@dataclass(frozen=True, slots=True)
class LatencyMs:
    """A latency distribution in milliseconds; all None when ``count`` is 0."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def latency_ms(values_s: Iterable[float]) -> LatencyMs:
    """Distribution of durations given in seconds, reported in milliseconds."""
    values = [v * 1000.0 for v in values_s]
    if not values:
        return LatencyMs(0, None, None, None, None, None)
    p50, p90, p99 = (percentile(values, q) for q in PERCENTILES)
    return LatencyMs(len(values), float(np.mean(values)), p50, p90, p99, max(values))


def tpot_s(record: RequestRecord) -> float | None:
    """Time per output token after the first: (e2e - ttft) / (output_tokens - 1)."""
    if record.e2e_s is None or record.ttft_s is None or not record.output_tokens or record.output_tokens < 2:
        return None
    return (record.e2e_s - record.ttft_s) / (record.output_tokens - 1)


def error_key(record: RequestRecord) -> str:
    """The bucket a failed request is counted in: its status code, else the error's kind
    (the text before the first colon, e.g. ``ReadTimeout``, ``cancelled``)."""
    if record.status_code is not None and record.status_code != 200:
        return str(record.status_code)
    return (record.error or "").split(":", 1)[0] or "unknown"


def errors_by_kind(records: Iterable[RequestRecord]) -> dict[str, int]:
    return dict(sorted(Counter(error_key(r) for r in records if not r.ok).items()))


@dataclass(frozen=True, slots=True)
class BenchSummary:
    """One run's figures. ``output_length_mismatches`` counts successes whose usage reports
    a different output length than asked (the server ignored ``ignore_eos``)."""

    requests_sent: int
    completed: int
    failed: int
    not_sent: int
    wall_s: float
    request_throughput_per_s: float
    output_throughput_tokens_per_s: float
    input_throughput_tokens_per_s: float
    total_input_tokens: int
    total_output_tokens: int
    output_length_mismatches: int
    ttft: LatencyMs
    itl: LatencyMs
    tpot: LatencyMs
    e2e: LatencyMs
    errors: dict[str, int] = field(default_factory=dict)


def summarize(records: Sequence[RequestRecord], wall_s: float, not_sent: int = 0) -> BenchSummary:
    """Summary of one run. Output tokens of a success come from usage, or else count its
    content chunks; input tokens from usage, or else 0."""
    ok = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens if r.output_tokens is not None else r.content_chunks for r in ok)
    input_tokens = sum(r.prompt_tokens or 0 for r in ok)

    def per_s(amount: float) -> float:
        return amount / wall_s if wall_s > 0 else 0.0

    return BenchSummary(
        requests_sent=len(records),
        completed=len(ok),
        failed=len(records) - len(ok),
        not_sent=not_sent,
        wall_s=wall_s,
        request_throughput_per_s=per_s(len(ok)),
        output_throughput_tokens_per_s=per_s(output_tokens),
        input_throughput_tokens_per_s=per_s(input_tokens),
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        output_length_mismatches=sum(
            1 for r in ok if r.output_tokens is not None and r.output_tokens != r.expected_output_tokens
        ),
        ttft=latency_ms(r.ttft_s for r in ok if r.ttft_s is not None),
        itl=latency_ms(gap for r in ok for gap in r.itl_s),
        tpot=latency_ms(t for r in ok if (t := tpot_s(r)) is not None),
        e2e=latency_ms(r.e2e_s for r in ok if r.e2e_s is not None),
        errors=errors_by_kind(records),
    )
