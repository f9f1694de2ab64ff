"""The server's own view of a run: prefix-cache hit rate and queue depth around and during it.

A *stats source* is any callable returning a mapping with some of ``STAT_KEYS`` (totals
over the server's engines). ``prometheus_source`` reads vLLM's ``/metrics`` text format
(names from ``vllm/v1/metrics/loggers.py``, also as a Ray metrics agent exports them);
``engine_stats_source`` adapts kaon's per-replica ``EngineStats`` (as ``kaon status`` reads
them) without importing Ray here.
Counters are differenced over the run; gauges are sampled while it runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
StatsSource = Callable[[], Mapping[str, float]]

COUNTER_KEYS = ("prefix_cache_queries_tokens", "prefix_cache_hits_tokens")
GAUGE_KEYS = ("requests_waiting", "requests_running", "kv_cache_usage")
STAT_KEYS = COUNTER_KEYS + GAUGE_KEYS
VLLM_METRIC_NAMES = {
    "prefix_cache_queries_tokens": "vllm:prefix_cache_queries",
    "prefix_cache_hits_tokens": "vllm:prefix_cache_hits",
    "requests_waiting": "vllm:num_requests_waiting",
    "requests_running": "vllm:num_requests_running",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",
}


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Sample name → sum over all label sets; a counter's ``_total`` suffix is dropped so
    ``vllm:prefix_cache_hits_total`` is found as ``vllm:prefix_cache_hits``."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name == family.name + "_total":
                name = family.name
            if not math.isnan(sample.value):
                totals[name] = totals.get(name, 0.0) + sample.value
    return totals


def vllm_stats(samples: Mapping[str, float]) -> dict[str, float]:
    """``STAT_KEYS`` found in parsed vLLM metrics, named as vLLM's server names them or as
    Ray's metrics agent exports them (``vllm:x`` as ``ray_vllm_x``); absent names are left out."""
    stats = {}
    for key, name in VLLM_METRIC_NAMES.items():
        found = [samples[n] for n in (name, "ray_" + name.replace(":", "_")) if n in samples]
        if found:
            stats[key] = found[0]
    return stats


def prometheus_source(url: str, timeout_s: float = 5.0) -> StatsSource:
    """A source reading a Prometheus text endpoint such as ``http://host:8000/metrics``."""

    def read() -> Mapping[str, float]:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        return vllm_stats(parse_prometheus_text(response.text))

    return read


def engine_stats_source(read_engine_stats: Callable[[], Iterable[Any]]) -> StatsSource:
    """A source summing objects shaped like ``kaon.engine.stats.EngineStats`` (one per
    replica), e.g. ``lambda: [r.engine for d in deployments for r in d.replicas if r.engine]``
    over ``kaon.cluster.status.read_apps()``. KV usage is the mean over replicas."""

    def read() -> Mapping[str, float]:
        stats = list(read_engine_stats())
        return {
            "prefix_cache_queries_tokens": float(sum(s.prefix_cache_queried_tokens for s in stats)),
            "prefix_cache_hits_tokens": float(sum(s.prefix_cache_hit_tokens for s in stats)),
            "requests_waiting": float(sum(s.waiting_requests for s in stats)),
            "requests_running": float(sum(s.running_requests for s in stats)),
            "kv_cache_usage": sum(s.kv_cache_usage for s in stats) / len(stats) if stats else 0.0,
        }

    return read


@dataclass(frozen=True, slots=True)
class ServerMetricsReport:
    """Deltas of the prefix-cache counters over the run (hit rate = hits / queried tokens)
    and the gauges seen in ``samples`` polls during it. None where the source had no value;
    ``read_errors`` counts failed reads, ``last_error`` is the last failure's text."""

    source: str
    prefix_cache_queries_tokens: float | None
    prefix_cache_hits_tokens: float | None
    prefix_cache_hit_rate: float | None
    requests_waiting_max: float | None
    requests_waiting_mean: float | None
    requests_running_max: float | None
    kv_cache_usage_max: float | None
    samples: int
    read_errors: int = 0
    last_error: str | None = None


def server_report(
    source: str, before: Mapping[str, float] | None, after: Mapping[str, float] | None,
    samples: list[Mapping[str, float]], read_errors: int = 0, last_error: str | None = None,
) -> ServerMetricsReport:
    """Combine the reads taken before, during and after a run. A counter missing from a
    successful read before the run counts from 0: a Ray metrics agent exports a counter only
    once it has counted something."""

    def delta(key: str) -> float | None:
        if before is None or after is None or key not in after:
            return None
        return after[key] - before.get(key, 0.0)

    def gauge(key: str) -> list[float]:
        return [s[key] for s in samples if key in s]

    queries, hits = delta("prefix_cache_queries_tokens"), delta("prefix_cache_hits_tokens")
    waiting = gauge("requests_waiting")
    return ServerMetricsReport(
        source=source,
        prefix_cache_queries_tokens=queries,
        prefix_cache_hits_tokens=hits,
        prefix_cache_hit_rate=hits / queries if queries and hits is not None else None,
        requests_waiting_max=max(waiting) if waiting else None,
        requests_waiting_mean=sum(waiting) / len(waiting) if waiting else None,
        requests_running_max=max(gauge("requests_running"), default=None),
        kv_cache_usage_max=max(gauge("kv_cache_usage"), default=None),
        samples=len(samples),
        read_errors=read_errors,
        last_error=last_error,
    )


async def watch(
    work: Callable[[], Awaitable[T]], source: StatsSource, name: str, interval_s: float = 0.5
) -> tuple[T, ServerMetricsReport]:
    """Read ``source`` once, start ``work()``, poll every ``interval_s`` until it finishes,
    read once more. The source runs in a thread (it may block); its failures are counted,
    never raised, so a broken metrics endpoint cannot spoil the run."""
    errors: list[str] = []

    async def read() -> Mapping[str, float] | None:
        try:
            return await asyncio.to_thread(source)
        except Exception as error:  # noqa: BLE001
            errors.append(f"{type(error).__name__}: {error}")
            return None

    samples: list[Mapping[str, float]] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            if (value := await read()) is not None:
                samples.append(value)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except asyncio.TimeoutError:
                pass

    before = await read()
    poller = asyncio.create_task(poll())
    try:
        result = await work()
    finally:
        stop.set()
        await poller
    after = await read()
    report = server_report(name, before, after, samples, len(errors), errors[-1] if errors else None)
    return result, report
