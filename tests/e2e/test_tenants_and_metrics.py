"""Tenants and observability on real vLLM: each tenant's prefix cache is its own, and a real
Prometheus server scrapes kaon's routing metrics and vLLM's engine metrics through Ray."""

import json
import uuid
from pathlib import Path

import openai
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import API_KEYS
from tests.prometheus import PrometheusServer

pytestmark = pytest.mark.e2e

RAY_DISCOVERY_FILE = "/tmp/ray/session_latest/prom_metrics_service_discovery.json"
"""Where `ray start --head` (run by `kaon serve`) lists every node's metrics endpoint."""
WORDS = "river valley mountain city engine weather forest harbour".split()
DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana-kaon.json"
SERVED_PANELS = ("Requests routed per replica", "Engine prefix-cache hit rate per replica", "Time to first token",
                 "Requests waiting and running in each engine", "KV-cache use per replica", "Output tokens per second")
"""Dashboard panels that must show data once requests have been served (the autoscaling
ones stay empty on a deployment with a fixed replica count)."""


def client(kaon_server, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=kaon_server.url + "/v1", api_key=API_KEYS[tenant], max_retries=0, timeout=120)


def document() -> str:
    """A prompt no other test sent: several 128-token KV blocks, distinct from the first token."""
    return uuid.uuid4().hex + " " + " ".join(WORDS[i % len(WORDS)] for i in range(240))  # ~410 tokens: three full blocks


def cached_tokens(client: openai.OpenAI, prompt: str) -> int:
    reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=2)
    details = reply.usage.prompt_tokens_details
    return details.cached_tokens or 0 if details else 0


def test_a_tenant_hits_its_own_cache_and_never_anothers(kaon_server):
    alpha, beta = client(kaon_server, "alpha"), client(kaon_server, "beta")
    prompt = document()
    assert cached_tokens(alpha, prompt) == 0
    assert cached_tokens(alpha, prompt) >= 128  # routed back to the replica that holds it
    assert cached_tokens(beta, prompt) == 0
    assert cached_tokens(beta, prompt) >= 128


def test_prometheus_scrapes_routing_and_engine_metrics(kaon_server, tmp_path):
    prometheus = PrometheusServer(tmp_path, free_port(), RAY_DISCOVERY_FILE)
    try:
        alpha, prompt = client(kaon_server, "alpha"), document()
        for _ in range(3):
            cached_tokens(alpha, prompt)
        deployment = '{deployment="model-tiny", policy="prefix_load"}'
        decisions = prometheus.wait_for(f"sum(ray_kaon_routing_decisions_total{deployment}) >= 3")
        predicted = prometheus.wait_for(f"sum(ray_kaon_routing_predicted_cached_blocks_total{deployment}) > 0")
        precise = prometheus.wait_for(f"max(ray_kaon_routing_index_precise{deployment}) == 1")
        engine_hits = prometheus.wait_for('sum by (ReplicaId) ({__name__=~"ray_vllm_prefix_cache_hits.*", model_name="tiny"}) > 0')
        panels = {panel["title"]: [(prometheus.wait_for if panel["title"] in SERVED_PANELS else prometheus.query)(t["expr"])
                                   for t in panel["targets"]]
                  for panel in json.loads(DASHBOARD.read_text())["panels"]}
    finally:
        prometheus.stop()
    assert decisions, "no routing decisions reached Prometheus"
    assert predicted, "the router never predicted a cached block"
    assert precise, "no replica's prefix index was fed by its engine's KV events"
    assert engine_hits, "vLLM's prefix-cache hits per replica did not reach Prometheus"
    assert [title for title in SERVED_PANELS if not any(panels[title])] == [], "dashboard panels without data"
