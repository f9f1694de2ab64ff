"""kaon's Grafana dashboard, written from the list of panels below: `python monitoring/dashboard.py`
rewrites ``monitoring/grafana-kaon.json``. Import that file in Grafana with a Prometheus data
source that scrapes Ray (``monitoring/prometheus.yml``). The e2e tier runs every query of the
file against a real Prometheus server scraping a real cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DASHBOARD_FILE = Path(__file__).resolve().parent / "grafana-kaon.json"


@dataclass(slots=True, frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]
    """(PromQL expression, legend) pairs, one line each."""
    unit: str = "short"


def _ratio(numerator: str, denominator: str, by: str) -> str:
    return f"sum by ({by}) (rate({numerator}[5m])) / sum by ({by}) (rate({denominator}[5m]))"


def _ttft(quantile: float) -> str:
    return f"histogram_quantile({quantile}, sum by (le, model_name) (rate(ray_vllm_time_to_first_token_seconds_bucket[5m])))"


REPLICA = "{{model_name}} {{ReplicaId}}"
PANELS = (
    Panel("Requests routed per replica",
          (("sum by (deployment, replica) (rate(ray_kaon_routing_decisions_total[1m]))", "{{deployment}} {{replica}}"),), "reqps"),
    Panel("Prompt blocks the router predicted cached",
          ((_ratio("ray_kaon_routing_predicted_cached_blocks_total", "ray_kaon_routing_prompt_blocks_total", "deployment"),
            "{{deployment}}"),), "percentunit"),
    Panel("Engine prefix-cache hit rate per replica",
          ((_ratio("ray_vllm_prefix_cache_hits_total", "ray_vllm_prefix_cache_queries_total", "model_name, ReplicaId"), REPLICA),),
          "percentunit"),
    Panel("Prefix index: fed by KV events (1) or approximate (0)",
          (("max by (deployment, replica) (ray_kaon_routing_index_precise)", "{{deployment}} {{replica}}"),)),
    Panel("Prefix index fallbacks to approximate",
          (("sum by (deployment, replica, reason) (increase(ray_kaon_routing_index_fallbacks_total[10m]))",
            "{{replica}} {{reason}}"),)),
    Panel("Time to first token", ((_ttft(0.5), "p50 {{model_name}}"), (_ttft(0.99), "p99 {{model_name}}")), "s"),
    Panel("Requests waiting and running in each engine",
          (("sum by (model_name, ReplicaId) (ray_vllm_num_requests_waiting)", "waiting " + REPLICA),
           ("sum by (model_name, ReplicaId) (ray_vllm_num_requests_running)", "running " + REPLICA))),
    Panel("KV-cache use per replica", (("max by (model_name, ReplicaId) (ray_vllm_kv_cache_usage_perc)", REPLICA),),
          "percentunit"),
    Panel("Output tokens per second", (("sum by (model_name) (rate(ray_vllm_generation_tokens_total[1m]))", "{{model_name}}"),)),
    Panel("Replicas (autoscaling): desired, running, starting",
          (('max by (__name__, deployment) ({__name__=~"ray_kaon_autoscaling_(desired|running|starting)_replicas"})',
            "{{__name__}} {{deployment}}"),)),
    Panel("Queue depth behind each autoscaling decision",
          (("max by (deployment) (ray_kaon_autoscaling_queue_depth_requests)", "{{deployment}}"),)),
)


def dashboard() -> dict:
    panels = []
    for index, panel in enumerate(PANELS):
        targets = [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend} for i, (expr, legend) in enumerate(panel.queries)]
        panels.append({
            "id": index + 1, "type": "timeseries", "title": panel.title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "targets": targets,
        })
    return {
        "title": "kaon", "uid": "kaon-serving", "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "tags": ["kaon", "vllm", "ray"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    DASHBOARD_FILE.write_text(json.dumps(dashboard(), indent=1) + "\n")
    print(DASHBOARD_FILE)
