"""kaon.bench.metrics and server_metrics against hand-computed cases; report files and tables."""

from __future__ import annotations

import asyncio
import json

import pytest

from kaon.bench import report
from kaon.bench.client import RequestRecord
from kaon.bench.metrics import latency_ms, percentile, summarize, tpot_s
from kaon.bench.server_metrics import engine_stats_source, parse_prometheus_text, server_report, vllm_stats, watch
from kaon.engine.stats import EngineStats


def _record(i: int, **fields) -> RequestRecord:
    values = {"request_id": f"r{i}", "group_id": "g", "session_id": None, "expected_output_tokens": 4, "scheduled_s": 0.0}
    return RequestRecord(**(values | fields))


def test_percentiles_of_1_to_100_linear() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 100) == 100 and percentile([], 50) is None
    stats = latency_ms(v / 1000 for v in values)
    assert (stats.count, stats.mean_ms, stats.p50_ms, stats.p99_ms, stats.max_ms) == pytest.approx((100, 50.5, 50.5, 99.01, 100))


def test_summary_throughput_itl_tpot_and_errors() -> None:
    records = [
        _record(0, ttft_s=0.1, itl_s=[0.01, 0.02, 0.03], e2e_s=0.16, prompt_tokens=10, output_tokens=4, status_code=200),
        _record(1, ttft_s=0.3, itl_s=[0.05, 0.05, 0.05], e2e_s=0.45, prompt_tokens=20, output_tokens=4, status_code=200),
        _record(2, ttft_s=0.2, itl_s=[0.04], e2e_s=0.24, prompt_tokens=30, output_tokens=3, status_code=200),
        _record(3, status_code=400, error="HTTP 400: too long"),
        _record(4, status_code=400, error="HTTP 400: bad"),
        _record(5, error="RemoteProtocolError: peer closed connection"),
        _record(6, status_code=200, ttft_s=0.1, error="stream error: boom"),
    ]
    s = summarize(records, wall_s=2.0, not_sent=3)
    assert (s.requests_sent, s.completed, s.failed, s.not_sent) == (7, 3, 4, 3)
    assert s.errors == {"400": 2, "RemoteProtocolError": 1, "stream error": 1}
    assert s.request_throughput_per_s == pytest.approx(1.5)
    assert s.output_throughput_tokens_per_s == pytest.approx(11 / 2)
    assert s.input_throughput_tokens_per_s == pytest.approx(60 / 2)
    assert s.output_length_mismatches == 1
    assert s.ttft.p50_ms == pytest.approx(200) and s.ttft.mean_ms == pytest.approx(200)
    assert s.itl.count == 7 and s.itl.p50_ms == pytest.approx(40) and s.itl.max_ms == pytest.approx(50)
    assert tpot_s(records[0]) == pytest.approx(0.02) and tpot_s(records[2]) == pytest.approx(0.02)
    assert s.tpot.p50_ms == pytest.approx(20) and s.tpot.max_ms == pytest.approx(50)
    assert s.e2e.p99_ms == pytest.approx(240 + 0.98 * (450 - 240))  # rank 1.98 of [160, 240, 450]


def test_summary_of_nothing() -> None:
    s = summarize([], wall_s=0.0)
    assert s.completed == 0 and s.request_throughput_per_s == 0.0 and s.ttft.p50_ms is None


VLLM_METRICS = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny model"} 1000.0
vllm:prefix_cache_queries_total{engine="1",model_name="tiny model"} 500.0
vllm:prefix_cache_queries_created{engine="0",model_name="tiny model"} 1.7e9
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny model"} 300.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny model"} 2.0
vllm:num_requests_waiting{engine="1",model_name="tiny model"} 3.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny model"} 4.0
"""


def test_prometheus_text_to_vllm_stats() -> None:
    stats = vllm_stats(parse_prometheus_text(VLLM_METRICS))
    assert stats == {"prefix_cache_queries_tokens": 1500.0, "prefix_cache_hits_tokens": 300.0,
                     "requests_waiting": 5.0, "requests_running": 4.0}


def test_vllm_stats_as_rays_metrics_agent_exports_them() -> None:
    text = "\n".join(line.replace("vllm:", "ray_vllm_") for line in VLLM_METRICS.splitlines())
    assert vllm_stats(parse_prometheus_text(text)) == vllm_stats(parse_prometheus_text(VLLM_METRICS))


def test_server_report_deltas_and_gauges() -> None:
    before = {"prefix_cache_queries_tokens": 1000.0, "prefix_cache_hits_tokens": 100.0}
    after = {"prefix_cache_queries_tokens": 3000.0, "prefix_cache_hits_tokens": 1600.0}
    samples = [{"requests_waiting": 0.0, "requests_running": 2.0}, {"requests_waiting": 6.0}, {"requests_waiting": 3.0}]
    r = server_report("x", before, after, samples)
    assert (r.prefix_cache_queries_tokens, r.prefix_cache_hits_tokens, r.prefix_cache_hit_rate) == (2000, 1500, 0.75)
    assert (r.requests_waiting_max, r.requests_waiting_mean, r.requests_running_max, r.samples) == (6, 3, 2, 3)
    assert server_report("x", None, after, []).prefix_cache_hit_rate is None
    assert server_report("x", {}, after, []).prefix_cache_hit_rate == 1600 / 3000  # counters not exported yet


def test_engine_stats_source_sums_replicas() -> None:
    replicas = [EngineStats(1, 2, 0.5, 100, 40), EngineStats(3, 0, 0.1, 300, 60)]
    assert engine_stats_source(lambda: replicas)() == {
        "prefix_cache_queries_tokens": 400.0, "prefix_cache_hits_tokens": 100.0,
        "requests_waiting": 2.0, "requests_running": 4.0, "kv_cache_usage": pytest.approx(0.3),
    }


def test_watch_polls_and_survives_a_failing_source() -> None:
    reads = iter([{"prefix_cache_queries_tokens": 0.0, "prefix_cache_hits_tokens": 0.0}, {"requests_waiting": 4.0}])

    def source():
        value = next(reads, None)
        if value is None:
            raise ConnectionError("down")
        return value

    async def work():
        await asyncio.sleep(0.05)
        return "done"

    result, r = asyncio.run(watch(work, source, "fake", interval_s=0.01))
    assert result == "done" and r.requests_waiting_max == 4.0 and r.samples == 1
    assert r.read_errors >= 1 and "ConnectionError" in r.last_error and r.prefix_cache_hit_rate is None


def _result(label: str, ttft_p50_ms: float, rps: float) -> dict:
    records = [_record(i, ttft_s=ttft_p50_ms / 1000, e2e_s=2 * ttft_p50_ms / 1000, output_tokens=4) for i in range(3)]
    summary = summarize(records, wall_s=3 / rps)
    return report.result_dict(label, {"schedule": "concurrency 1"}, summary, records)


def test_result_files_tables_and_plots(tmp_path) -> None:
    a = report.write_result(tmp_path / "a.json", _result("vllm", 20.0, 10.0))
    b = report.write_result(tmp_path / "b.json", _result("kaon", 30.0, 5.0))
    loaded = report.load_result(b)
    assert loaded["label"] == "kaon" and len(loaded["records"]) == 3 and "output_text" not in loaded["records"][0]
    table = report.compare([a, b], tmp_path / "plots")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "TTFT", "p50"] and len(lines) == 3
    assert "30 (1.50x)" in lines[2] and "5 (0.50x)" in lines[2]
    assert (tmp_path / "plots" / "compare.png").stat().st_size > 0
    results = [report.load_result(p) for p in (a, b)]
    assert report.plot_ttft_cdf(results, tmp_path / "cdf.png").stat().st_size > 0
    assert report.plot_latency_throughput(results, tmp_path / "lt.png").stat().st_size > 0
    assert "TTFT" in report.format_summary(loaded)
    (tmp_path / "junk.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ValueError):
        report.load_result(tmp_path / "junk.json")
