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


@dataclass(slots=True)
class _Backlog:
    tokens: float = 0.0
    updated_s: float = 0.0


class PrefixLoad:
    name = "prefix_load"

    def __init__(self, seed: int = 0, settings: PrefixLoadSettings | None = None, clock: Callable[[], float] = time.monotonic):
        self.settings = settings or PrefixLoadSettings()
        self._rng = random.Random(seed)
        self._clock = clock
        self.index = PrefixIndex(self.settings.capacity_blocks_per_replica, self.settings.ttl_s)
        self._backlogs: dict[str, _Backlog] = {}
        self._last_rank: tuple[str, dict[str, int]] = ("", {})
        """The last ranked request's uncached tokens per replica; ``on_routed`` usually follows
        at once and reuses it, else recomputes (one replica), so no state outlives a request."""

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        if not replicas:
            return []
        now_s = self._clock()
        uncached = self._uncached(request, [r.replica_id for r in replicas], now_s)
        self._last_rank = (request.request_id, uncached)
        costs = {r.replica_id: uncached[r.replica_id] + self._load_cost(r, now_s) for r in replicas}
        eligible = self._without_overloaded(replicas)
        best_cost = min(costs[r.replica_id] for r in eligible)
        tied = [r.replica_id for r in eligible if costs[r.replica_id] <= best_cost + self.settings.tie_tolerance_tokens]
        chosen = self._rng.choice(tied)
        rest = sorted((rid for rid in costs if rid != chosen), key=costs.__getitem__)
        return [[chosen], rest] if rest else [[chosen]]

    def on_routed(self, request: RoutingRequest, replica_id: str) -> None:
        now_s = self._clock()
        ranked_id, ranked = self._last_rank
        if ranked_id == request.request_id and replica_id in ranked:
            uncached = ranked[replica_id]
        else:
            uncached = self._uncached(request, [replica_id], now_s)[replica_id]
        backlog = self._backlogs.setdefault(replica_id, _Backlog(updated_s=now_s))
        backlog.tokens = self._decayed(backlog, now_s) + uncached
        backlog.updated_s = now_s
        self.index.insert(replica_id, request.block_hashes, now_s)

    def on_completed(self, request_id: str, replica_id: str) -> None:
        pass

    def on_replica_removed(self, replica_id: str) -> None:
        self.index.clear(replica_id)
        self._backlogs.pop(replica_id, None)

    def _uncached(self, request: RoutingRequest, replica_ids: list[str], now_s: float) -> dict[str, int]:
        matched = self.index.matched_blocks(request.block_hashes, replica_ids, now_s)
        block = self.settings.block_size_tokens
        return {rid: max(0, request.prompt_tokens - blocks * block) for rid, blocks in matched.items()}

    def _load_cost(self, replica: ReplicaSnapshot, now_s: float) -> float:
        backlog = self._backlogs.get(replica.replica_id)
        pending = self._decayed(backlog, now_s) if backlog else 0.0
        return pending + self.settings.decode_cost_tokens * load(replica)

    def _decayed(self, backlog: _Backlog, now_s: float) -> float:
        return max(0.0, backlog.tokens - (now_s - backlog.updated_s) * self.settings.prefill_tokens_per_s)

    def _without_overloaded(self, replicas: Sequence[ReplicaSnapshot]) -> list[ReplicaSnapshot]:
        with_room = [r for r in replicas if r.has_capacity] or list(replicas)
        floor = min(load(r) for r in with_room)
        bound = floor + max(self.settings.spill_slack_requests, self.settings.spill_ratio * floor)
        return [r for r in with_room if load(r) <= bound]
