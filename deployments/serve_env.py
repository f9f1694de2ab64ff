"""The Ray Serve mode kaon's cluster runs in: Ray's documented high-throughput mode.

``RAY_SERVE_ENABLE_HA_PROXY``: HTTP enters through HAProxy, which forwards each request to
the router replica's own HTTP server (Serve's direct ingress) instead of through the Python
proxy actor and one more Ray call per request and per streamed chunk.
``RAY_SERVE_THROUGHPUT_OPTIMIZED``: the router reaches the model replicas over Serve's gRPC
channel, and every replica runs its code on its main event loop instead of handing each
item between threads.

Serve reads these when its processes import it, so they must be in the environment where the
Ray cluster starts: ``kaon serve`` passes them to the local ``ray start``, and the image for
``ray up`` clusters sets them (``cluster/Dockerfile``). A value already set there wins.

Measured here (1 tiny CPU replica, 200-token prompts, 16 output tokens, `kaon bench`): output
throughput at concurrency 32 rises from 0.34× bare vLLM's to 0.75–0.77×; TTFT p50 at
concurrency 1 from 47 ms to 20–21 ms (bare vLLM 16–27 ms).
"""

from __future__ import annotations

from collections.abc import Mapping

SERVE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def with_serve_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with each of kaon's Serve settings it does not already set."""
    return {**SERVE_ENV, **environ}
