"""Reference routing policies that exist only in the simulator, for comparison with kaon's.

All satisfy ``kaon.routing.policy.RoutingPolicy`` and take a seed (random tie-breaks):

- ``Oracle``: sees every modelled replica's true KV-cache contents and queues (the simulator
  calls ``bind_replicas`` on a policy that has it) and ranks replicas by the TTFT they
  would give: uncached prefill tokens of this request + the prefill work queued ahead
  (requests routed but not yet prefilled, whose blocks it counts as cached-to-be), the
  steps that work spreads over, and the wait for a batch slot when the batch is full.
  The best achievable prefix reuse without hurting load; not a real router.
- ``SGLangThreshold``: sgl-router's cache-aware rule over an approximate per-worker record
  of the prefixes it routed. If the router's in-flight load gap exceeds both
  ``balance_abs_threshold`` (64) and ``balance_rel_threshold`` (max > 1.5 × min) → the
  least-loaded worker; else the worker with the longest matched prefix when the match
  covers more than ``cache_threshold`` (0.3) of the prompt, else the least-loaded worker.
- ``RayPrefixAffinity``: Ray Serve LLM 2.60's PrefixCacheAffinityRouter
  (``ray/llm/_internal/serve/routing_policies/prefix_aware/prefix_aware_router.py``): when
  the queue-length gap is within ``imbalanced_threshold`` (Ray's default: infinity, i.e.
  always) → the replicas holding the longest matched prefix if the match rate is at least
  ``match_rate_threshold`` (0.1), else the replicas with the smallest trees; the least
  queued of those wins. When imbalanced, or as fallback, power of two choices.

Matching is over block hashes, not characters, so a match ratio is matched full blocks /
full blocks of the prompt. The approximate records are LRU-bounded per replica
(``max_blocks_per_replica``, 2^17 blocks) to bound the simulator's memory; SGLang bounds its
tree at 2^26 characters and Ray does not evict by default, limits a 10-minute run rarely
reaches. Where every replica a rule picks is at its ``max_ongoing_requests``, the request
falls to the least-loaded replica with room rather than waiting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from kaon.routing.baselines import StatelessHooks
from kaon.routing.snapshot import ReplicaSnapshot, RoutingRequest
from kaon.sim.kv_cache import matched_run
from kaon.sim.replica import SimReplica

DEFAULT_MAX_BLOCKS_PER_REPLICA = 1 << 17


class _Node:
    __slots__ = ("hashes", "children", "tenants")

    def __init__(self, hashes: tuple[int, ...], children: dict, tenants: dict[str, int]):
        self.hashes = hashes
        self.children: dict[int, _Node] = children
        self.tenants = tenants  # replica id -> tick of its last request through this node


class RoutedPrefixTree:
    """What a router can know without KV events: the block chains it sent to each replica,
    as one radix tree whose nodes record which replicas were sent them and when. A replica
    is recorded on a node only if it is on the node's parent too, so the replicas of the
    deepest matching node hold the longest prefix. Past ``max_blocks_per_replica`` blocks,
    a replica's least recently used entries are dropped, children first, down to 80%."""

    def __init__(self, max_blocks_per_replica: int = DEFAULT_MAX_BLOCKS_PER_REPLICA):
        self.max_blocks_per_replica = max_blocks_per_replica
        self.root = _Node((), {}, {})
        self._blocks: dict[str, int] = {}
        self._tick = 0

    def blocks(self, replica_id: str) -> int:
        return self._blocks.get(replica_id, 0)

    def insert(self, replica_id: str, hashes: Sequence[int]) -> None:
        self._tick += 1
        node, i, n, added = self.root, 0, len(hashes), 0
        while i < n:
            child = node.children.get(hashes[i])
            if child is None:
                child = _Node(tuple(hashes[i:]), {}, {})
                node.children[hashes[i]] = child
            else:
                cut = matched_run(child.hashes, hashes, i)
                if cut < len(child.hashes):
                    upper = _Node(child.hashes[:cut], {child.hashes[cut]: child}, dict(child.tenants))
                    node.children[hashes[i]] = upper
                    child.hashes = child.hashes[cut:]
                    child = upper
            if replica_id not in child.tenants:
                added += len(child.hashes)
            child.tenants[replica_id] = self._tick
            i += len(child.hashes)
            node = child
        self._blocks[replica_id] = self._blocks.get(replica_id, 0) + added
        if self._blocks[replica_id] > self.max_blocks_per_replica:
            self._shrink(replica_id, int(0.8 * self.max_blocks_per_replica))

    def _entries(self, replica_id: str) -> list[tuple[int, int, _Node, _Node]]:
        """(tick, -depth, node, parent) of every node recording ``replica_id``."""
        found, stack = [], [(self.root, 0)]
        while stack:
            parent, depth = stack.pop()
            for child in parent.children.values():
                if replica_id in child.tenants:
                    found.append((child.tenants[replica_id], -depth, child, parent))
                    stack.append((child, depth + 1))
        return found

    def _forget(self, replica_id: str, node: _Node, parent: _Node) -> None:
        del node.tenants[replica_id]
        self._blocks[replica_id] -= len(node.hashes)
        if not node.tenants:  # then none below it has any either
            del parent.children[node.hashes[0]]

    def _shrink(self, replica_id: str, target_blocks: int) -> None:
        for _, _, node, parent in sorted(self._entries(replica_id), key=lambda e: e[:2]):
            if self._blocks[replica_id] <= target_blocks:
                break
            self._forget(replica_id, node, parent)

    def remove_replica(self, replica_id: str) -> None:
        for _, _, node, parent in sorted(self._entries(replica_id), key=lambda e: e[:2]):
            self._forget(replica_id, node, parent)
        self._blocks.pop(replica_id, None)

    def longest_match(self, hashes: Sequence[int], replica_ids: set[str]) -> tuple[int, set[str]]:
        """(blocks matched, which of ``replica_ids`` hold that many) for the best match."""
        node, i, n = self.root, 0, len(hashes)
        best: tuple[int, set[str]] = (0, set())
        while i < n:
            child = node.children.get(hashes[i])
            if child is None:
                break
            holders = child.tenants.keys() & replica_ids
            if not holders:
                break
            k = len(child.hashes)
            matched = matched_run(child.hashes, hashes, i)
            i += matched
            best = (i, holders)
            if matched < k:
                break
            node = child
        return best


class _PrefixRule:
    """Shared state of the two peer rules: the routed-prefix record and a seeded RNG."""

    def __init__(self, seed: int, max_blocks_per_replica: int):
        self._rng = random.Random(seed)
        self.index = RoutedPrefixTree(max_blocks_per_replica)

    def on_routed(self, request: RoutingRequest, replica_id: str) -> None:
        self.index.insert(replica_id, request.block_hashes)

    def on_completed(self, request_id: str, replica_id: str) -> None:
        pass

    def on_replica_removed(self, replica_id: str) -> None:
        self.index.remove_replica(replica_id)

    def _least(self, replicas: Sequence[ReplicaSnapshot]) -> ReplicaSnapshot:
        """Fewest router in-flight requests; ties broken at random."""
        low = min(r.in_flight_requests for r in replicas)
        return self._rng.choice([r for r in replicas if r.in_flight_requests == low])

    def _match(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> tuple[float, list[ReplicaSnapshot]]:
        """(matched share of the prompt's blocks, the replicas holding the longest match)."""
        matched, holders = self.index.longest_match(request.block_hashes, {r.replica_id for r in replicas})
        if not holders:
            return 0.0, []
        return matched / len(request.block_hashes), [r for r in replicas if r.replica_id in holders]


def _tiers(first: Sequence[ReplicaSnapshot], replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
    """``first`` in order, then every other replica by ascending router in-flight count."""
    tiers, seen = [], set()
    for replica in first:
        if replica.replica_id not in seen:
            seen.add(replica.replica_id)
            tiers.append([replica.replica_id])
    rest = sorted((r for r in replicas if r.replica_id not in seen), key=_in_flight)
    return tiers + [[r.replica_id] for r in rest]


def _in_flight(replica: ReplicaSnapshot) -> int:
    return replica.in_flight_requests


class SGLangThreshold(_PrefixRule):
    name = "sglang_threshold"

    def __init__(self, seed: int = 0, balance_abs_threshold: int = 64, balance_rel_threshold: float = 1.5,
                 cache_threshold: float = 0.3, max_blocks_per_replica: int = DEFAULT_MAX_BLOCKS_PER_REPLICA):
        super().__init__(seed, max_blocks_per_replica)
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.cache_threshold = cache_threshold

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        if not replicas:
            return []
        loads = [r.in_flight_requests for r in replicas]
        low, high = min(loads), max(loads)
        imbalanced = high - low > self.balance_abs_threshold and high > low * self.balance_rel_threshold
        choice = None
        if not imbalanced:
            ratio, holders = self._match(request, replicas)
            if ratio > self.cache_threshold:
                choice = self._least(holders)
        return _tiers([choice or self._least(replicas)], replicas)


class RayPrefixAffinity(_PrefixRule):
    name = "ray_prefix_affinity"

    def __init__(self, seed: int = 0, imbalanced_threshold: float = math.inf, match_rate_threshold: float = 0.1,
                 max_blocks_per_replica: int = DEFAULT_MAX_BLOCKS_PER_REPLICA):
        super().__init__(seed, max_blocks_per_replica)
        self.imbalanced_threshold = imbalanced_threshold
        self.match_rate_threshold = match_rate_threshold

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        if not replicas:
            return []
        loads = [r.in_flight_requests for r in replicas]
        chosen: list[ReplicaSnapshot] = []
        if max(loads) - min(loads) <= self.imbalanced_threshold:
            rate, chosen = self._match(request, replicas)
            if rate < self.match_rate_threshold:
                fewest = min(self.index.blocks(r.replica_id) for r in replicas)
                chosen = [r for r in replicas if self.index.blocks(r.replica_id) == fewest]
        rand = self._rng.random
        first = [r for _, _, r in sorted((r.in_flight_requests, rand(), r) for r in chosen)]
        pair = self._rng.sample(list(replicas), 2) if len(replicas) > 2 else list(replicas)
        return _tiers(first + sorted(pair, key=_in_flight), replicas)


class Oracle(StatelessHooks):
    name = "oracle"

    def __init__(self, seed: int = 0):
        self._rng = random.Random(seed)
        self._replicas: Mapping[str, SimReplica] = {}

    def bind_replicas(self, replicas: Mapping[str, SimReplica]) -> None:
        """The simulator's live map of routable replicas (true caches and queues)."""
        self._replicas = replicas

    def estimate_ttft_s(self, replica: SimReplica, request: RoutingRequest) -> float:
        """Prefill of the uncached prompt and of the work queued ahead, the steps it spreads
        over at the current batch, and the wait for a slot when the batch is full."""
        cost = replica.cost
        hashes = request.block_hashes
        cached = 0
        if hashes:
            first = hashes[0]
            if first in replica.cache.root.children or first in replica.pending.root.children:
                cached = replica.cached_prefix_blocks(hashes, include_pending=True)
                cached = min(cached, max(request.prompt_tokens - 1, 0) // cost.block_size_tokens)
        work = replica.pending_prefill_tokens + replica.prefilling_tokens + request.prompt_tokens \
            - cached * cost.block_size_tokens
        running = replica.running
        budget = cost.max_num_batched_tokens
        steps = (-(-work // max(budget - running, 1)) or 1) if budget else 1
        estimate = steps * (cost.decode_base_s + cost.decode_per_seq_s * running + cost.prefill_overhead_s) \
            + cost.prefill_s_per_token * work
        excess = running + len(replica.waiting) + 1 - cost.max_batch
        if excess > 0:
            estimate += replica.steps_until_finished(excess) * cost.decode_step_s(running)
        return estimate

    def rank(self, request: RoutingRequest, replicas: Sequence[ReplicaSnapshot]) -> list[list[str]]:
        rand = self._rng.random
        bound = self._replicas
        scored = []
        for snapshot in replicas:
            replica = bound.get(snapshot.replica_id)
            if replica is not None:
                scored.append((self.estimate_ttft_s(replica, request), rand(), snapshot.replica_id))
        scored.sort()
        return [[replica_id] for _, _, replica_id in scored]
