"""`kaon bench` against an autoscaled kaon: the model deployment's replica counts sampled
during a run, a per-second timeline (offered load, queue depth, replicas, TTFT) and the
step-response figures, as the simulator reports them.

Replica counts are read through the Ray driver (Serve's controller: each deployment's target
count and its replicas' states), as ``kaon status`` reads its figures, in a thread beside the
run. The queue depth of a bench timeline is the client's view: requests sent that have no
first token yet (waiting at the handles, in an engine's queue, or in prefill).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kaon.autoscaling.figures import needed_replicas, replica_seconds, step_response, up_steps
from kaon.bench.client import RequestRecord
from kaon.sim.interfaces import TimelinePoint

STARTING_STATES = ("STARTING", "RECOVERING", "UPDATING")


@dataclass(slots=True, frozen=True)
class ReplicaCounts:
    unix_s: float
    running: int
    starting: int
    desired: int


def read_replica_counts(deployment: str) -> ReplicaCounts | None:
    """Serve's view of ``deployment`` (in whichever application holds it), None if none
    does; needs a Ray connection."""
    from ray.serve.context import _get_global_client

    for app in _get_global_client().get_serve_details().get("applications", {}).values():
        details = app.get("deployments", {}).get(deployment)
        if details is not None:
            states = Counter(replica["state"] for replica in details.get("replicas", ()))
            return ReplicaCounts(time.time(), states["RUNNING"], sum(states[s] for s in STARTING_STATES),
                                 details["target_num_replicas"])
    return None


class ReplicaSampler:
    """Calls ``read`` every ``interval_s`` in a thread from ``with`` until its end; a failed or
    empty read is skipped (a slow controller must not spoil the run)."""

    def __init__(self, read: Callable[[], ReplicaCounts | None], interval_s: float = 1.0):
        self.samples: list[ReplicaCounts] = []
        self._read, self._interval_s = read, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replica-sampler", daemon=True)

    def __enter__(self) -> ReplicaSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            try:
                counts = self._read()
            except Exception:  # noqa: BLE001 - see the class docstring
                counts = None
            if counts is not None:
                self.samples.append(counts)
            if self._stop.wait(self._interval_s):
                return


def build_timeline(records: Sequence[RequestRecord], started_unix_s: float, samples: Sequence[ReplicaCounts],
                   interval_s: float = 1.0) -> list[TimelinePoint]:
    """One point per interval from the run's start to its last finish (or sample): requests
    sent and finished per second, waiting for a first token and in flight at its end, the
    replica counts last sampled by then, and the TTFT of the first tokens in it."""
    start = np.array([r.start_s for r in records])
    first = np.array([r.start_s + r.ttft_s if r.ttft_s is not None else np.inf for r in records])
    end = np.array([r.start_s + (r.e2e_s if r.e2e_s is not None else 0.0) for r in records])
    ttft = np.array([r.ttft_s if r.ttft_s is not None else np.nan for r in records])
    sample_s = [s.unix_s - started_unix_s for s in samples]
    last_s = max([*end.tolist(), *sample_s, 0.0])
    points = []
    for k in range(int(np.ceil(last_s / interval_s))):
        low, high = k * interval_s, (k + 1) * interval_s
        counts = _at(samples, sample_s, high)
        firsts = ttft[(first > low) & (first <= high)]
        points.append(TimelinePoint(
            time_s=high,
            offered_per_s=float(np.sum((start > low) & (start <= high))) / interval_s,
            completed_per_s=float(np.sum((end > low) & (end <= high))) / interval_s,
            queue_depth_requests=int(np.sum((start <= high) & (first > high) & (end > high))),
            in_flight_requests=int(np.sum((start <= high) & (end > high))),
            running_replicas=counts.running if counts else 0,
            starting_replicas=counts.starting if counts else 0,
            desired_replicas=counts.desired if counts else 0,
            ttft_p50_s=float(np.median(firsts)) if firsts.size else None,
            ttft_mean_s=float(np.mean(firsts)) if firsts.size else None,
        ))
    return points


def _at(samples: Sequence[ReplicaCounts], sample_s: Sequence[float], time_s: float) -> ReplicaCounts | None:
    """The last sample taken by ``time_s`` (the first one before any was)."""
    taken = [s for s, t in zip(samples, sample_s) if t <= time_s]
    return taken[-1] if taken else (samples[0] if samples else None)


def autoscaling_figures(points: Sequence[TimelinePoint], records: Sequence[RequestRecord], steps: Sequence[tuple[float, float]],
                        replica_rate_per_s: float | None) -> dict[str, Any]:
    """Step responses to each rise of a step schedule's ``(duration_s, rate)`` phases (replicas
    needed: the rate / ``replica_rate_per_s``; without it, the most replicas asked for during
    the step), replica-seconds, and the requests lost (every one that did not complete)."""
    responses = []
    for start_s, end_s, rate in up_steps(steps):
        if replica_rate_per_s:
            needed = needed_replicas(rate, replica_rate_per_s)
        else:
            needed = max((p.desired_replicas for p in points if start_s <= p.time_s <= end_s), default=0)
        responses.append(asdict(step_response(points, start_s, end_s, needed)))
    return {"replica_rate_per_s": replica_rate_per_s, "steps": responses, "replica_seconds": replica_seconds(points),
            "lost_requests": sum(not r.ok for r in records)}


def sampling(deployment: str | None) -> contextlib.AbstractContextManager[ReplicaSampler | None]:
    """A sampler of ``deployment``'s replica counts for a ``with`` around a run; nothing without one."""
    return ReplicaSampler(lambda: read_replica_counts(deployment)) if deployment else contextlib.nullcontext()


def attach(result: dict[str, Any], records: Sequence[RequestRecord], started_unix_s: float,
           samples: Sequence[ReplicaCounts], steps: Sequence[tuple[float, float]], replica_rate_per_s: float | None) -> str:
    """Add ``timeline`` and ``autoscaling`` to a bench result; return the figures as text."""
    points = build_timeline(records, started_unix_s, samples)
    figures = autoscaling_figures(points, records, steps, replica_rate_per_s)
    result["timeline"] = [asdict(p) for p in points]
    result["autoscaling"] = figures
    lines = [f"  replicas: {figures['replica_seconds']:.0f} replica·s, {figures['lost_requests']} requests lost"]
    for step in figures["steps"]:
        enough = "never" if step["time_to_enough_s"] is None else f"{step['time_to_enough_s']:.0f} s"
        lines.append(f"  step at {step['step_start_s']:.0f} s: {step['needed_replicas']} replicas needed, enough after "
                     f"{enough}, overshoot {step['overshoot_replicas']}, peak {step['peak_replicas']}")
    return "\n".join(lines)
