"""Fit a ``CostModel``'s step-time coefficients from a bench result.

Input: a ``kaon bench`` result (``bench/report.py``: a JSON object with a ``records`` list) or
any JSON of that shape. Per record the fit reads, and skips records lacking them or with a
non-null ``error``:

- ``start_s`` (send time, seconds from the run start), ``ttft_s``, ``e2e_s``;
- ``prompt_tokens`` and ``output_tokens`` (the server's usage counts);
- ``cached_tokens`` if present (prompt tokens served from the prefix cache; absent → 0, so
  calibrate on a workload without shared prefixes, or with the server's cache cold);
- ``itl_s`` is not needed: one chunk may carry several tokens when the server is busy, so the
  decode fit uses TPOT = (e2e_s - ttft_s) / (output_tokens - 1) instead.

Two least-squares fits (numpy), each refitted without residuals beyond 3 scaled MADs until
stable (a shared, noisy machine gives outliers):

- prefill: TTFT = a + prefill_s_per_token * uncached_tokens over the requests that ran alone
  (no other request in flight between their send and first token; all requests if fewer
  than two distinct prompt lengths ran alone);
- decode: TPOT = decode_base_s + decode_per_seq_s * concurrency, where concurrency is the
  time-averaged number of requests in flight (itself included) during the request's decode.

``prefill_overhead_s = max(0, a - decode_base_s)``. Every other field (batch, KV size, block
size, cold start) is not observable from client timings and comes from the arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kaon.sim.cost_model import CostModel


@dataclass(slots=True, frozen=True)
class Line:
    """y = intercept + slope * x over ``points`` kept points (after outlier removal)."""

    intercept: float
    slope: float
    points: int
    dropped: int


def fit_line(x: np.ndarray, y: np.ndarray, rounds: int = 5) -> Line:
    """Least squares, refitted without points whose residual exceeds 3 scaled MADs of the
    kept points' residuals, until nothing more is dropped (at most ``rounds`` times)."""
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("need at least two distinct x values to fit a line")
    design = np.column_stack([np.ones_like(x), x])
    keep = np.ones_like(x, dtype=bool)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    for _ in range(rounds):
        residual = y - design @ coef
        kept = residual[keep]
        mad = 1.4826 * np.median(np.abs(kept - np.median(kept)))
        if mad <= 0:
            break
        new_keep = np.abs(residual - np.median(kept)) <= 3 * mad
        if new_keep.sum() < 2 or np.ptp(x[new_keep]) == 0 or (new_keep == keep).all():
            break
        keep = new_keep
        coef = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
    return Line(float(coef[0]), float(coef[1]), int(keep.sum()), int((~keep).sum()))


def _records(result: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = result.get("records", []) if isinstance(result, dict) else result
    wanted = ("start_s", "ttft_s", "e2e_s", "prompt_tokens", "output_tokens")
    return [r for r in rows if isinstance(r, dict) and r.get("error") is None
            and all(isinstance(r.get(k), (int, float)) for k in wanted)]


def _mean_concurrency(starts: np.ndarray, ends: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each window [lo_i, hi_i], the time-averaged count of intervals [starts, ends) open."""
    out = np.empty(len(lo))
    for i in range(len(lo)):
        span = hi[i] - lo[i]
        overlap = np.clip(np.minimum(ends, hi[i]) - np.maximum(starts, lo[i]), 0.0, None)
        out[i] = overlap.sum() / span if span > 0 else np.count_nonzero((starts <= lo[i]) & (ends > lo[i]))
    return out


@dataclass(slots=True, frozen=True)
class Fit:
    prefill: Line
    decode: Line
    prefill_solo_only: bool


def fit(result: dict[str, Any] | list[dict[str, Any]]) -> Fit:
    """The two line fits of the module docstring."""
    rows = _records(result)
    if len(rows) < 4:
        raise ValueError(f"need at least 4 successful records with timings, got {len(rows)}")
    start = np.array([r["start_s"] for r in rows], float)
    ttft = np.array([r["ttft_s"] for r in rows], float)
    e2e = np.array([r["e2e_s"] for r in rows], float)
    prompt = np.array([r["prompt_tokens"] for r in rows], float)
    cached = np.array([r.get("cached_tokens") or 0 for r in rows], float)
    output = np.array([r["output_tokens"] for r in rows], float)
    end = start + e2e

    uncached = np.maximum(prompt - cached, 0.0)
    others_during_prefill = _mean_concurrency(start, end, start, start + ttft) - 1.0
    solo = others_during_prefill < 1e-9
    solo_only = len(np.unique(uncached[solo])) >= 2
    mask = solo if solo_only else np.ones_like(solo)
    prefill = fit_line(uncached[mask], ttft[mask])

    decoding = output >= 2
    if decoding.sum() < 2:
        raise ValueError("need records with output_tokens >= 2 to fit decode steps")
    tpot = (e2e[decoding] - ttft[decoding]) / (output[decoding] - 1)
    concurrency = _mean_concurrency(start, end, (start + ttft)[decoding], end[decoding])
    decode = fit_line(concurrency, tpot)
    return Fit(prefill, decode, bool(solo_only))


def _load(result: dict[str, Any] | str | Path) -> tuple[dict[str, Any], str]:
    if isinstance(result, (str, Path)):
        return json.loads(Path(result).read_text(encoding="utf-8")), str(result)
    return result, "a bench result"


def calibrate(
    bench_result: dict[str, Any] | str | Path,
    *more_results: dict[str, Any] | str | Path,
    name: str = "calibrated",
    max_batch: int = 256,
    kv_capacity_blocks: int = 8192,
    block_size_tokens: int = 16,
    max_num_batched_tokens: int | None = 8192,
    cold_start_s: float = 60.0,
    source: str | None = None,
) -> CostModel:
    """A ``CostModel`` whose step-time coefficients are fitted from ``bench_result`` (a dict,
    or the path of a JSON file); the other fields come from the arguments. With several
    results (repeated runs on a shared machine), each is fitted alone (their clocks differ)
    and every coefficient is the median over the runs."""
    loaded = [_load(r) for r in (bench_result, *more_results)]
    fits = [fit(result) for result, _ in loaded]
    base = max(float(np.median([f.decode.intercept for f in fits])), 0.0)
    per_seq = max(float(np.median([f.decode.slope for f in fits])), 0.0)
    prefill_slope = max(float(np.median([f.prefill.slope for f in fits])), 0.0)
    prefill_intercept = float(np.median([f.prefill.intercept for f in fits]))
    if base + per_seq <= 0:
        raise ValueError("decode fit gives no step time; are the timings valid?")
    where = ", ".join(w for _, w in loaded)
    description = source or (
        f"fitted by kaon.sim.calibrate from {where}"
        + (f" (median of {len(fits)} per-run fits)" if len(fits) > 1 else "")
        + f": prefill on {sum(f.prefill.points for f in fits)} requests"
        + f" ({sum(f.prefill.dropped for f in fits)} outliers dropped), decode on"
        + f" {sum(f.decode.points for f in fits)} ({sum(f.decode.dropped for f in fits)} dropped)"
    )
    return CostModel(
        name=name,
        prefill_s_per_token=prefill_slope,
        decode_base_s=base,
        decode_per_seq_s=per_seq,
        prefill_overhead_s=max(prefill_intercept - base, 0.0),
        max_batch=max_batch,
        kv_capacity_blocks=kv_capacity_blocks,
        block_size_tokens=block_size_tokens,
        max_num_batched_tokens=max_num_batched_tokens,
        cold_start_s=cold_start_s,
        source=description,
    )
