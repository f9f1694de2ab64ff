"""kaon's default policy: send a request where its time to first token is expected lowest.

Expected TTFT on a replica, in prefill-token units:

    cost = uncached prompt tokens there        (prefix index: what is probably cached)
         + prefill backlog routed there        (decays at the replica's prefill rate)
         + decode_cost_tokens × requests busy  (running requests slow every step)

Each request routed to a replica adds its uncached tokens plus ``step_overhead_tokens`` to
that replica's backlog: its prefill runs in an engine step whose fixed cost (the step's base
time and prefill overhead, in prefill-token units) a request routed right behind it also
waits for.

Guards against the peers' failure modes:
- hot prefix: a replica whose load runs above the least-loaded one by more than
  ``spill_slack_requests`` and ``spill_ratio`` of that floor is passed over, so a hot shared
  prefix is copied to another replica instead of piling onto one;
- cold replicas: a replica the index believes holds nothing (new, or unused for the TTL) is
  costed as if it held the request's best match once the replicas that do hold it carry
  ``warm_slack_requests`` more of this router's requests. Warming it costs one prefill,
  once; without this, a prefix every request shares (a common system prompt) keeps all
  traffic on the replicas that happen to hold it and leaves the others idle (the simulator
  found it: on multi-turn chat, 8 of 16 replicas stayed idle, decode batches doubled). While
  the holders are as idle as the cold replica, the request goes where its prefix really is.
- ties: among replicas within ``tie_tolerance_tokens`` of the best, the lightest, at random
  among equals (those that really hold a prefix first: a cold one's match is only assumed);
- cold requests: cached nowhere, they cost the same prefill everywhere and go to the
  least-loaded replica.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress

from kaon.routing.baselines import load
from kaon.routing.prefix_index import PrefixIndex
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest


@dataclass(slots=True, frozen=True)
class PrefixLoadSettings:
    block_size_tokens: int = 16
    prefill_tokens_per_s: float = 2_000.0
    decode_cost_tokens: float = 32.0
    step_overhead_tokens: float = 0.0
    warm_slack_requests: int = 2
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
        ids = [r.replica_id for r in replicas]
        costs, loads, eligible = self._costs(request, replicas, ids, matched, now_s)
        best_cost = min(costs[i] for i in eligible)
        ceiling = best_cost + self.settings.tie_tolerance_tokens
        tied = [i for i in eligible if costs[i] <= ceiling]
        lightest = min(loads[i] for i in tied)
        light = [ids[i] for i in tied if loads[i] == lightest]
        chosen = self._rng.choice([rid for rid in light if rid in matched] or light)
        order = sorted(range(len(ids)), key=costs.__getitem__)
        rest = [ids[i] for i in order if ids[i] != chosen]
        return [[chosen], rest] if rest else [[chosen]]

    def on_routed(self, request: RoutingRequest, replica_id: str) -> None:
        now_s = self._clock()
        ranked_id, matched = self._last_rank
        if ranked_id != request.request_id:
            matched = self.index.matched_blocks(request.block_hashes, now_s)
        work = self._uncached_tokens(request, matched.get(replica_id, 0)) + self.settings.step_overhead_tokens
        start_s = max(now_s, self._prefill_done_s.get(replica_id, now_s))
        self._prefill_done_s[replica_id] = start_s + work / self.settings.prefill_tokens_per_s
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
        self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot], ids: list[str], matched: dict[str, int],
        now_s: float,
    ) -> tuple[list[float], list[int], list[int]]:
        """Expected TTFT per replica (prefill-token units), its load, and the positions of the
        replicas not passed over for load: with room, and within the spill bound. Whole-list
        operations first; then the few replicas with a match, no cache at all or a backlog
        are adjusted by position."""
        settings = self.settings
        loads = list(map(load, replicas))
        room = [r.has_capacity for r in replicas]
        usable = room if any(room) else [True] * len(replicas)
        floor = min(compress(loads, usable))
        bound = floor + max(settings.spill_slack_requests, settings.spill_ratio * floor)
        eligible = [i for i in compress(range(len(loads)), usable) if loads[i] <= bound]
        prompt, decode, size = request.prompt_tokens, settings.decode_cost_tokens, settings.block_size_tokens
        costs = [prompt + decode * n for n in loads]
        position = dict(zip(ids, range(len(ids))))
        for rid, blocks in matched.items():
            i = position.get(rid)
            if i is not None:
                costs[i] -= min(prompt, blocks * size)
        if matched:
            self._discount_cold_replicas(replicas, ids, position, matched, costs, prompt)
        self._drop_finished_backlogs(now_s)
        rate = settings.prefill_tokens_per_s
        for rid, done_s in self._prefill_done_s.items():
            i = position.get(rid)
            if i is not None and replicas[i].in_flight_requests:  # none in flight: nothing left to prefill
                costs[i] += (done_s - now_s) * rate
        return costs, loads, eligible

    def _discount_cold_replicas(
        self, replicas: Sequence[ReplicaSnapshot], ids: list[str], position: dict[str, int], matched: dict[str, int],
        costs: list[float], prompt: int,
    ) -> None:
        """Cost the cold replicas as holders of the best match where the holders are busier."""
        best = max(matched.values())
        holders_in_flight = [replicas[position[rid]].in_flight_requests for rid, n in matched.items() if n == best and rid in position]
        busy_above = min(holders_in_flight, default=float("inf")) - self.settings.warm_slack_requests
        warm = min(prompt, best * self.settings.block_size_tokens)
        for rid in self.index.empty_replicas(ids):
            i = position[rid]
            if replicas[i].in_flight_requests <= busy_above:
                costs[i] -= warm

    def _drop_finished_backlogs(self, now_s: float) -> None:
        done = self._prefill_done_s
        if any(done_s <= now_s for done_s in done.values()):
            self._prefill_done_s = {rid: done_s for rid, done_s in done.items() if done_s > now_s}

    def _uncached_tokens(self, request: RoutingRequest, matched_blocks: int) -> int:
        return max(0, request.prompt_tokens - matched_blocks * self.settings.block_size_tokens)
