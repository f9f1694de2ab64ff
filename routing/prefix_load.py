"""kaon's default policy: send a request where its time to first token is expected lowest.

Expected TTFT on a replica, in prefill-token units:

    cost = uncached prompt tokens there        (prefix index: what is probably cached)
         + prefill backlog routed there        (decays at the replica's prefill rate)
         + decode_cost_tokens × requests busy  (running requests slow every step)

Guards against the peers' failure modes: a replica whose load runs above the least-loaded
one by more than ``spill_slack_requests`` and ``spill_ratio`` of that floor is passed over, so a hot shared prefix is copied to another
replica instead of piling onto one; replicas within ``tie_tolerance_tokens`` of the best are
chosen at random; a cold request (cached nowhere) costs the same prefill everywhere and goes
to the least-loaded replica.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kaon.routing.baselines import load
from kaon.routing.prefix_index import PrefixIndex
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


@dataclass(slots=True, frozen=True)
class PrefixLoadSettings:
    block_size_tokens: int = 16
    prefill_tokens_per_s: float = 2_000.0
    decode_cost_tokens: float = 32.0
    spill_slack_requests: int = 32
    spill_ratio: float = 1.0
    tie_tolerance_tokens: float = 16.0
    capacity_blocks_per_replica: int = 100_000
    ttl_s: float = 600.0


class PrefixLoad:
    name = "prefix_load"

    def __init__(self, seed: int = 0, settings: PrefixLoadSettings | None = None, clock: Callable[[], float] = time.monotonic):
        self.settings = settings or PrefixLoadSettings()
        self._rng = random.Random(seed)
        self._clock = clock
        self.index = PrefixIndex(self.settings.capacity_blocks_per_replica, self.settings.ttl_s)
        self._prefill_done_s: dict[str, float] = {}
        """When each replica will have prefilled what this router sent it (the backlog,
        drained at ``prefill_tokens_per_s``)."""
        self._last_rank: tuple[str, dict[str, int]] = ("", {})
        """The last ranked request's matched blocks per replica; ``on_routed`` usually follows
        at once and reuses it, else looks again, so no state outlives a request."""

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        if not replicas:
            return []
        now_s = self._clock()
        matched = self.index.matched_blocks(request.block_hashes, now_s)
        self._last_rank = (request.request_id, matched)
        costs, loads, eligible = self._costs(request, replicas, matched, now_s)
        best_cost = min(costs[rid] for rid in eligible)
        tolerance = self.settings.tie_tolerance_tokens
        tied = [rid for rid in eligible if costs[rid] <= best_cost + tolerance]
        lightest = min(loads[rid] for rid in tied)
        chosen = self._rng.choice([rid for rid in tied if loads[rid] == lightest])
        rest = sorted((rid for rid in costs if rid != chosen), key=costs.__getitem__)
        return [[chosen], rest] if rest else [[chosen]]

    def on_routed(self, request: RoutingRequest, replica_id: str) -> None:
        now_s = self._clock()
        ranked_id, matched = self._last_rank
        if ranked_id != request.request_id:
            matched = self.index.matched_blocks(request.block_hashes, now_s)
        uncached = self._uncached_tokens(request, matched.get(replica_id, 0))
        start_s = max(now_s, self._prefill_done_s.get(replica_id, now_s))
        self._prefill_done_s[replica_id] = start_s + uncached / self.settings.prefill_tokens_per_s
        self.index.insert(replica_id, request.block_hashes, now_s)

    def predicted_cached_blocks(self, request: RoutingRequest, replica_id: str) -> int:
        """Leading blocks of the last ranked request the index held on the replica (a metric)."""
        ranked_id, matched = self._last_rank
        return matched.get(replica_id, 0) if ranked_id == request.request_id else 0

    def on_completed(self, request_id: str, replica_id: str) -> None:
        pass

    def on_replica_removed(self, replica_id: str) -> None:
        self.index.clear(replica_id)
        self._prefill_done_s.pop(replica_id, None)

    def _costs(
        self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot], matched: dict[str, int], now_s: float
    ) -> tuple[dict[str, float], dict[str, int], list[str]]:
        """Expected TTFT per replica (prefill-token units), its load, and the replicas not
        passed over for load: with room, and within the spill bound of the least-loaded one."""
        settings = self.settings
        loads = [load(r) for r in replicas]
        room = [r.has_capacity for r in replicas]
        if not any(room):
            room = [True] * len(replicas)
        floor = min(n for n, ok in zip(loads, room) if ok)
        bound = floor + max(settings.spill_slack_requests, settings.spill_ratio * floor)
        done_s, rate, decode = self._prefill_done_s, settings.prefill_tokens_per_s, settings.decode_cost_tokens
        costs: dict[str, float] = {}
        by_id: dict[str, int] = {}
        eligible = []
        for replica, busy, ok in zip(replicas, loads, room):
            rid = replica.replica_id
            backlog_s = done_s.get(rid, now_s) - now_s
            costs[rid] = self._uncached_tokens(request, matched.get(rid, 0)) + max(0.0, backlog_s) * rate + decode * busy
            by_id[rid] = busy
            if ok and busy <= bound:
                eligible.append(rid)
        return costs, by_id, eligible

    def _uncached_tokens(self, request: RoutingRequest, matched_blocks: int) -> int:
        return max(0, request.prompt_tokens - matched_blocks * self.settings.block_size_tokens)
