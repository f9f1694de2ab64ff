"""The router's Prometheus metrics (through Ray's metrics agent), one set per routed deployment.

Ray prefixes every name with ``ray_``: e.g. ``ray_kaon_routing_decisions_total``. The
engines' own prefix-cache hit rate per replica is vLLM's (``ray_vllm_prefix_cache_hits_total``
over ``ray_vllm_prefix_cache_queries_total``, label ``ReplicaId``), exported by the replicas.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge


class RoutingMetrics:
    def __init__(self, deployment: str, policy: str):
        tags = {"deployment": deployment, "policy": policy}
        keys = ("deployment", "policy", "replica")
        self._decisions = Counter(
            "kaon_routing_decisions", "Requests routed to each replica.", keys
        ).set_default_tags(tags)
        self._prompt_blocks = Counter(
            "kaon_routing_prompt_blocks", "Full KV blocks in the prompts routed to each replica.", keys
        ).set_default_tags(tags)
        self._predicted_blocks = Counter(
            "kaon_routing_predicted_cached_blocks",
            "Of those, the blocks the prefix index predicted to be cached on the chosen replica.", keys,
        ).set_default_tags(tags)
        self._precise = Gauge(
            "kaon_routing_index_precise",
            "1 while a replica's prefix index is fed by its engine's KV events, 0 while approximate.", keys,
        ).set_default_tags(tags)
        self._fallbacks = Counter(
            "kaon_routing_index_fallbacks",
            "Times a replica's KV events stopped being trusted (reason: sequence_gap, silent, block_size_mismatch).",
            (*keys, "reason"),
        ).set_default_tags(tags)

    def routed(self, replica_id: str, prompt_blocks: int, predicted_cached_blocks: int | None) -> None:
        tags = {"replica": replica_id}
        self._decisions.inc(1, tags)
        if prompt_blocks:
            self._prompt_blocks.inc(prompt_blocks, tags)
        if predicted_cached_blocks:
            self._predicted_blocks.inc(predicted_cached_blocks, tags)

    def index_mode(self, replica_id: str, precise: bool) -> None:
        self._precise.set(1 if precise else 0, {"replica": replica_id})

    def fallback(self, replica_id: str, reason: str) -> None:
        self._fallbacks.inc(1, {"replica": replica_id, "reason": reason})
        self.index_mode(replica_id, False)
