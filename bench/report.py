"""Result files and pictures: one JSON per run, PNG plots, and side-by-side comparison.

A result file holds ``label`` (which server), ``config`` (workload, schedule, client
settings), ``summary`` (``BenchSummary`` as a dict), ``server`` (``ServerMetricsReport`` or
null) and ``records`` (every ``RequestRecord`` without its output text). Plots use
matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kaon.bench.client import RequestRecord
from kaon.bench.metrics import BenchSummary
from kaon.bench.server_metrics import ServerMetricsReport

RESULT_FORMAT = 1
# (column title, path into a result, higher-is-better)
COMPARED = (
    ("TTFT p50 ms", ("summary", "ttft", "p50_ms"), False),
    ("TTFT p99 ms", ("summary", "ttft", "p99_ms"), False),
    ("e2e p50 ms", ("summary", "e2e", "p50_ms"), False),
    ("req/s", ("summary", "request_throughput_per_s"), True),
    ("out tok/s", ("summary", "output_throughput_tokens_per_s"), True),
    ("prefix hit rate", ("server", "prefix_cache_hit_rate"), True),
)


def result_dict(
    label: str, config: dict[str, Any], summary: BenchSummary, records: Sequence[RequestRecord],
    server: ServerMetricsReport | None = None,
) -> dict[str, Any]:
    records_out = []
    for record in records:
        values = asdict(record)
        values.pop("output_text")
        records_out.append(values)
    return {
        "format": RESULT_FORMAT,
        "label": label,
        "created_unix_s": time.time(),
        "config": config,
        "summary": asdict(summary),
        "server": asdict(server) if server is not None else None,
        "records": records_out,
    }


def write_result(path: Path | str, result: dict[str, Any]) -> Path:
    """Indented JSON, except one line per record so long runs stay small and greppable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = json.dumps({k: v for k, v in result.items() if k != "records"}, indent=1)
    records = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in result.get("records", []))
    text = head.removesuffix("\n}") + ',\n "records": [\n' + records + ("\n" if records else "") + " ]\n}\n"
    path.write_text(text, encoding="utf-8")
    return path


def load_result(path: Path | str) -> dict[str, Any]:
    result = json.loads(Path(path).read_text(encoding="utf-8"))
    if result.get("format") != RESULT_FORMAT:
        raise ValueError(f"{path}: not a kaon bench result (format {result.get('format')!r})")
    return result


def _get(result: dict[str, Any], keys: Sequence[str]) -> float | None:
    value: Any = result
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None


def run_name(result: dict[str, Any]) -> str:
    return f"{result['label']} {result['config'].get('schedule', '')}".strip()


def format_summary(result: dict[str, Any]) -> str:
    """A few console lines for one run."""
    s = result["summary"]

    def ms(stats: dict[str, Any], key: str) -> str:
        return "-" if stats[key] is None else f"{stats[key]:.1f}"

    lines = [
        f"{run_name(result)}: {s['completed']}/{s['requests_sent']} ok, {s['failed']} failed, "
        f"{s['not_sent']} not sent in {s['wall_s']:.1f} s",
        f"  throughput {s['request_throughput_per_s']:.2f} req/s, {s['output_throughput_tokens_per_s']:.1f} out tok/s, "
        f"{s['input_throughput_tokens_per_s']:.1f} in tok/s",
    ]
    for name in ("ttft", "itl", "tpot", "e2e"):
        stats = s[name]
        lines.append(f"  {name.upper():5} ms  p50 {ms(stats, 'p50_ms')}  p90 {ms(stats, 'p90_ms')}  "
                     f"p99 {ms(stats, 'p99_ms')}  mean {ms(stats, 'mean_ms')}")
    if s["errors"]:
        lines.append("  errors: " + ", ".join(f"{k}×{n}" for k, n in s["errors"].items()))
    if s["output_length_mismatches"]:
        lines.append(f"  {s['output_length_mismatches']} outputs differ from the requested length (ignore_eos unsupported?)")
    server = result.get("server")
    if server:
        rate = server["prefix_cache_hit_rate"]
        lines.append(f"  server: prefix-cache hit rate {'-' if rate is None else f'{rate:.1%}'}, "
                     f"waiting max {server['requests_waiting_max']}, mean {server['requests_waiting_mean']}"
                     + (f" ({server['read_errors']} read errors)" if server["read_errors"] else ""))
    return "\n".join(lines)


def comparison_table(results: Sequence[dict[str, Any]]) -> str:
    """Each run's figures and, after the first, its ratio to the first run (x = value / first)."""
    header = ["run"] + [title for title, _, _ in COMPARED]
    rows = [header]
    first = results[0]
    for result in results:
        row = [run_name(result)]
        for _, keys, _ in COMPARED:
            value, reference = _get(result, keys), _get(first, keys)
            cell = "-" if value is None else f"{value:.3g}" if value < 100 else f"{value:.0f}"
            if result is not first and value is not None and reference:
                cell += f" ({value / reference:.2f}x)"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ttft_cdf(results: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Empirical CDF of the successful requests' TTFT, one line per run."""
    lines = {}
    for result in results:
        values = sorted(r["ttft_s"] * 1000 for r in result["records"] if r["error"] is None and r["ttft_s"] is not None)
        if values:
            lines[run_name(result)] = (values, [(i + 1) / len(values) for i in range(len(values))])
    return plot_cdf_lines(lines, path, "Time to first token")


def plot_cdf_lines(lines: dict[str, tuple[list[float], list[float]]], path: Path | str, title: str, log_x: bool = False) -> Path:
    """TTFT CDF lines (label → (TTFT ms, cumulative fraction)); shared by bench and sim plots."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (values_ms, fractions) in lines.items():
        ax.step(values_ms, fractions, where="post", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("TTFT (ms, log scale)" if log_x else "TTFT (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_latency_throughput(results: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """TTFT p50/p99 and e2e p50 against achieved request throughput; one line per label,
    one point per run (e.g. per rate of a sweep), in throughput order."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = list(dict.fromkeys(r["label"] for r in results))
    for label in labels:
        runs = sorted((r for r in results if r["label"] == label), key=lambda r: r["summary"]["request_throughput_per_s"])
        x = [r["summary"]["request_throughput_per_s"] for r in runs]
        for axis, keys, style in ((left, ("ttft", "p50_ms"), "o-"), (left, ("ttft", "p99_ms"), "s--"), (right, ("e2e", "p50_ms"), "o-")):
            y = [_get(r, ("summary", *keys)) for r in runs]
            y = [math.nan if v is None else v for v in y]
            axis.plot(x, y, style, label=f"{label} {keys[0]} {keys[1].removesuffix('_ms')}")
    for axis, title in ((left, "TTFT (ms)"), (right, "end-to-end latency p50 (ms)")):
        axis.set_xlabel("achieved throughput (req/s)")
        axis.set_ylabel(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(fig, path)


def plot_comparison(results: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """One bar group per compared figure, one bar per run, side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(COMPARED), figsize=(2.6 * len(COMPARED), 4))
    names = [run_name(r) for r in results]
    for axis, (title, keys, _) in zip(axes, COMPARED):
        values = [_get(r, keys) or 0.0 for r in results]
        axis.bar(range(len(values)), values, color=[f"C{i}" for i in range(len(values))])
        axis.set_xticks(range(len(values)), [str(i + 1) for i in range(len(values))])
        axis.set_title(title, fontsize=9)
    fig.legend(
        [plt.Rectangle((0, 0), 1, 1, color=f"C{i}") for i in range(len(names))],
        [f"{i + 1}: {n}" for i, n in enumerate(names)], loc="lower center", ncol=min(3, len(names)), fontsize=8,
    )
    fig.subplots_adjust(bottom=0.28, wspace=0.4)
    return _save(fig, path, tight=False)


def plot_timeline(results: Sequence[dict[str, Any]], path: Path | str, x_label: str = "time (s)") -> Path:
    """Per interval of each result's ``timeline`` (bench and simulator alike): offered and
    completed load, queue depth, replicas (running, starting, desired), TTFT p50."""
    plt = pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for index, result in enumerate(results):
        points = result["timeline"]
        t = [p["time_s"] for p in points]
        color, label = f"C{index}", result["label"]
        axes[0].plot(t, [p["completed_per_s"] for p in points], color=color, lw=0.8, label=f"{label} completed")
        if index == 0:
            axes[0].plot(t, [p["offered_per_s"] for p in points], color="k", lw=0.6, alpha=0.5, label="offered")
        axes[1].plot(t, [p["queue_depth_requests"] for p in points], color=color, lw=0.8, label=label)
        axes[2].plot(t, [p["running_replicas"] for p in points], color=color, lw=0.8, label=f"{label} running")
        axes[2].plot(t, [p["starting_replicas"] for p in points], color=color, lw=0.8, ls=":")
        axes[2].plot(t, [p["desired_replicas"] for p in points], color=color, lw=0.8, ls="--")
        axes[3].plot(t, [None if p["ttft_p50_s"] is None else p["ttft_p50_s"] * 1000 for p in points],
                     color=color, lw=0.8, label=label)
    titles = ("requests/s", "queue depth (requests)", "replicas (— running, ⋯ starting, -- desired)", "TTFT p50 per interval (ms)")
    for axis, title in zip(axes, titles):
        axis.set_ylabel(title, fontsize=8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2)
    axes[3].set_yscale("log")
    axes[-1].set_xlabel(x_label)
    return _save(fig, path)


def compare(paths: Sequence[Path | str], out_dir: Path | str | None = None) -> str:
    """Load result files, draw them side by side (bars + TTFT CDF) into ``out_dir`` if
    given, and return the comparison table (ratios against the first file)."""
    results = [load_result(p) for p in paths]
    if not results:
        raise ValueError("nothing to compare")
    if out_dir is not None:
        plot_comparison(results, Path(out_dir) / "compare.png")
        plot_ttft_cdf(results, Path(out_dir) / "compare_ttft_cdf.png")
    return comparison_table(results)


def _save(fig: Any, path: Path | str, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
